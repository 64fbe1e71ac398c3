terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # State in S3 with Terraform's native lock file (use_lockfile): no DynamoDB table.
  # The bucket, key and region come from a backend config file at init:
  #   terraform init -backend-config=backend.hcl
  # (see backend.hcl.example; bootstrap/ creates the bucket).
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      Project     = var.project_name
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}
