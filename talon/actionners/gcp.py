"""gcp:function: invoke a Google Cloud Function (2nd gen) with the Falco event.

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function in this build: running it fails with "not available in this
build".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon.plugin import ParamValueError, declare

CLOUD_PERMISSIONS = """\
cloudfunctions.functions.call
cloudfunctions.functions.get
run.routes.invoke (2nd gen functions are served by Cloud Run: roles/run.invoker)
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
            if not getattr(self, name).strip():
                raise ParamValueError(name, f"parameter '{name}' can't be empty")


EXAMPLE = """\
- action: Invoke GCP function
  actionner: gcp:function
  parameters:
    gcp_function_name: sample-function
    gcp_function_location: us-central1
    gcp_function_timeout: 10
"""

declare(
    "actionner", "gcp", "function", params=FunctionParams,
    description="Invoke a GCP Function forwarding the Falco event payload",
    use_context=True, sources=("any",), requires=("google.auth",),
    cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE,
)
