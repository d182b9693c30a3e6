"""minio:s3: store artifacts as objects of a MinIO (or any S3-compatible) bucket.

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function (and no live check) in this build: storing to it fails with "not
available in this build". Bucket names are checked as for aws:s3 (`aws.check_bucket`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from talon.outputs import aws
from talon.plugin import declare


@dataclass(frozen=True, slots=True, kw_only=True)
class MinioS3Params:
    """Parameters of minio:s3."""

    bucket: str = field(metadata={"help": "Destination bucket (it must exist)"})
    prefix: str = field(default="", metadata={"help": "Prefix of the object keys"})

    def __post_init__(self) -> None:
        aws.check_bucket(self.bucket)


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
