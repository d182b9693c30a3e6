"""The outcome of one action or output step, as sinks (the action ledger) receive it.

Layer L0: stdlib only. The engine builds one `ActionRecord` per outcome it reports
(dry-run, success, failure, ignored..., and each output stage) and hands it to the sink
given to its constructor; the record holds plain, already-final values.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _empty() -> Mapping[str, Any]:
    return types.MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRecord:
    """One action (stage `action`) or output (stage `output`) outcome."""

    time: float
    """When the outcome was known (seconds since the epoch)."""
    trace_id: str
    rule: str
    action: str
    actionner: str
    status: str
    """`dry_run`, `success`, `failure`, `ignored`... as the engine reports it."""
    stage: str = "action"
    output_target: str = ""
    """The output plug-in (stage `output` only)."""
    objects: Mapping[str, str] = field(default_factory=_empty)
    """The target objects (namespace, pod, node, bucket...)."""
    parameters: Mapping[str, Any] = field(default_factory=_empty)
    """Final parameters of the action (of the output, for stage `output`)."""
    output: str = ""
    error: str = ""
