"""minio:s3: store artifacts as objects of a MinIO (or any S3-compatible) bucket.

Layer L2 (plug-in). Uses the `minio` SDK with the `minio.*` settings (talon.clients.minio).
Object keys, result text and objects are aws:s3's (`_naming.object_key`, `_naming.stored`): the
prefix loses its leading and trailing `/` (the Go version kept a leading one). The bytes are
uploaded as they are, with the artifact's content type; an upload error is a failure naming
the bucket and the key; the object's URL (`http(s)://endpoint/bucket/key`) is reported.
Bucket names are checked as for aws:s3 (`aws.check_bucket`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime

from talon.clients import aws as aws_client
from talon.outputs import _naming, aws
from talon.plugin import Artifact, OutputContext, OutputError, Result, output


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

def _error_text(exc: BaseException) -> str:
    """The S3 error code and message of a minio S3Error, else the exception text."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if isinstance(code, str) and code:
        return f"{code}: {message}" if message else code
    return aws_client.error_text(exc)


@output("minio", "s3", params=MinioS3Params, description="Store on Minio",
        requires=("minio",), example=EXAMPLE,
        cloud_permissions="s3:PutObject on the bucket's objects (and s3:GetBucketLocation)")
def s3(ctx: OutputContext, artifact: Artifact) -> Result:
    """Upload the artifact to `bucket` under `prefix` with the minio SDK."""
    p: MinioS3Params = ctx.params
    key = _naming.object_key(p.prefix, artifact.name, ctx.objects, datetime.now(UTC))
    try:
        minio = ctx.clients.minio()
        minio.client.put_object(p.bucket, key, io.BytesIO(artifact.data), len(artifact.data),
                                content_type=artifact.content_type)
    except Exception as exc:
        raise OutputError(f"the key '{key}' could not be uploaded to the bucket "
                          f"'{p.bucket}': {_error_text(exc)}") from exc
    return _naming.stored(artifact, bucket=p.bucket, prefix=p.prefix, key=key,
                      location=minio.url(p.bucket, key))
