"""The MinIO client for the minio:s3 output, built from the `minio.*` settings.

Layer L1. `connect(settings, timeout=…)` returns one `Minio` client (the SDK's, over a
urllib3 pool with connect/read timeouts and one retry) that is shared by all threads.
`minio.endpoint` is `host:port`; a `http://` or `https://` prefix is accepted and then
decides TLS, else `minio.use_ssl` does. `url(bucket, key)` is where an object lives.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from talon.config import MinioSettings
from talon.errors import TalonError


class MinioConfigError(TalonError):
    """The minio settings cannot make a client (no endpoint)."""


@dataclass(frozen=True, slots=True)
class MinioClient:
    """The SDK client and the base URL objects are reported under."""

    client: Any
    base_url: str
    pool: Any

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.clear()

    def url(self, bucket: str, key: str) -> str:
        """The object's URL (path style): `<base>/<bucket>/<key>`."""
        return f"{self.base_url}/{bucket}/{urllib.parse.quote(key)}"


def split_endpoint(endpoint: str, use_ssl: bool) -> tuple[str, bool]:
    """(host:port, secure) from the `minio.endpoint` and `minio.use_ssl` settings."""
    text = endpoint.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if sep:
        return rest, scheme.lower() == "https"
    return text, use_ssl


def connect(settings: MinioSettings, *, timeout: float) -> MinioClient:
    """A MinIO client for the configured endpoint; MinioConfigError without one."""
    if not settings.endpoint.strip():
        raise MinioConfigError("minio.endpoint is not set")
    import urllib3
    from minio import Minio

    host, secure = split_endpoint(settings.endpoint, settings.use_ssl)
    pool = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=urllib3.Retry(total=1, backoff_factor=0.2,
                              status_forcelist=(500, 502, 503, 504)))
    client = Minio(host, access_key=settings.access_key or None,
                   secret_key=settings.secret_key or None, secure=secure, http_client=pool)
    return MinioClient(client, f"{'https' if secure else 'http'}://{host}", pool)
