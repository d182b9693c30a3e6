"""Containment that expires: find what Talon marked, undo it once due, list, release, extend.

Layer L4: a background loop (`Reconciler`) plus the functions the CLI's `containment` verbs
call. The marks themselves (format, recording, undo operations) are defined beside the
actionners, in `talon.actionners.kubernetes.undo`. Every `interval` seconds the loop lists
the objects carrying the label `talon.falco.org/contained=true` (pods, nodes,
NetworkPolicies, and Calico and Cilium policies when those APIs are served and readable),
and undoes each one whose `expires_at` has passed. Because the state lives on the objects,
any replica and any restart undo it; two replicas racing are kept apart by the
resourceVersion every write carries (the loser's write fails with 409/422 and the next
pass finds nothing left). Each undo is logged, counted (`action_total{status="reverted"}`)
and handed to `report` (the server notifies the default notifiers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from talon import log
from talon.actionners.kubernetes import undo
from talon.clients.kube import api_error

logger = logging.getLogger(__name__)

SKIPPED_STATUSES = (403, 404)
"""A kind that answers these (not installed, not granted) is skipped in the pass."""


@dataclass(frozen=True, slots=True)
class Contained:
    """One marked object: its reference (`pod/NS/NAME`, `node/NAME`…) and its mark."""

    ref: str
    kind: undo.Kind
    obj: dict[str, Any]
    mark: undo.Mark

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace") or "")

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")

    def objects(self) -> dict[str, str]:
        """The notification's objects, as the actionners name them."""
        found = {self.kind.name: self.name}
        if self.namespace:
            found["namespace"] = self.namespace
        return found


def ref_of(kind: undo.Kind, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    parts = [kind.name, *([str(meta.get("namespace"))] if kind.namespaced else []),
             str(meta.get("name"))]
    return "/".join(parts)


def parse_ref(text: str) -> tuple[undo.Kind, str, str]:
    """(kind, namespace, name) of `pod/NS/NAME`, `node/NAME`, `networkpolicy/NS/NAME`…;
    ValueError naming the accepted forms."""
    parts = text.strip().split("/")
    kind = undo.KINDS.get(parts[0].lower())
    if kind is not None and len(parts) == (3 if kind.namespaced else 2) and all(parts):
        return kind, (parts[1] if kind.namespaced else ""), parts[-1]
    forms = ", ".join(f"{k}/NS/NAME" if v.namespaced else f"{k}/NAME"
                      for k, v in undo.KINDS.items())
    raise ValueError(f"'{text}' is not an object reference: expected one of {forms}")


Skipped = Callable[[undo.Kind, int], None]
"""Told when a kind is skipped: not served (404) or not granted (403)."""


def _listed(k: Any, kind: undo.Kind, skipped: Skipped | None = None) -> list[dict[str, Any]]:
    """The marked objects of one kind; [] when the kind is not served or not granted."""
    try:
        page = json.loads(kind.listing(k).data)
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status in SKIPPED_STATUSES:
            if skipped is not None:
                skipped(kind, status)
            return []
        raise
    return [item for item in page.get("items") or [] if isinstance(item, dict)]


def find(k: Any, skipped: Skipped | None = None) -> Iterator[Contained]:
    """Every object carrying a containment mark, kind after kind."""
    for kind in undo.KINDS.values():
        for obj in _listed(k, kind, skipped):
            mark = undo.read_mark(obj)
            if mark is not None:
                yield Contained(ref_of(kind, obj), kind, obj, mark)


def get(k: Any, ref: str) -> Contained:
    """The marked object `ref`; LookupError when it has no mark."""
    kind, namespace, name = parse_ref(ref)
    obj = undo.read(k, kind, namespace, name)
    mark = undo.read_mark(obj)
    if mark is None:
        raise LookupError(f"{ref} carries no containment mark")
    return Contained(ref_of(kind, obj), kind, obj, mark)


def is_due(item: Contained, now: float) -> bool:
    return undo.parse_time(item.mark.expires_at) <= now


Report = Callable[[Contained, str, str], None]
"""Called after each undo with the object, the status (`reverted`/`failure`), the text."""


def release(k: Any, item: Contained, report: Report) -> bool:
    """Undo `item` now; reports the outcome, True when done."""
    try:
        done = undo.revert(k, item.kind, item.obj, item.mark)
    except Exception as exc:  # noqa: BLE001 - reported; the next pass retries
        if getattr(exc, "status", None) in (404, 409, 422):
            log.emit(logger, logging.INFO, "containment", object=item.ref,
                     result="changed meanwhile; looked at again on the next pass")
            return False
        report(item, "failure", api_error(exc))
        return False
    report(item, "reverted", f"{item.ref}: {done}")
    return True


class Reconciler:
    """Undoes expired containment every `interval` seconds (thread `talon-containment`)."""

    def __init__(self, kube: Callable[[], Any], report: Report, *, interval: float = 30.0,
                 wall: Callable[[], float] = time.time) -> None:
        self.kube, self.report, self.interval, self._wall = kube, report, interval, wall
        self._forbidden: set[str] = set()
        """Kinds whose listing was refused (403), each warned about once."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="talon-containment",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next time
                log.emit(logger, logging.WARNING, "containment", result="pass failed",
                         error=api_error(exc))

    def _skipped(self, kind: undo.Kind, status: int) -> None:
        """A kind not granted is warned about once (not served, as without Calico, is not):
        its expired containment would otherwise never be undone, silently."""
        if status != 403 or kind.name in self._forbidden:
            return
        self._forbidden.add(kind.name)
        log.emit(logger, logging.WARNING, "containment", result="cannot list", object=kind.name,
                 error=f"listing {kind.name} objects is forbidden (403): their expired "
                       "containment cannot be undone",
                 hint="grant the verbs `python -m talon rbac` prints for rules with a ttl")

    def reconcile(self) -> int:
        """One pass: undo every expired containment; how many were undone."""
        k, now, undone = self.kube(), self._wall(), 0
        for item in find(k, self._skipped):
            if self._stop.is_set():
                break
            if is_due(item, now):
                undone += release(k, item, self.report)
        return undone
