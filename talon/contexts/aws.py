"""Context `aws`: facts about the EC2 instance Talon runs on, from the instance metadata.

Layer L2 (plug-in). Read over IMDSv2 with urllib (no boto3, no IAM permission). Declared
with metadata only; the fetch function comes later in this module.
"""

from __future__ import annotations

from talon.plugin import declare

KEYS = ("aws.instance_profile_arn", "aws.instance_profile_id", "aws.region")
"""Keys added to the event's context; as variables: AWS_INSTANCE_PROFILE_ARN, ..."""

DESCRIPTION = (
    "Facts about the AWS instance Talon runs on, read from the instance metadata service "
    "(IMDSv2): aws.instance_profile_arn (ARN of the instance profile), "
    "aws.instance_profile_id (its id) and aws.region (region of the instance); "
    "available as ${AWS_INSTANCE_PROFILE_ARN}, ${AWS_INSTANCE_PROFILE_ID} and ${AWS_REGION}"
)

EXAMPLE = """\
- action: Invoke Lambda function with the instance facts
  actionner: aws:lambda
  additional_contexts:
    - aws
  parameters:
    aws_lambda_name: sample-function
"""

declare(
    "context", "context", "aws",
    description=DESCRIPTION, sources=("any",),
    cloud_permissions="none: reads the instance metadata service (IMDSv2, 169.254.169.254)",
    example=EXAMPLE,
)
