variable "name" {
  description = "Prefix of resource names."
  type        = string
}

variable "cidr" {
  description = "CIDR block of the VPC."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones to spread the subnets over (two)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway shared by all private subnets instead of one per zone."
  type        = bool
}
