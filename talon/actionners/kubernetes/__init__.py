"""The kubernetes actionners, one module per kind of object they act on.

Layer L2. Importing this package registers every kubernetes actionner; the kubernetes SDK
itself is only imported when an action runs. Registration order is the order of
`talon actionners list`: pods (terminate, label, annotation), targets (delete), then execs,
capture, networkpolicy and nodes (capture imports execs, so execs registers first).
"""

from talon.actionners.kubernetes import pods, targets

# isort: split
from talon.actionners.kubernetes import capture, execs, networkpolicy, nodes

__all__ = ["capture", "execs", "networkpolicy", "nodes", "pods", "targets"]
