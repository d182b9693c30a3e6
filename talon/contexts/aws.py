"""Context `aws`: facts about the EC2 instance Talon runs on, from the instance metadata.

Layer L2 (plug-in). Declared only (metadata, so `rules check` accepts it in
`additional_contexts`); there is no fetch function in this build: an action asking for it
fails ("context 'aws' is not available in this build"), or runs without the keys under
`ignore_errors`. Meant to read the instance metadata over IMDSv2 (no boto3, no IAM
permission).
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
