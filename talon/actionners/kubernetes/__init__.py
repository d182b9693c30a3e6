"""The kubernetes actionners, one module per kind of object they act on.

Layer L2. Importing this package registers every kubernetes actionner; the kubernetes SDK
itself is only imported when an action runs.
"""

from talon.actionners.kubernetes import capture, execs, networkpolicy, nodes, pods

__all__ = ["capture", "execs", "networkpolicy", "nodes", "pods"]
