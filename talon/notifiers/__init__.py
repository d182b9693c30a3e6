"""The built-in notifiers; importing this package registers every one of them.

Layer L2. Each module is imported explicitly (no directory scanning). `normalise` prepares
a raw `notifiers.<name>` mapping for `talon.params.coerce` (see `_text.normalise`).
"""

from __future__ import annotations

from talon.notifiers import elasticsearch, k8sevents, loki, slack, smtp, webhook
from talon.notifiers._text import normalise

__all__ = ["elasticsearch", "k8sevents", "loki", "normalise", "slack", "smtp", "webhook"]
