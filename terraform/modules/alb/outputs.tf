output "url" {
  description = "URL of the load balancer."
  value       = "${local.https ? "https" : "http"}://${aws_lb.this.dns_name}"
}

output "target_group_arn" {
  description = "Target group the service registers its tasks in."
  value       = aws_lb_target_group.app.arn
}

output "security_group_id" {
  description = "Security group of the load balancer (the tasks accept traffic from it)."
  value       = aws_security_group.alb.id
}
