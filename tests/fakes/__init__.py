"""Fakes that speak real protocols on 127.0.0.1 so tests exercise the real client libraries.

`kube_api` (with `kube_store`, `kube_patch`, `kube_ws`): a fake Kubernetes API server.
"""
