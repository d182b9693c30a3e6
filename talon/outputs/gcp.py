"""gcp:gcs: store artifacts as objects of a Google Cloud Storage bucket.

Layer L2 (plug-in): imports talon.plugin, talon.clients and its own package; the storage
SDK is used only through `ctx.clients.gcp()`. The object is named
`<prefix>/<UTC time>_<namespace>_<pod>_<artifact name>` (the name part built as
local:file builds its file names; the prefix trimmed of `/` at both ends, and no `/` at
all when it is empty) and holds the artifact's bytes exactly. A failed upload (missing
bucket, refused credentials, unreachable endpoint, timeout) is a failure naming the
bucket and the key, never a silent success. Bucket names are checked loosely; unlike S3,
GCS allows '_', and up to 222 characters when the name has dots.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from talon.clients.gcp import GcpError
from talon.outputs import _naming
from talon.plugin import (
    Artifact,
    OutputContext,
    OutputError,
    ParamValueError,
    Result,
    output,
)

_BUCKET = re.compile(r"[a-z0-9._-]{3,222}")

CLOUD_PERMISSIONS = """\
storage.objects.create  write the objects (roles/storage.objectCreator on the bucket)
storage.objects.delete  only to replace an object of the same name (roles/storage.objectUser)
"""


def _is_bucket(name: str) -> bool:
    return bool(_BUCKET.fullmatch(name)) and ("." in name or len(name) <= 63)


@dataclass(frozen=True, slots=True, kw_only=True)
class GcsParams:
    """Parameters of gcp:gcs."""

    bucket: str = field(metadata={"help": "Destination bucket"})
    prefix: str = field(default="", metadata={"help": "Prefix of the object names"})

    def __post_init__(self) -> None:
        if not _is_bucket(self.bucket):
            raise ParamValueError(
                "bucket", f"invalid bucket name '{self.bucket}': expected 3 to 63 "
                          f"lowercase letters, digits, '.', '_' or '-' (up to 222 with dots)")


EXAMPLE = """\
- action: Download the suspicious file
  actionner: kubernetes:download
  parameters:
    file: "${FD_NAME}"
  output:
    target: gcp:gcs
    parameters:
      bucket: falco-talon
      prefix: files
"""


@output("gcp", "gcs", params=GcsParams, description="Store on Google Cloud Storage",
        requires=("google.cloud.storage",), cloud_permissions=CLOUD_PERMISSIONS,
        example=EXAMPLE)
def gcs(ctx: OutputContext, artifact: Artifact) -> Result:
    """Upload the artifact as `<prefix>/<name>` into the bucket."""
    p: GcsParams = ctx.params
    key = _naming.object_key(p.prefix, artifact.name, ctx.objects, datetime.now(UTC))
    location = f"gs://{p.bucket}/{key}"
    timeout = ctx.deadline - time.monotonic()
    if timeout <= 0:
        raise OutputError(f"no time left to upload '{location}'")
    try:
        ctx.clients.gcp().upload(p.bucket, key, artifact.data, artifact.content_type, timeout)
    except GcpError as exc:
        raise OutputError(f"the key '{key}' could not be uploaded to the bucket "
                          f"'{p.bucket}': {exc}") from exc
    return _naming.stored(artifact, bucket=p.bucket, prefix=p.prefix, key=key,
                          location=location)
