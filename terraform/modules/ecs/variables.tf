variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "aws_region" {
  description = "Region of the log group."
  type        = string
}

variable "image_url" {
  description = "Image the tasks run."
  type        = string
}

variable "container_port" {
  description = "Port the app listens on."
  type        = number
}

variable "desired_count" {
  description = "Tasks to run."
  type        = number
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks."
  type        = list(string)
}

variable "execution_role_arn" {
  description = "Role ECS starts the tasks with."
  type        = string
}

variable "task_role_arn" {
  description = "Role the app runs as."
  type        = string
}

variable "target_group_arn" {
  description = "Load balancer target group of the service."
  type        = string
}

variable "alb_security_group_id" {
  description = "Security group of the load balancer, the only source of traffic to the tasks."
  type        = string
}

variable "log_retention_days" {
  description = "Days the logs are kept."
  type        = number
}

variable "app_environment" {
  description = "Extra environment variables of the container."
  type        = map(string)
}
