variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnets the load balancer lives in."
  type        = list(string)
}

variable "target_port" {
  description = "Port of the app in its tasks."
  type        = number
}

variable "health_check_path" {
  description = "Path probed on each task; it must answer 200."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate; empty for HTTP only."
  type        = string
}
