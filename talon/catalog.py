"""Load every built-in plug-in and the user's `plugins:` into the registry, once.

Layer L3 (wiring): imports the plug-in packages, whose import registers them, then the
modules or files named by the `plugins:` setting. A plug-in that fails to import is a
clear start-up error naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from talon.errors import ConfigError
from talon.registry import REGISTRY, Registry

_lock = threading.Lock()
_loaded_plugins: set[str] = set()


def load_builtins() -> None:
    """Import the built-in plug-in packages (cheap: SDKs are imported lazily)."""
    import talon.actionners
    import talon.contexts
    import talon.notifiers
    import talon.outputs  # noqa: F401


def _import_file(path: Path) -> None:
    name = "talon_plugin_" + path.stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load_plugins(names: Iterable[str]) -> None:
    """Import each plug-in module (dotted name) or Python file (path ending in .py)."""
    problems = []
    for name in names:
        with _lock:
            if name in _loaded_plugins:
                continue
            try:
                if name.endswith(".py") or "/" in name:
                    _import_file(Path(name))
                else:
                    importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any import failure is a config error
                problems.append(f"plugins: cannot load '{name}': {type(exc).__name__}: {exc}")
                continue
            _loaded_plugins.add(name)
    if problems:
        raise ConfigError(problems)


def registry(plugins: Iterable[str] = ()) -> Registry:
    """The process registry with built-ins and `plugins` loaded."""
    load_builtins()
    load_plugins(plugins)
    return REGISTRY
