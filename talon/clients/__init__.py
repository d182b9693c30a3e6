"""Lazily built SDK clients, one per process, shared by all threads.

Layer L1. `Clients(settings)` builds nothing until a plug-in asks: `clients.kube()` loads
the Kubernetes configuration on first use (under a lock) and returns the same client
afterwards; `aws()` (boto3 session and clients), `imds()` (the instance metadata reader and
its cache) and `minio()` alike. SDKs are imported inside the builders, never at module
level.
"""

from __future__ import annotations

import threading
from typing import Any

from talon.config import Settings


class Clients:
    """The shared client facade handed to every plug-in as `ctx.clients`."""

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._lock = threading.Lock()
        self._built: dict[str, Any] = {}

    def _get(self, name: str, build: Any) -> Any:
        found = self._built.get(name)  # built once, then read on every action: no lock
        if found is not None:
            return found
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    def close(self) -> None:
        """Close the connections of the Kubernetes, AWS and MinIO clients built so far."""
        with self._lock:
            built = [self._built.pop(n) for n in ("kube", "aws", "minio") if n in self._built]
        for client in built:
            client.close()

    def kube(self) -> Any:
        """The Kubernetes client (`talon.clients.kube.Kube`)."""
        from talon.clients import kube

        return self._get("kube", lambda: kube.connect(
            self.settings.kubeconfig, timeout=self.timeout, pool_size=self._kube_pool_size(),
            limiter=self._kube_limiter()))

    @property
    def rate_limited(self) -> bool:
        """Whether API requests wait under a client rate limit (`kubernetes.qps` > 0): the
        engine then bounds the waits by each action's deadline."""
        return self.settings.kubernetes.qps > 0

    def _kube_pool_size(self) -> int:
        """Connections kept to the API server: one per thread that may call it at once
        (workers, notifiers, the lease claims)."""
        return self.settings.workers + self.settings.notifier_workers + 2

    def _kube_limiter(self) -> Any:
        """The token bucket of `kubernetes.qps`/`burst`, or None (qps 0: no limit)."""
        from talon.clients import ratelimit

        limits = self.settings.kubernetes
        if limits.qps <= 0:
            return None
        return ratelimit.TokenBucket(limits.qps, limits.burst, what="Kubernetes API")

    def gcp(self) -> Any:
        """The Google Cloud client (`talon.clients.gcp.Gcp`), from the `gcp` settings."""
        from talon.clients import gcp

        return self._get("gcp", lambda: gcp.connect(self.settings.gcp.credentials_path,
                                                    timeout=self.timeout))

    def aws(self) -> Any:
        """The AWS session and clients (`talon.clients.aws.Aws`)."""
        from talon.clients import aws

        return self._get("aws", lambda: aws.Aws(self.settings.aws, timeout=self.timeout))

    def imds(self) -> Any:
        """The EC2 instance metadata reader (`talon.clients.aws.Imds`), with its cache."""
        from talon.clients import aws

        return self._get("imds", lambda: aws.Imds(timeout=min(self.timeout, 2.0)))

    def minio(self) -> Any:
        """The MinIO client (`talon.clients.minio.MinioClient`)."""
        from talon.clients import minio

        return self._get("minio", lambda: minio.connect(self.settings.minio,
                                                        timeout=self.timeout))
