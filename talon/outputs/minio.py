"""minio:s3: store artifacts as objects of a MinIO (or any S3-compatible) bucket.

Layer L2 (plug-in). Declared with metadata and params dataclass; the run function comes
later in this module and imports the minio SDK only then. Bucket names are checked loosely,
as for aws:s3; that the bucket exists is a live check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from talon.plugin import ParamValueError, declare

_BUCKET = re.compile(r"[a-z0-9.-]{3,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MinioS3Params:
    """Parameters of minio:s3."""

    bucket: str = field(metadata={"help": "Destination bucket (it must exist)"})
    prefix: str = field(default="", metadata={"help": "Prefix of the object keys"})

    def __post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.bucket):
            raise ParamValueError(
                "bucket", f"invalid bucket name '{self.bucket}': expected 3 to 63 "
                          f"lowercase letters, digits, '.' or '-'")


EXAMPLE = """\
- action: Download the suspicious file
  actionner: kubernetes:download
  parameters:
    file: "${FD_NAME}"
  output:
    target: minio:s3
    parameters:
      bucket: falco-talon
      prefix: /files
"""

declare(
    "output", "minio", "s3", params=MinioS3Params,
    description="Store on Minio",
    requires=("minio",), example=EXAMPLE,
)
