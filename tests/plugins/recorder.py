"""A test plug-in, loaded through the `plugins:` setting: records what it is asked to do.

`test:record` appends one JSON line per call to the file named by its `file` parameter:
the rule, action, pod, a wall-clock timestamp and the event's trace id; it can sleep and
fail on request. `test:store` is an output that writes the artifact into `folder`.
`test:artifact` makes an artifact (`name`, `data`) for the output given in the rule.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from talon.plugin import ActionError, Artifact, Result, actionner


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordParams:
    file: str
    sleep: float = 0.0
    fail: bool = False


@actionner("test", "record", params=RecordParams, description="record the call in a file")
def record(ctx) -> Result:  # type: ignore[no-untyped-def]
    started = time.time()
    if ctx.params.sleep:
        time.sleep(ctx.params.sleep)
    line = {"rule": ctx.rule.name, "action": ctx.action.name, "pod": ctx.event.pod_name(),
            "started": started, "ended": time.time(), "trace_id": ctx.event.trace_id,
            "output": ctx.event.output}
    with Path(ctx.params.file).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    if ctx.params.fail:
        raise ActionError("asked to fail")
    return Result(output="recorded", objects={"pod": ctx.event.pod_name()},
                  artifact=Artifact(name="rec.txt", data=b"x"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactParams:
    name: str
    data: str = "artifact"


@actionner("test", "artifact", params=ArtifactParams, require_output=True,
           description="make an artifact for the output")
def artifact(ctx) -> Result:  # type: ignore[no-untyped-def]
    return Result(output="made", objects={"pod": ctx.event.pod_name(),
                                          "namespace": ctx.event.namespace()},
                  artifact=Artifact(name=ctx.params.name, data=ctx.params.data.encode()))
