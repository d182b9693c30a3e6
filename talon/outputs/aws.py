"""aws:s3: store artifacts as objects of an AWS S3 bucket.

Layer L2 (plug-in). The object key is `<prefix>/<name>`, where the prefix loses its
leading and trailing `/` (an empty prefix gives no leading `/`, unlike the Go version) and
the name is local:file's (`<UTC time>_<namespace>_<pod>_<artifact name>`, every `/` turned
into `_`; talon.outputs._naming). The artifact's bytes are uploaded as they are
(PutObject); an upload error is a failure naming the bucket and the key, and the object's
`s3://bucket/key` location is in the output text and the objects. Bucket names are checked
loosely (length and characters), enough to catch a typo or a path given as a bucket;
`check_bucket` is shared with minio:s3; object keys and results are `_naming`'s. Credentials and
endpoint: talon.clients.aws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from talon.clients import aws
from talon.outputs import _naming
from talon.plugin import Artifact, OutputContext, OutputError, ParamValueError, Result, output

_BUCKET = re.compile(r"[a-z0-9.-]{3,63}")

CLOUD_PERMISSIONS = """\
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AllowPutArtifacts",
      "Effect": "Allow",
      "Action": "s3:PutObject",
      "Resource": "arn:aws:s3:::<bucket>/*"
    }
  ]
}
With aws.role_arn set, the credentials Talon starts with also need "sts:AssumeRole" on
that role, and the role needs the action above.
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

@output("aws", "s3", params=S3Params, description="Store on AWS S3",
        requires=("boto3",), cloud_permissions=CLOUD_PERMISSIONS, example=EXAMPLE)
def s3(ctx: OutputContext, artifact: Artifact) -> Result:
    """Upload the artifact to `bucket` under `prefix` with PutObject."""
    p: S3Params = ctx.params
    key = _naming.object_key(p.prefix, artifact.name, ctx.objects, datetime.now(UTC))
    client = ctx.clients.aws().client("s3", region=p.region)
    try:
        client.put_object(Bucket=p.bucket, Key=key, Body=artifact.data,
                          ContentType=artifact.content_type)
    except Exception as exc:
        raise OutputError(f"the key '{key}' could not be uploaded to the bucket "
                          f"'{p.bucket}': {aws.error_text(exc)}") from exc
    region = p.region or str(client.meta.region_name or "")
    return _naming.stored(artifact, bucket=p.bucket, prefix=p.prefix, key=key,
                  location=f"s3://{p.bucket}/{key}", region=region)
