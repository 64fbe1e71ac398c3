output "app_url" {
  description = "URL of the app behind the load balancer."
  value       = module.alb.url
}

output "cluster_name" {
  description = "ECS cluster running the service."
  value       = module.ecs.cluster_name
}

output "service_name" {
  description = "ECS service of the app."
  value       = module.ecs.service_name
}

output "task_definition_arn" {
  description = "Task definition revision the service runs."
  value       = module.ecs.task_definition_arn
}

output "repository_url" {
  description = "ECR repository to push the app's images to."
  value       = module.ecr.repository_url
}
