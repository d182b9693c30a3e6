"""Rules hot reload: a stat-polling watcher (debounced) and the atomic rule store.

Layer L4: stdlib only. It stats every rules file and folder (following symlinks, so a
Kubernetes ConfigMap's symlink swap is seen, unlike the Go version's inode watch) about
once per `interval`. A change is reloaded once the files have been stable for one more
interval; a valid rule set is swapped in with one assignment, an invalid one is logged
with all its problems and the rules in force stay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from talon import errors, log
from talon.errors import RulesError
from talon.rules.model import RuleSet

logger = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int, int], ...]


class RuleStore:
    """Holds the rule set in force; `current` is read once per event."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.current = ruleset

    def swap(self, ruleset: RuleSet) -> None:
        self.current = ruleset


def signature(paths: Sequence[str]) -> Signature:
    """(path, inode, mtime_ns, size) of each rules file, folders expanded."""
    entries: list[tuple[str, int, int, int]] = []
    for raw in paths:
        path = Path(raw)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            if path.is_dir() and f.suffix not in (".yaml", ".yml"):
                continue
            try:
                st = f.stat()
            except OSError:
                entries.append((str(f), -1, -1, -1))
                continue
            entries.append((str(f), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(entries)


class Reloader:
    """Polls `paths`; on a settled change, `load()` a RuleSet and hand it to `apply`."""

    def __init__(self, paths: Sequence[str], load: Callable[[], RuleSet],
                 apply: Callable[[RuleSet], None], *, interval: float = 1.0,
                 on_result: Callable[[bool], None] | None = None) -> None:
        self.paths, self._load, self._apply = list(paths), load, apply
        self.interval = interval
        self._on_result = on_result or (lambda _ok: None)
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="talon-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        seen = signature(self.paths)
        pending: Signature | None = None
        while not self._stop.wait(self.interval):
            try:
                now = signature(self.paths)
                if pending is not None and now == pending:
                    pending = None
                    seen = now
                    self.reload("change")
                elif now != seen and now != pending:
                    pending = now  # changed: wait one more interval for it to settle
            except Exception:
                logger.exception("rules watcher failed")

    def reload(self, reason: str = "change") -> bool:
        """Load and swap in the rules now; returns whether the new set is in force.

        Serialised: a SIGHUP (main thread) and a detected change (watcher) never race.
        """
        with self._reload_lock:
            return self._reload(reason)

    def _kept(self, why: str) -> bool:
        log.emit(logger, logging.ERROR, "rules", error=f"{why}: the rules in force are kept")
        self._on_result(False)
        return False

    def _reload(self, reason: str) -> bool:
        log.emit(logger, logging.INFO, "rules", result="changes detected", reason=reason)
        try:
            ruleset = self._load()
        except RulesError as exc:
            log.problems(logger, exc.problems)
            return self._kept("invalid rules")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - boundary: a reload never ends the process
            # (OSError on a file, a file gone mid-read, MemoryError, RecursionError, ...)
            return self._kept(f"cannot load the rules: {errors.describe(exc)}")
        self._apply(ruleset)
        log.problems(logger, ruleset.warnings)  # as at start-up: a typo'd key is not silent
        log.emit(logger, logging.INFO, "rules",
                 result=f"{len(ruleset.rules)} rule(s) have been successfully loaded")
        self._on_result(True)
        return True


