"""The built-in outputs: where actionners' artifacts (logs, files, captures) are stored.

Layer L2. Importing this package registers every output in `talon.registry.REGISTRY`;
no SDK (boto3, minio, google-cloud-storage) is imported until an artifact is stored.
"""

from talon.outputs import aws, gcp, local, minio

__all__ = ["aws", "gcp", "local", "minio"]
