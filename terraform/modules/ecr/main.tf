# The app's image repository: scanned on push, tags immutable (a tag always names the
# same image, so a deployment recorded by tag can be put back), and a lifecycle policy.

resource "aws_ecr_repository" "this" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }
}

# Rules are evaluated by priority, and an image selected by a rule is never expired by a
# rule of lower priority: protected tags first, then the newest tagged images (recent
# deployments, which rollback may need), then untagged leftovers.
resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name

  policy = jsonencode({
    rules = concat(
      length(var.protected_tag_prefixes) == 0 ? [] : [{
        rulePriority = 1
        description  = "Never expire protected releases"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = var.protected_tag_prefixes
          countType     = "imageCountMoreThan"
          countNumber   = 9999
        }
        action = { type = "expire" }
      }],
      [
        {
          rulePriority = 10
          description  = "Keep the newest tagged images"
          selection = {
            tagStatus      = "tagged"
            tagPatternList = ["*"]
            countType      = "imageCountMoreThan"
            countNumber    = var.keep_images
          }
          action = { type = "expire" }
        },
        {
          rulePriority = 20
          description  = "Expire untagged images after two weeks"
          selection = {
            tagStatus   = "untagged"
            countType   = "sinceImagePushed"
            countUnit   = "days"
            countNumber = 14
          }
          action = { type = "expire" }
        },
      ]
    )
  })
}
