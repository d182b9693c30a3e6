"""Lazily built SDK clients, one per process, shared by all threads.

Layer L1. `Clients(settings)` builds nothing until a plug-in asks: `clients.kube()` loads
the Kubernetes configuration on first use (under a lock) and returns the same client
afterwards. SDKs are imported inside the builders, never at module level.
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
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    def kube(self) -> Any:
        """The Kubernetes client (`talon.clients.kube.Kube`)."""
        from talon.clients import kube

        return self._get("kube", lambda: kube.connect(self.settings.kubeconfig,
                                                      timeout=self.timeout))

    def gcp(self) -> Any:
        """The Google Cloud client (`talon.clients.gcp.Gcp`), from the `gcp` settings."""
        from talon.clients import gcp

        return self._get("gcp", lambda: gcp.connect(self.settings.gcp.credentials_path,
                                                    timeout=self.timeout))
