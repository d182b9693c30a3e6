"""The built-in actionners, one module per category (kubernetes split by object kind).

Layer L2. Importing this package registers every actionner in `talon.registry.REGISTRY`;
no SDK (kubernetes, boto3, google-auth) is imported until an action runs.
"""

from talon.actionners import aws, calico, cilium, gcp, kubernetes

__all__ = ["aws", "calico", "cilium", "gcp", "kubernetes"]
