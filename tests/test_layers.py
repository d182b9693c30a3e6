"""Import layering: a module imports only modules of its own layer or a lower one.

Covers: every module under talon/ has a layer here (a new module must be placed on purpose);
every `talon.*` import anywhere in a module (lazy ones inside functions too) respects the
table; the L4 modules never import each other; plug-in modules import only `talon.plugin`,
`talon.clients.*` and their own package; importing the CLI and every plug-in package loads
no cloud or Kubernetes SDK.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = "talon.py"
PLUGIN_PACKAGES = ("talon.actionners", "talon.outputs", "talon.notifiers", "talon.contexts")
INDEPENDENT_LAYER = 4

LAYER_TABLE: dict[int, tuple[str, ...]] = {
    6: (LAUNCHER, "talon.__main__", "talon.cli", "talon.safety_cli", "talon.journalcli"),
    5: ("talon.app", "talon.durable"),  # wiring only
    4: ("talon.server", "talon.reloader", "talon.dedup", "talon.leases", "talon.pool",
        "talon.containment", "talon.governor"),
    3: (
        "talon.engine", "talon.notify", "talon.rules.validate",
        "talon.rules",  # the package __init__ imports rules.validate (L3)
        # catalog imports the plug-in packages (L2) to register them, so L3 at the lowest
        # (its docstring calls it wiring; nothing below L5 imports it).
        "talon.catalog",
    ),
    2: (
        "talon.actionners", "talon.actionners.aws", "talon.actionners.calico",
        "talon.actionners.cilium", "talon.actionners.gcp", "talon.actionners.kubernetes",
        "talon.actionners.kubernetes._stream", "talon.actionners.kubernetes.capture",
        "talon.actionners.kubernetes.common", "talon.actionners.kubernetes.crdpolicy",
        "talon.actionners.kubernetes.execs",
        "talon.actionners.kubernetes.networkpolicy", "talon.actionners.kubernetes.nodes",
        "talon.actionners.kubernetes.pods", "talon.actionners.kubernetes.rbac",
        "talon.actionners.kubernetes.targets", "talon.actionners.kubernetes.undo",
        "talon.outputs", "talon.outputs._naming", "talon.outputs.aws", "talon.outputs.gcp",
        "talon.outputs.local",
        "talon.outputs.minio",
        "talon.notifiers", "talon.notifiers._http", "talon.notifiers._text",
        "talon.notifiers.elasticsearch", "talon.notifiers.k8sevents", "talon.notifiers.loki",
        "talon.notifiers.slack", "talon.notifiers.smtp", "talon.notifiers.webhook",
        "talon.contexts", "talon.contexts.aws", "talon.contexts.k8snode",
    ),
    1: (
        "talon.plugin", "talon.clients", "talon.clients.aws", "talon.clients.kube",
        "talon.clients.kubehttp",
        "talon.clients.ratelimit",
        "talon.clients.minio", "talon.rules.loader",
        "talon.rules.model", "talon.rules.matching", "talon.config", "talon.configschema",
        "talon.metrics", "talon.log", "talon.context", "talon.yamlio", "talon.sdnotify",
        "talon.httphead", "talon.httpconn", "talon.auth", "talon.tls", "talon.filewatch",
        "talon.clients.gcp",
        # plan, render and suite import only L0/L1 modules (context, rules.model, yamlio…),
        # so L1 is the lowest layer consistent with them; engine and cli import them.
        "talon.plan", "talon.render", "talon.suite",
        "talon.redact", "talon.health",
        "talon.eventfiles", "talon.replay", "talon.ledger",
        # stage records, the reporter and its sinks, the optional OpenTelemetry export
        "talon.outcome", "talon.report", "talon.otel",
        "talon.retry", "talon.journal", "talon.journalview",
    ),
    0: ("talon", "talon.models", "talon.errors", "talon.registry", "talon.params", "talon.names",
        "talon.records", "talon.sockets"),
}
LAYERS: dict[str, int] = {m: n for n, names in LAYER_TABLE.items() for m in names}

SDKS = {"kubernetes", "boto3", "minio", "google.cloud.storage"}


def modules() -> dict[str, Path]:
    """Every module under talon/ by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / "talon").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def talon_imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for every `talon.*` import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from talon import cli` imports the module talon.cli; `from talon import
            # __version__` only the package talon.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == "talon" or target.startswith("talon."):
                yield node.lineno, target


def plugin_package(name: str) -> str | None:
    return next((p for p in PLUGIN_PACKAGES if name == p or name.startswith(p + ".")), None)


def violation(source: str, target: str) -> str | None:
    """Why `source` may not import `target`, or None when it may."""
    if target not in LAYERS:
        return "imports a module missing from LAYER_TABLE"
    own = plugin_package(source)
    if own is not None:
        allowed = (target in ("talon.plugin", "talon.clients")
                   or target.startswith("talon.clients.") or plugin_package(target) == own)
        return None if allowed else "a plug-in imports only talon.plugin, clients, own package"
    if LAYERS[target] > LAYERS[source]:
        return f"L{LAYERS[source]} imports a higher layer (L{LAYERS[target]})"
    if LAYERS[source] == LAYERS[target] == INDEPENDENT_LAYER and source != target:
        return f"L{INDEPENDENT_LAYER} modules are independent of each other"
    return None


def test_every_module_has_a_layer() -> None:
    found = set(modules())
    assert not found - set(LAYERS), f"place these modules in LAYER_TABLE: {found - set(LAYERS)}"
    stale = set(LAYERS) - found - {LAUNCHER}
    assert not stale, f"LAYER_TABLE names modules that no longer exist: {stale}"


def test_imports_respect_the_layers() -> None:
    sources = {**modules(), LAUNCHER: ROOT / LAUNCHER}
    known = set(sources)
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {name} -> {target}: {why}"
        for name, path in sources.items()
        for line, target in talon_imports(name, path, known)
        if (why := violation(name, target)) is not None
    ]
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_sdks_load_lazily() -> None:
    code = ("import talon.cli, talon.actionners, talon.outputs, talon.notifiers, talon.contexts;"
            f" import sys; loaded = set({sorted(SDKS)!r}) & set(sys.modules);"
            " assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
