"""Harness for the aws:* and minio:s3 tests: the real engine, real plug-ins, real clients.

`cloud(rules_yaml, *events, **settings)` loads the rules into a registry holding the real
aws:lambda, aws:s3, minio:s3 and `aws` context plus `t:artifact` (makes an artifact for the
rule's output), builds `Clients` from the dotted `settings` (e.g. `aws__role_arn=...`,
written with `__` for `.`) and runs each event through one Engine. It returns `Acted`
(tests/actionners/conftest.py) with every (rule, action, status) and the notifications.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from talon import catalog, config, models, rules
from talon.clients import Clients
from talon.engine import Engine
from talon.metrics import Metrics
from talon.models import Notification
from talon.plugin import Artifact, Result, actionner
from talon.registry import REGISTRY, Registry
from talon.reloader import RuleStore
from tests.actionners.conftest import Acted

DATA = b"\x00\xffbinary\r\nlog line\n" + bytes(range(256))
"""Artifact bytes that a text round trip would change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactParams:
    name: str = "log"


def _artifact(ctx: Any) -> Result:
    return Result(output="made", objects={"pod": ctx.event.pod_name(),
                                          "namespace": ctx.event.namespace()},
                  artifact=Artifact(name=ctx.params.name, data=DATA,
                                    content_type="application/octet-stream"))


def registry() -> Registry:
    catalog.load_builtins()
    fresh = Registry()
    for kind, name in (("actionner", "aws:lambda"), ("output", "aws:s3"),
                       ("output", "minio:s3"), ("context", "aws")):
        fresh.add(REGISTRY.get(kind, name))  # type: ignore[arg-type]
    actionner("t", "artifact", registry=fresh, params=ArtifactParams, require_output=True,
              description="make an artifact")(_artifact)
    return fresh


def event(pod: str = "web-1", output: str = "shell in web-1") -> models.Event:
    return models.from_mapping({
        "rule": "Terminal shell in container", "priority": "Warning", "output": output,
        "hostname": "node-1", "tags": ["container", "shell"],
        "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "shop", "proc.pid": 4242}},
        trace_id="0123456789abcdef0123456789abcdef")


Cloud = Callable[..., Acted]


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    def run(rules_yaml: str, *events: models.Event, **settings: Any) -> Acted:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
        reg = registry()
        overrides = {k.replace("__", "."): v for k, v in settings.items()}
        clients = Clients(config.load(None, env={}, overrides=overrides), timeout=3)
        notes: list[Notification] = []
        engine = Engine(registry=reg, rules=RuleStore(rules.load([str(path)], reg)),
                        metrics=Metrics(), notify=lambda _names, n: notes.append(n),
                        default_notifiers=("webhook",), clients=clients)
        try:
            done = [d for ev in (events or (event(),)) for d in engine.handle(ev)]
        finally:
            clients.close()
        return Acted(done, notes)

    return run


def yaml(value: Any) -> str:
    """A value as a YAML flow scalar (JSON is YAML)."""
    return json.dumps(value)
