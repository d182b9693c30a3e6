"""gcp:gcs: store artifacts as objects of a Google Cloud Storage bucket.

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function in this build: storing to it fails with "not available in this
build". Bucket names are checked loosely; unlike S3, GCS allows '_', and up to 222
characters when the name has dots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from talon.plugin import ParamValueError, declare

_BUCKET = re.compile(r"[a-z0-9._-]{3,222}")

CLOUD_PERMISSIONS = """\
storage.objects.create
storage.objects.get
storage.objects.list
storage.objects.update
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

declare(
    "output", "gcp", "gcs", params=GcsParams,
    description="Store on Google Cloud Storage",
    requires=("google.cloud.storage",), cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE,
)
