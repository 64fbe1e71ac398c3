variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "repository_arn" {
  description = "ECR repository the tasks pull their image from."
  type        = string
}

variable "log_group_arn" {
  description = "CloudWatch log group the tasks write to."
  type        = string
}
