"""The built-in contexts: extra facts added to an event before an action runs.

Layer L2. Importing this package registers every context in `talon.registry.REGISTRY`.
A rule's action asks for them with `additional_contexts:`; only actionners that use a
context (exec, script, download, aws:lambda, gcp:function) fetch them.
"""

from talon.contexts import aws, k8snode

__all__ = ["aws", "k8snode"]
