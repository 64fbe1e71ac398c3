output "repository_url" {
  description = "Where to push images."
  value       = aws_ecr_repository.this.repository_url
}

output "repository_arn" {
  description = "ARN of the repository (for pull permissions)."
  value       = aws_ecr_repository.this.arn
}
