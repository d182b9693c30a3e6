"""Names of stored artifacts, shared by the outputs (local:file, aws:s3, minio:s3, gcp:gcs).

Layer L2 (helper of the outputs package; registers nothing). A name is
`<UTC time>_<namespace>_<pod>_<artifact name>` (or with the hostname, or the other object
values, as the Go version does), every `/` and control character turned into `_`, a NUL
refused, and shortened with a hash beyond NAME_MAX bytes.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from talon.plugin import Artifact, OutputError, Result

NAME_MAX = 255
"""Longest file name (bytes) on Linux filesystems."""
_CONTROL = re.compile(r"[\x01-\x1f\x7f]")


def segment(text: str) -> str:
    """One piece of the file name: no `/`, no control character; a NUL is refused."""
    if "\x00" in text:
        raise OutputError("the artifact name or an object value contains a NUL character")
    return _CONTROL.sub("_", text.replace("/", "_"))


def _shorten(name: str) -> str:
    """`name` within NAME_MAX bytes; a shortened name ends with a hash of the full one."""
    raw = name.encode()
    if len(raw) <= NAME_MAX:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    keep = raw[:NAME_MAX - len(digest) - 1].decode("utf-8", "ignore")
    return f"{keep}_{digest}"


def file_name(artifact_name: str, objects: Mapping[str, str], now: datetime) -> str:
    """`<ts>_<namespace>_<pod>_<name>`, `<ts>_<hostname>_<name>` or `<ts>_<values…>_<name>`."""
    ts = now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    if objects.get("namespace") and objects.get("pod"):
        parts = [objects["namespace"], objects["pod"]]
    elif objects.get("hostname"):
        parts = [objects["hostname"]]
    else:
        parts = [str(v) for k, v in sorted(objects.items()) if k != "file"]
    return _shorten("_".join(segment(p) for p in [ts, *parts, artifact_name]))


def object_key(prefix: str, artifact_name: str, objects: Mapping[str, str],
               now: datetime) -> str:
    """`<prefix>/<local:file name>`, the prefix without leading or trailing `/`."""
    name = file_name(artifact_name, objects, now)
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def stored(artifact: Artifact, *, bucket: str, prefix: str, key: str, location: str,
           **extra: str) -> Result:
    """The Result of an upload: text and objects naming the bucket, key and location."""
    base = segment(pathlib.PurePosixPath(artifact.name).name or artifact.name)
    return Result(
        output=f"the file '{base}' has been uploaded as the key '{key}' to the bucket "
               f"'{bucket}' ({location})",
        objects={"file": artifact.name, "bucket": bucket, "prefix": prefix, "key": key,
                 "location": location, **extra})
