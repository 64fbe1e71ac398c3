output "execution_role_arn" {
  description = "Role ECS uses to start the tasks."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "Role the app runs as."
  value       = aws_iam_role.task.arn
}
