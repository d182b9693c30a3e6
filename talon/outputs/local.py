"""local:file: store artifacts in a folder of Talon's own filesystem.

Layer L2 (plug-in). The destination must be an absolute path (checked when the rules load)
and an existing folder (checked before each write: it may be mounted later; it is never
created). The destination is used as written, in the check and in the write alike (no
environment expansion). The file is named `<UTC time>_<namespace>_<pod>_<artifact name>`
(or with the hostname, or the other object values, as the Go version does), every `/`
turned into `_`, so whatever the event says the file lands directly inside the folder:
control characters become `_`, a NUL is refused, an over-long name is shortened (with a
hash, so it stays unique) and the resolved path is checked once more. The write is atomic
(temporary file in the same folder, then rename) and the file is readable by Talon only.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime

from talon.outputs._naming import file_name, segment
from talon.plugin import (
    Artifact,
    CheckFailedError,
    OutputContext,
    OutputError,
    ParamValueError,
    Result,
    output,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileParams:
    """Parameters of local:file."""

    destination: str = field(metadata={
        "help": "Absolute path of the folder where the files are written (not created)"})

    def __post_init__(self) -> None:
        if not pathlib.PurePosixPath(self.destination).is_absolute():
            raise ParamValueError(
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


def _folder(destination: str) -> pathlib.Path:
    """The resolved destination folder; CheckFailedError when it is not an existing folder."""
    folder = pathlib.Path(destination)
    if not folder.is_dir():
        raise CheckFailedError(f"folder '{destination}' does not exist")
    return folder.resolve(strict=True)


def folder_exists(ctx: OutputContext) -> None:
    """Live check: the destination folder exists."""
    _folder(ctx.params.destination)


def _write_atomically(folder: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    """Write `folder/name` through a temporary file and a rename (which replaces a symlink
    of that name instead of following it)."""
    target = folder / name
    if name in ("", ".", "..") or "/" in name or target.parent != folder:
        raise OutputError(f"refusing to write '{name}' outside the folder '{folder}'")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".talon-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        pathlib.Path(tmp).replace(target)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return target


@output("local", "file", params=FileParams, checks=(folder_exists,),
        description="Store on local filesystem", example=EXAMPLE)
def file(ctx: OutputContext, artifact: Artifact) -> Result:
    """Write the artifact into the destination folder (mode 0600, atomic)."""
    folder = _folder(ctx.params.destination)
    name = file_name(artifact.name, ctx.objects, datetime.now(UTC))
    try:
        path = _write_atomically(folder, name, artifact.data)
    except OSError as exc:
        raise OutputError(f"the file '{name}' could not be written to '{folder}': "
                          f"{exc.strerror or exc}") from exc
    base = pathlib.PurePosixPath(artifact.name).name or artifact.name
    return Result(output=f"the file '{segment(base)}' has been copied to '{path}'",
                  objects={"file": artifact.name, "destination": str(path)})
