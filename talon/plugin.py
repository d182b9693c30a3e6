"""The plug-in SDK: what actionners, outputs, notifiers and contexts import.

Layer L1. Plug-ins (built-in or loaded through the `plugins:` setting) import this module
and `talon.clients.*`, nothing else from Talon. Contracts:
- actionner: `run(ctx: ActionContext) -> Result`; a `Result.artifact` goes to the output;
- output: `run(ctx: OutputContext, artifact: Artifact) -> Result`;
- context: `run(ctx: ActionContext) -> Mapping[str, str]`;
- notifier: a class `cls(settings, delivery)` with `send(notification)`.
Raise `ActionError`/`OutputError`/`CheckFailedError` for expected failures; any other
exception is caught by the engine and reported as a failure too. A params dataclass's
`__post_init__` raises `ParamValueError` for a bad value; `references(text)` lists the
`${NAME}`/`$NAME` names a text refers to.

Reads shared between the checks and the run: the engine builds one `ActionContext` per
action and hands the same object to each live check, then to `run`. `ctx.cache` is a dict
that lives exactly that long (a fresh one for every action, never shared across events or
threads): a check that reads an object stores it under a key such as
`("Pod", namespace, name)`, and the run takes it from there instead of asking the API server
again (the built-in Kubernetes plug-ins do this through
`talon.actionners.kubernetes.common.read_pod`). A plug-in that must see fresh state (a
retry after a conflict) reads again and replaces the entry. Plug-ins that ignore `cache`
work as before. Kubernetes requests made during a check or run count against the action's
timeout, including any wait under the `kubernetes.qps` client rate limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talon.context import references
from talon.errors import ActionError, CheckFailedError, EventError, NotifyError, OutputError
from talon.models import (
    NAMESPACE_KEYS,
    POD_KEYS,
    Artifact,
    Delivery,
    Event,
    Notification,
    Result,
    Status,
)
from talon.params import ParamValueError, duration_seconds
from talon.registry import Permission, actionner, context, notifier, output
from talon.rules.model import Action, Rule

_ACTION_LOGGER = logging.getLogger("talon.actionners")
_OUTPUT_LOGGER = logging.getLogger("talon.outputs")

__all__ = [
    "NAMESPACE_KEYS", "POD_KEYS", "Action", "ActionContext", "ActionError", "Artifact",
    "CheckFailedError", "Delivery", "Event", "EventError", "Notification", "NotifyError",
    "OutputContext", "OutputError", "ParamValueError",
    "Permission", "Result", "Rule", "Status", "actionner", "context", "duration_seconds",
    "notifier",
    "output", "references",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext:
    """Everything an actionner (or context) gets for one action on one event."""

    event: Event
    rule: Rule
    action: Action
    params: Any
    """The actionner's params dataclass, with `${VAR}` substitution applied."""
    context: Mapping[str, str]
    """Talon's `falco-talon.*` keys and the additional contexts fetched."""
    env: Mapping[str, str]
    """Environment-style names (FD_NAME, PRIORITY, FALCO-TALON_RULE, …) of this event."""
    clients: Any
    """Lazily built SDK clients shared by all threads (see talon.clients)."""
    deadline: float
    """time.monotonic() value by which the action must be over."""
    dry_run: bool = False
    logger: logging.Logger = _ACTION_LOGGER
    cache: dict[tuple[str, ...], Any] = field(default_factory=dict)
    """Objects read during this action, shared by its checks and its run (see above)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputContext:
    """Everything an output gets to store one artifact."""

    event: Event
    rule: Rule
    action: Action
    params: Any
    """The output's params dataclass."""
    objects: Mapping[str, str]
    """The objects the actionner reported (pod, namespace, …), used in object names."""
    clients: Any
    deadline: float
    logger: logging.Logger = _OUTPUT_LOGGER
