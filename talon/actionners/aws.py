"""aws:lambda: invoke an AWS Lambda function with the Falco event (and its context).

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function in this build: running it fails with "not available in this
build".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from talon.plugin import ParamValueError, declare

CLOUD_PERMISSIONS = """\
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AllowInvokeLambdaFunction",
      "Effect": "Allow",
      "Action": ["lambda:InvokeFunction", "lambda:GetFunction"],
      "Resource": "arn:aws:lambda:<region>:<account_id>:function:<function_name>"
    },
    {
      "Sid": "AllowSTSGetCallerIdentity",
      "Effect": "Allow",
      "Action": "sts:GetCallerIdentity",
      "Resource": "*"
    }
  ]
}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class LambdaParams:
    """Parameters of aws:lambda."""

    aws_lambda_name: str = field(metadata={
        "help": "Name of the Lambda function to call; it must be in the region of the "
                "credentials (or the region set in the configuration)"})
    aws_lambda_alias_or_version: str = field(default="$LATEST", metadata={
        "help": "Alias or version of the function to call"})
    aws_lambda_invocation_type: Literal["RequestResponse", "Event", "DryRun"] = field(
        default="RequestResponse", metadata={
            "help": "RequestResponse (wait for the result), Event (asynchronous) or "
                    "DryRun (check the permissions only)"})

    def __post_init__(self) -> None:
        if not self.aws_lambda_name.strip():
            raise ParamValueError(
                "aws_lambda_name", "parameter 'aws_lambda_name' can't be empty")


EXAMPLE = """\
- action: Invoke Lambda function
  actionner: aws:lambda
  parameters:
    aws_lambda_name: sample-function
    aws_lambda_alias_or_version: "$LATEST"
    aws_lambda_invocation_type: RequestResponse
"""

declare(
    "actionner", "aws", "lambda", params=LambdaParams,
    description="Invoke an AWS lambda forwarding the Falco event payload",
    use_context=True, sources=("any",), requires=("boto3",),
    cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE,
)
