"""aws:s3: store artifacts as objects of an AWS S3 bucket.

Layer L2 (plug-in). Declared only (metadata and params, so `rules check` validates it);
there is no run function in this build: storing to it fails with "not available in this
build". Bucket names are checked loosely (length and characters), enough to catch a typo
or a path given as a bucket; `check_bucket` is shared with minio:s3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from talon.plugin import ParamValueError, declare

_BUCKET = re.compile(r"[a-z0-9.-]{3,63}")

CLOUD_PERMISSIONS = """\
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AllowPutArtifacts",
      "Effect": "Allow",
      "Action": ["s3:PutObject", "s3:PutObjectAcl"],
      "Resource": ["arn:aws:s3:::<bucket>/", "arn:aws:s3:::<bucket>/*"]
    }
  ]
}
"""


def check_bucket(bucket: str) -> None:
    """Raise ParamValueError unless `bucket` looks like an S3 bucket name (aws:s3, minio:s3)."""
    if not _BUCKET.fullmatch(bucket):
        raise ParamValueError(
            "bucket", f"invalid bucket name '{bucket}': expected 3 to 63 "
                      f"lowercase letters, digits, '.' or '-'")


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Params:
    """Parameters of aws:s3."""

    bucket: str = field(metadata={"help": "Destination bucket"})
    prefix: str = field(default="", metadata={"help": "Prefix of the object keys"})
    region: str = field(default="", metadata={
        "help": "Region of the bucket (default: the region of the AWS settings)"})

    def __post_init__(self) -> None:
        check_bucket(self.bucket)


EXAMPLE = """\
- action: Download the suspicious file
  actionner: kubernetes:download
  parameters:
    file: "${FD_NAME}"
  output:
    target: aws:s3
    parameters:
      bucket: falco-talon
      prefix: files
      region: eu-west-1
"""

declare(
    "output", "aws", "s3", params=S3Params,
    description="Store on AWS S3",
    requires=("boto3",), cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE,
)
