"""A cheap timestamping actionner for tests/bench/bench_server.py, loaded with `plugins:`.

`bench:stamp` takes `time.time()` as soon as it runs and appends one line to the file
named by its `file` parameter: `<started> <bench.sent> <bench.seq> <pod>`, where
`bench.sent` and `bench.seq` are output fields set by the benchmark client. The line is
written with a single `os.write` on a descriptor opened once (O_APPEND), so stamping costs
one system call and lines from concurrent actions never interleave. With `sleep`, it
stamps first, then sleeps, like a long capture would.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from talon.plugin import Result, actionner

_fds: dict[str, int] = {}
_lock = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class StampParams:
    file: str
    sleep: float = 0.0


def _fd(path: str) -> int:
    fd = _fds.get(path)
    if fd is None:
        with _lock:
            fd = _fds.get(path)
            if fd is None:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _fds[path] = fd
    return fd


@actionner("bench", "stamp", params=StampParams,
           description="append the action start time and the client's send time to a file")
def stamp(ctx) -> Result:  # type: ignore[no-untyped-def]
    started = time.time()
    fields = ctx.event.output_fields
    pod = ctx.event.pod_name()
    line = f"{started:.6f} {fields.get('bench.sent', '-')} {fields.get('bench.seq', '-')} {pod}\n"
    os.write(_fd(ctx.params.file), line.encode())
    if ctx.params.sleep:
        time.sleep(ctx.params.sleep)
    return Result(output="stamped", objects={"pod": pod, "namespace": ctx.event.namespace()})
