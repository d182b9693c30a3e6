"""Queue and worker pool: bounded queue, per-pod ordering, isolation, drain.

Covers: put refuses instead of blocking when full; events for one pod run in arrival
order even with many workers; a slow event for one pod does not delay other pods; a
handler exception of any kind (a BaseException subclass, one whose str() fails) neither
kills the worker nor keeps its pod's ordering key held; an event whose pod field is not a
string has no ordering key; drain waits for queued and running items; the backlog behind
a busy pod counts against the queue's bounds (count and bytes).
"""

from __future__ import annotations

import threading
import time

from talon import models
from talon.pool import MemoryQueue, WorkerPool, pod_key


def ev(pod: str, n: int, ns: str = "shop") -> models.Event:
    return models.from_mapping({"output": str(n), "output_fields": {
        "k8s.pod.name": pod, "k8s.ns.name": ns}})


def test_full_queue_refuses() -> None:
    q = MemoryQueue(2)
    assert q.put(ev("a", 1)) and q.put(ev("a", 2))
    assert q.put(ev("a", 3)) is False
    assert q.depth() == 2


def test_pod_key() -> None:
    assert pod_key(ev("web", 1)) == "shop/web"
    assert pod_key(models.from_mapping({})) == ""


def test_same_pod_in_order_other_pods_in_parallel() -> None:
    q = MemoryQueue(1000)
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()
    active: set[str] = set()
    overlaps: list[str] = []

    def handle(item: object) -> None:
        event = item.event  # type: ignore[attr-defined]
        pod = event.pod_name()
        with lock:
            if pod in active:
                overlaps.append(pod)
            active.add(pod)
        time.sleep(0.002)
        with lock:
            active.discard(pod)
            seen.setdefault(pod, []).append(int(event.output))

    pool = WorkerPool(q, handle, workers=6)
    pool.start()
    for n in range(200):
        assert q.put(ev(f"p{n % 4}", n))
    assert pool.drain(10)
    assert overlaps == []
    for pod, numbers in seen.items():
        assert numbers == sorted(numbers), pod
    assert sum(len(v) for v in seen.values()) == 200


def test_slow_pod_does_not_delay_others() -> None:
    q = MemoryQueue(100)
    finished: dict[str, float] = {}
    release = threading.Event()

    def handle(item: object) -> None:
        event = item.event  # type: ignore[attr-defined]
        if event.pod_name() == "slow":
            release.wait(5)
        finished[event.pod_name() + event.output] = time.monotonic()

    pool = WorkerPool(q, handle, workers=2)
    pool.start()
    start = time.monotonic()
    q.put(ev("slow", 0))
    q.put(ev("slow", 1))  # queued behind the first, on the same worker
    for n in range(5):
        q.put(ev(f"fast{n}", n))
    deadline = time.monotonic() + 5
    while len(finished) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(finished[f"fast{n}{n}"] - start < 2 for n in range(5))
    assert "slow0" not in finished
    release.set()
    assert pool.drain(5)
    assert finished["slow0"] <= finished["slow1"]


def test_handler_errors_do_not_kill_workers() -> None:
    q = MemoryQueue(10)
    done: list[str] = []

    def handle(item: object) -> None:
        event = item.event  # type: ignore[attr-defined]
        if event.output == "0":
            raise RuntimeError("bug")
        done.append(event.output)

    pool = WorkerPool(q, handle, workers=1)
    pool.start()
    q.put(ev("a", 0))
    q.put(ev("a", 1))
    assert pool.drain(5)
    assert done == ["1"]


class Odd(BaseException):
    """Not an Exception: escapes `except Exception`."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


def test_any_handler_exception_keeps_the_worker_and_frees_the_pod() -> None:
    q = MemoryQueue(10)
    done: list[str] = []

    def handle(item: object) -> None:
        event = item.event  # type: ignore[attr-defined]
        if event.output == "0":
            raise Odd("not an Exception")
        if event.output == "2":
            raise Unprintable()
        done.append(event.output)

    pool = WorkerPool(q, handle, workers=1)
    pool.start()
    for n in range(4):
        q.put(ev("a", n))  # one pod: 1..3 wait on the key of 0
    assert pool.drain(5)
    assert done == ["1", "3"]


def test_non_string_pod_field_has_no_key() -> None:
    event = models.from_mapping({"output_fields": {"k8s.pod.name": True,
                                                   "k8s.ns.name": "shop"}})
    assert pod_key(event) == ""


def test_drain_times_out_with_work_left() -> None:
    q = MemoryQueue(10)
    gate = threading.Event()
    pool = WorkerPool(q, lambda item: gate.wait(3), workers=1)
    pool.start()
    q.put(ev("a", 0))
    time.sleep(0.05)
    assert pool.drain(0.2) is False
    gate.set()


def test_backlog_behind_a_busy_pod_counts_against_the_queue() -> None:
    q = MemoryQueue(3)
    started, gate = threading.Event(), threading.Event()

    def handle(item: object) -> None:
        started.set()
        gate.wait(5)

    pool = WorkerPool(q, handle, workers=2)
    pool.start()
    assert q.put(ev("a", 0))
    assert started.wait(5)
    accepted = [q.put(ev("a", n)) for n in range(1, 50)]
    assert accepted.count(True) == 3  # held behind pod a, they still fill the queue
    deadline = time.monotonic() + 5
    while pool.backlog() < 3 and time.monotonic() < deadline:  # moved to pod a's backlog
        time.sleep(0.01)
    assert pool.backlog() == 3 and q.depth() == 3
    assert q.put(ev("b", 99)) is False
    gate.set()
    assert pool.drain(5)
    assert q.depth() == 0 and q.put(ev("b", 100))


def test_queue_bytes_bound_and_release() -> None:
    q = MemoryQueue(100, max_bytes=1000)
    assert q.put(ev("a", 1), 600) and q.put(ev("a", 2), 400)
    assert q.put(ev("a", 3), 1) is False
    assert q.bytes_held() == 1000
    item = q.take(0.1)
    assert item is not None and item.size == 600
    assert q.put(ev("a", 4), 1) is False  # taken but not started: still held
    q.release(item)
    assert q.bytes_held() == 400 and q.depth() == 1
    assert q.put(ev("a", 5), 600)
