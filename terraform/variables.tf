variable "aws_region" {
  description = "AWS region everything is created in."
  type        = string
  default     = "us-east-1"
}

variable "project_name" {
  description = "Short name used in resource names (lowercase letters, digits, hyphens)."
  type        = string
  default     = "webapp"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project_name))
    error_message = "project_name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name, part of resource names (production, staging, ...)."
  type        = string
  default     = "production"
}

variable "image_url" {
  description = "Container image to run, pinned by tag or digest (the runner passes the image it pushed)."
  type        = string
}

variable "container_port" {
  description = "Port the app listens on inside the container."
  type        = number
  default     = 5001
}

variable "health_check_path" {
  description = "Path the load balancer probes; it must answer 200."
  type        = string
  default     = "/health"
}

variable "desired_count" {
  description = "Tasks to run."
  type        = number
  default     = 2
}

variable "cpu" {
  description = "Fargate task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Fargate task memory in MiB."
  type        = number
  default     = 512
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; subnets are carved from it."
  type        = string
  default     = "10.20.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for both private subnets (cheaper) instead of one per availability zone."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on the load balancer; empty serves plain HTTP only. When set, HTTP redirects to HTTPS."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the app's logs."
  type        = number
  default     = 30
}

variable "keep_images" {
  description = "Tagged images the ECR lifecycle policy keeps (newest first). Keep it above the number of deployments you may roll back to."
  type        = number
  default     = 50
}

variable "protected_tag_prefixes" {
  description = "Images with a tag starting with one of these are never expired (e.g. deployed releases)."
  type        = list(string)
  default     = ["live-", "release-"]
}

variable "app_environment" {
  description = "Extra environment variables of the app container."
  type        = map(string)
  default     = {}
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
