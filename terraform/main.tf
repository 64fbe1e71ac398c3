locals {
  name = "${var.project_name}-${var.environment}"
}

data "aws_availability_zones" "available" {
  state = "available"
}

module "network" {
  source             = "./modules/network"
  name               = local.name
  cidr               = var.vpc_cidr
  availability_zones = slice(data.aws_availability_zones.available.names, 0, 2)
  single_nat_gateway = var.single_nat_gateway
}

module "ecr" {
  source                 = "./modules/ecr"
  name                   = var.project_name
  keep_images            = var.keep_images
  protected_tag_prefixes = var.protected_tag_prefixes
}

module "alb" {
  source            = "./modules/alb"
  name              = local.name
  vpc_id            = module.network.vpc_id
  subnet_ids        = module.network.public_subnet_ids
  target_port       = var.container_port
  health_check_path = var.health_check_path
  certificate_arn   = var.certificate_arn
}

module "iam" {
  source         = "./modules/iam"
  name           = local.name
  repository_arn = module.ecr.repository_arn
  log_group_arn  = module.ecs.log_group_arn
}

module "ecs" {
  source                = "./modules/ecs"
  name                  = local.name
  aws_region            = var.aws_region
  image_url             = var.image_url
  container_port        = var.container_port
  desired_count         = var.desired_count
  cpu                   = var.cpu
  memory                = var.memory
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  execution_role_arn    = module.iam.execution_role_arn
  task_role_arn         = module.iam.task_role_arn
  target_group_arn      = module.alb.target_group_arn
  alb_security_group_id = module.alb.security_group_id
  log_retention_days    = var.log_retention_days
  app_environment       = var.app_environment
}
