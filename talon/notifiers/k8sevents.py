"""The `k8sevents` notifier: metadata only for now.

Layer L2. It will create a core/v1 Event per notification next to the involved pod; the
implementation needs the Kubernetes client and lands with it. Until then the notifier
validates and lists, and the dispatcher reports it as not available in this build.
"""

from __future__ import annotations

from talon.registry import Permission, declare

EXAMPLE = """\
default_notifiers:
  - k8sevents
notifiers:
  k8sevents: {}
"""

INFO = declare(
    "notifier", "notifier", "k8sevents",
    description="Create a Kubernetes Event in the namespace of the target resource",
    permissions=(Permission(("",), ("events",), ("get", "update", "patch", "create")),),
    example=EXAMPLE,
)
