"""gcp:function: invoke a Google Cloud Function with the Falco event (and its context).

Layer L2 (plug-in): imports talon.plugin and talon.clients; the Google libraries are used
only through `ctx.clients.gcp()`. The function is looked up with the Cloud Functions v2
API (`projects/<project>/locations/<location>/functions/<name>`, the project being the
credentials'), then its HTTPS URL (`serviceConfig.uri`) is called with a POST of the
event as JSON (`trace_id, output, priority, rule, hostname, time, source, output_fields,
context, tags`, the context holding Talon's `falco-talon.*` keys and any additional
context) and `Authorization: Bearer <Google ID token for that URL>`.

The function's answer is the action's output; a non-2xx answer, an unreachable function
or one that does not answer within `gcp_function_timeout` seconds is a failure naming the
function. Unlike the Go version, the timeout is in seconds (not nanoseconds) and applies
to that call only, and any 2xx answer (not only 200) is a success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from talon.clients.gcp import GcpError
from talon.plugin import (
    ActionContext,
    ActionError,
    ParamValueError,
    Result,
    Status,
    actionner,
)

CLOUD_PERMISSIONS = """\
cloudfunctions.functions.get     look the function up (roles/cloudfunctions.viewer)
run.routes.invoke                call a 2nd gen function (roles/run.invoker on its service)
cloudfunctions.functions.invoke  call a 1st gen function instead (roles/cloudfunctions.invoker)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionParams:
    """Parameters of gcp:function."""

    gcp_function_name: str = field(metadata={"help": "Name of the function to call"})
    gcp_function_location: str = field(metadata={
        "help": "Location (region) of the function, e.g. us-central1"})
    gcp_function_timeout: int = field(default=10, metadata={
        "min": 1, "help": "Timeout of the call to the function, in seconds"})

    def __post_init__(self) -> None:
        for name in ("gcp_function_name", "gcp_function_location"):
            value = getattr(self, name)
            if not value.strip():
                raise ParamValueError(name, f"parameter '{name}' can't be empty")
            if "/" in value:
                raise ParamValueError(name, f"parameter '{name}' can't contain '/'")


EXAMPLE = """\
- action: Invoke GCP function
  actionner: gcp:function
  parameters:
    gcp_function_name: sample-function
    gcp_function_location: us-central1
    gcp_function_timeout: 10
"""


def _remaining(ctx: ActionContext, limit: float) -> float:
    """`limit` seconds, or less when the action's own deadline comes first."""
    left = ctx.deadline - time.monotonic()
    if left <= 0:
        raise ActionError("the action ran out of time before calling the function")
    return min(limit, left)


def _url(resource: str, function: dict[str, Any]) -> str:
    """The function's HTTPS URL from its v2 resource; ActionError when it has none."""
    service = function.get("serviceConfig")
    uri = service.get("uri") if isinstance(service, dict) else None
    uri = uri or function.get("url")
    if not isinstance(uri, str) or not uri:
        raise ActionError(f"the function '{resource}' does not have a valid URL")
    if urlsplit(uri).scheme not in ("https", "http") or not urlsplit(uri).netloc:
        raise ActionError(f"the function '{resource}' has an unusable URL '{uri}'")
    return uri


@actionner("gcp", "function", params=FunctionParams,
           description="Invoke a GCP Function forwarding the Falco event payload",
           use_context=True, sources=("any",), requires=("google.auth", "requests"),
           cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE)
def function(ctx: ActionContext) -> Result:
    """Look the function up, POST the event to it and report its answer."""
    p: FunctionParams = ctx.params
    gcp = ctx.clients.gcp()
    objects = {"name": p.gcp_function_name, "location": p.gcp_function_location}
    try:
        resource = gcp.function_name(p.gcp_function_location, p.gcp_function_name)
        found = gcp.function(p.gcp_function_location, p.gcp_function_name,
                             _remaining(ctx, gcp.timeout))
        url = _url(resource, found)
        body = ctx.event.to_json(ctx.context).encode()
        answer = gcp.call(url, body, _remaining(ctx, p.gcp_function_timeout))
    except GcpError as exc:
        raise ActionError(f"gcp:function '{p.gcp_function_name}' in "
                          f"'{p.gcp_function_location}': {exc}") from exc
    text = answer.body.decode("utf-8", "replace") + (" [truncated]" if answer.truncated else "")
    objects["function_response_status"] = str(answer.status)
    if not 200 <= answer.status < 300:
        error = f"the function '{resource}' answered with status {answer.status}: {text}"
        return Result(status=Status.FAILURE, error=error, objects=objects)
    return Result(output=text, objects=objects)
