output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.app.name
}

output "task_definition_arn" {
  description = "The task definition revision of this apply."
  value       = aws_ecs_task_definition.app.arn
}

output "log_group_arn" {
  description = "The app's log group."
  value       = aws_cloudwatch_log_group.app.arn
}
