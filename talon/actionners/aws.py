"""aws:lambda: invoke an AWS Lambda function with the Falco event (and its context).

Layer L2 (plug-in). The payload is the event as JSON with its `context` (Talon's keys and
any additional contexts), as the Go version sends it. Before invoking, a live check reads
the function (GetFunction with the alias or version), so a wrong name or qualifier fails
with the service's message. The answer is the action's output: the status code, and for
RequestResponse the payload the function returned. A function error (X-Amz-Function-Error)
or a status other than 200 (RequestResponse), 202 (Event) or 204 (DryRun) is a failure
carrying the function's error message. Credentials and endpoint: talon.clients.aws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from talon.clients import aws
from talon.plugin import (
    ActionContext,
    ActionError,
    CheckFailedError,
    ParamValueError,
    Result,
    actionner,
)

CLOUD_PERMISSIONS = """\
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AllowInvokeLambdaFunction",
      "Effect": "Allow",
      "Action": ["lambda:GetFunction", "lambda:InvokeFunction"],
      "Resource": [
        "arn:aws:lambda:<region>:<account_id>:function:<function_name>",
        "arn:aws:lambda:<region>:<account_id>:function:<function_name>:*"
      ]
    }
  ]
}
With aws.role_arn set, the credentials Talon starts with also need "sts:AssumeRole" on
that role, and the role needs the actions above.
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

EXPECTED_STATUS = {"RequestResponse": 200, "Event": 202, "DryRun": 204}
"""Status code of a successful invocation, per invocation type."""


def _lambda(ctx: ActionContext) -> Any:
    timeout = ctx.clients.settings.action_timeout_seconds
    return ctx.clients.aws().client("lambda", read_timeout=timeout)


def _target(params: LambdaParams) -> str:
    return f"'{params.aws_lambda_name}' ({params.aws_lambda_alias_or_version})"


def function_exists(ctx: ActionContext) -> None:
    """Live check: the function exists with that alias or version."""
    p: LambdaParams = ctx.params
    try:
        _lambda(ctx).get_function(FunctionName=p.aws_lambda_name,
                                  Qualifier=p.aws_lambda_alias_or_version)
    except Exception as exc:
        raise CheckFailedError(f"the function {_target(p)} cannot be read: "
                               f"{aws.error_text(exc)}") from exc


def _function_error(body: str) -> str:
    """`errorType: errorMessage` of a function error payload, else the payload itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and data.get("errorMessage"):
        kind = data.get("errorType")
        return f"{kind}: {data['errorMessage']}" if kind else str(data["errorMessage"])
    return body


@actionner(
    "aws", "lambda", params=LambdaParams, checks=(function_exists,),
    description="Invoke an AWS lambda forwarding the Falco event payload",
    use_context=True, sources=("any",), requires=("boto3",),
    cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE,
)
def lambda_(ctx: ActionContext) -> Result:
    """Invoke the function with the event and its context; its answer is the output."""
    p: LambdaParams = ctx.params
    payload = ctx.event.to_json(ctx.context).encode()
    try:
        resp = _lambda(ctx).invoke(
            FunctionName=p.aws_lambda_name, Qualifier=p.aws_lambda_alias_or_version,
            InvocationType=p.aws_lambda_invocation_type, Payload=payload)
    except Exception as exc:
        raise ActionError(f"the function {_target(p)} could not be invoked: "
                          f"{aws.error_text(exc)}") from exc
    status = int(resp.get("StatusCode", 0))
    stream = resp.get("Payload")
    body = stream.read().decode("utf-8", "replace") if stream is not None else ""
    objects = {"function": p.aws_lambda_name, "qualifier": p.aws_lambda_alias_or_version,
               "invocation_type": p.aws_lambda_invocation_type, "status_code": str(status)}
    if resp.get("FunctionError"):
        raise ActionError(f"the function {_target(p)} failed ({resp['FunctionError']}): "
                          f"{_function_error(body)}")
    if status != EXPECTED_STATUS[p.aws_lambda_invocation_type]:
        raise ActionError(f"the function {_target(p)} answered with status {status}: {body}")
    if p.aws_lambda_invocation_type == "RequestResponse":
        return Result(output=body, objects=objects)
    what = "accepted the event" if status == 202 else "can be invoked (dry run)"
    return Result(output=f"the function {_target(p)} {what} (status {status})",
                  objects=objects)
