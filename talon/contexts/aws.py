"""Context `aws`: facts about the EC2 instance Talon runs on, from the instance metadata.

Layer L2 (plug-in). Reads the instance metadata over IMDSv2 (a PUT for a token, then GETs
with it; no boto3, no IAM permission) through `ctx.clients.imds()`, which caches the facts
for five minutes. The endpoint is AWS_EC2_METADATA_SERVICE_ENDPOINT when set (as for the
SDK), else 169.254.169.254. Without an instance profile the profile keys are left out. A
failure fails the action, or is logged and skipped under `ignore_errors` (the engine's
rule for every context).
"""

from __future__ import annotations

from collections.abc import Mapping

from talon.clients import aws
from talon.plugin import ActionContext, ActionError, context

KEYS = ("aws.instance_profile_arn", "aws.instance_profile_id", "aws.region",
        "aws.instance_id", "aws.availability_zone")
"""Keys added to the event's context; as variables: AWS_INSTANCE_PROFILE_ARN, ..."""

DESCRIPTION = (
    "Facts about the AWS instance Talon runs on, read from the instance metadata service "
    "(IMDSv2): aws.instance_profile_arn (ARN of the instance profile), "
    "aws.instance_profile_id (its id), aws.region (region of the instance), "
    "aws.instance_id and aws.availability_zone; available as ${AWS_INSTANCE_PROFILE_ARN}, "
    "${AWS_INSTANCE_PROFILE_ID}, ${AWS_REGION}, ${AWS_INSTANCE_ID} and "
    "${AWS_AVAILABILITY_ZONE}"
)

EXAMPLE = """\
- action: Invoke Lambda function with the instance facts
  actionner: aws:lambda
  additional_contexts:
    - aws
  parameters:
    aws_lambda_name: sample-function
"""

@context(
    "aws",
    description=DESCRIPTION, sources=("any",),
    cloud_permissions="none: reads the instance metadata service (IMDSv2, 169.254.169.254)",
    example=EXAMPLE,
)
def fetch(ctx: ActionContext) -> Mapping[str, str]:
    """The instance's facts (cached for five minutes by the shared reader)."""
    try:
        facts: dict[str, str] = ctx.clients.imds().facts()
    except aws.AwsError as exc:
        raise ActionError(str(exc)) from exc
    return {key: facts[key] for key in KEYS if facts.get(key)}
