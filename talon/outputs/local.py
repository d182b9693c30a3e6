"""local:file: store artifacts in a folder of Talon's own filesystem.

Layer L2 (plug-in). Declared with metadata and params dataclass; the run function comes
later in this module. The destination must be an absolute path; that the folder exists is a
live check (it may be mounted after the rules are loaded), so the dataclass does not stat it.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from talon import params, registry


@dataclass(frozen=True, slots=True, kw_only=True)
class FileParams:
    """Parameters of local:file."""

    destination: str = field(metadata={
        "help": "Absolute path of the folder where the files are written (not created)"})

    def __post_init__(self) -> None:
        if not pathlib.PurePosixPath(self.destination).is_absolute():
            raise params.ParamValueError(
                "destination",
                f"parameter 'destination' must be an absolute path, got '{self.destination}'")


EXAMPLE = """\
- action: Download the suspicious file
  actionner: kubernetes:download
  parameters:
    file: "${FD_NAME}"
  output:
    target: local:file
    parameters:
      destination: /var/logs/falco-talon/
"""

registry.declare(
    "output", "local", "file", params=FileParams,
    description="Store on local filesystem",
    example=EXAMPLE,
)
