variable "name" {
  description = "Repository name."
  type        = string
}

variable "keep_images" {
  description = "Tagged images kept, newest first."
  type        = number
}

variable "protected_tag_prefixes" {
  description = "Tag prefixes of images that are never expired."
  type        = list(string)
}
