"""The command line: `server`, `rules check|print|test|replay`, `check`, `ledger verify`,
`* list`, `rbac`, `version`.

Layer L6: the only place that configures logging, prints to the terminal or returns exit
codes (0 valid, 1 invalid rules or config, 2 usage). `-c/--config` and `-r/--rules`
(repeatable) are accepted before or after the sub-command, as in Falco Talon.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from talon import (
    __version__,
    catalog,
    config,
    eventfiles,
    journalcli,
    ledger,
    models,
    plan,
    render,
    replay,
    rules,
    safety_cli,
    suite,
)
from talon.errors import ConfigError, EventError, Problem, TalonError
from talon.registry import Kind, Permission, PluginInfo, Registry
from talon.rules.model import RuleSet

DEFAULT_CONFIG = "/etc/falco-talon/config.yaml"
DEFAULT_RULES = ("/etc/falco-talon/rules.yaml",)
LIST_KINDS = {"actionners": "actionner", "outputs": "output", "notifiers": "notifier",
              "contexts": "context"}
"""The `KIND list` verbs and the registry kind each one lists."""
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_rules(package_dir: Path = PACKAGE_DIR) -> Path:
    """The example rules shipped with Talon: talon/rules_d/ once installed as a package
    (pyproject.toml maps rules.d/ there), else rules.d/ beside talon/ in the source tree."""
    installed = package_dir / "rules_d"
    return installed if installed.is_dir() else package_dir.parent / "rules.d"


def default_rules() -> list[str]:
    """Upstream's default rules file if it exists, else the rules shipped with Talon."""
    found = [p for p in DEFAULT_RULES if Path(p).exists()]
    return found or [str(shipped_rules())]


SAFETY_VERBS = ("containment", "governor")
"""The containment and governor verbs (talon.safety_cli)."""
SERVER_CONFIG_VERBS = ("server", "journal", *SAFETY_VERBS)
"""Verbs that act on what the server runs with, so they read its configuration file, its
default path too (DEFAULT_CONFIG when present and no -c is given): `journal` finds the
journal there, and `journal retry` the kubeconfig and notifiers."""


def _common(sub: bool, level: int = 1) -> argparse.ArgumentParser:
    """-c/-r; each parser level keeps its own -r list so that they add up."""
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if sub else None
    p.add_argument("-c", "--config", default=default, metavar="FILE",
                   help=f"configuration file (server default: {DEFAULT_CONFIG} if present)")
    p.add_argument("-r", "--rules", action="append", default=default, metavar="FILE",
                   dest=f"rules_{level}" if sub else "rules",
                   help="rules file or folder of *.yaml (repeatable; default: rules_files "
                        "from the config, else /etc/falco-talon/rules.yaml, else rules.d/)")
    return p


def _parser() -> argparse.ArgumentParser:
    common = _common(sub=True)
    common2 = _common(sub=True, level=2)
    top = argparse.ArgumentParser(
        prog="talon", parents=[_common(sub=False)],
        description="Talon: a response engine for Falco events.")
    top.add_argument("--version", action="version", version=f"talon {__version__}")
    verbs = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server = verbs.add_parser("server", parents=[common], help="start the response server")
    server.add_argument("--dry-run", action="store_true", default=None,
                        help="log what every action would do and call nothing")
    server.add_argument("--listen-address", dest="listen_address", default=None)
    server.add_argument("--listen-port", dest="listen_port", type=int, default=None)
    rules_p = verbs.add_parser("rules", parents=[common], help="check, print or test rules")
    rverbs = rules_p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    for name, parent in (("check", rverbs), ("check", verbs)):
        chk = parent.add_parser(name, parents=[common2 if parent is rverbs else common],
                                help="check rules files")
        chk.add_argument("--strict", action="store_true", help="warnings are errors too")
    rverbs.add_parser("print", parents=[common2], help="print the merged rules as YAML")
    test = rverbs.add_parser("test", parents=[common2],
                             help="show or check what events would trigger")
    test.add_argument("inputs", nargs="+", metavar="EVENT.json|EVENTS.jsonl|SUITE.yaml")
    replay = rverbs.add_parser("replay", parents=[common2],
                               help="replay recorded events against the rules (-r)")
    replay.add_argument("inputs", nargs="+", metavar="EVENTS.jsonl|EVENT.json")
    replay.add_argument("--baseline", action="append", metavar="FILE",
                        help="rules to compare with (repeatable): show only what differs")
    replay.add_argument("--fail-on-change", action="store_true",
                        help="exit 1 when an outcome differs from the baseline")
    replay.add_argument("--json", action="store_true",
                        help="JSON Lines: one object per event shown, then a summary")
    ledger_p = verbs.add_parser("ledger", parents=[common], help="check the action ledger")
    lverbs = ledger_p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    verify = lverbs.add_parser("verify", help="check the hash chain (and MACs) of ledger files")
    verify.add_argument("files", nargs="+", metavar="FILE",
                        help="ledger files, oldest first (ledger.jsonl ledger.jsonl.1 ...)")
    verify.add_argument("--key", metavar="FILE", help="HMAC key file: check every line's mac")
    verify.add_argument("--prev", metavar="HEX", default=ledger.ZERO,
                        help="expected prev of the first line (when older files were removed)")
    for kind in LIST_KINDS:
        p = verbs.add_parser(kind, parents=[common], help=f"list the {kind}")
        p.add_subparsers(dest="list_command", metavar="list", required=True).add_parser(
            "list", parents=[common2], help=f"list the available {kind}")
    verbs.add_parser("rbac", parents=[common],
                     help="print the least-privilege ClusterRole the rules need")
    journalcli.add_parser(verbs, common, common2)
    verbs.add_parser("version", help="print the version")
    safety_cli.add_parsers(verbs, common, common2)
    return top


def _settings(args: argparse.Namespace, *, server: bool = False) -> config.Settings:
    overrides: dict[str, Any] = {}
    given = (args.rules or []) + (getattr(args, "rules_1", None) or []) + (
        getattr(args, "rules_2", None) or [])
    if given:
        overrides["rules_files"] = given
    for key in ("dry_run", "listen_address", "listen_port"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    path = args.config
    if path is None and server and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return config.load(path, overrides=overrides)


def _rules_paths(settings: config.Settings) -> list[str]:
    return list(settings.rules_files) or default_rules()


def _print_problems(problems: Sequence[Problem]) -> None:
    for p in problems:
        print(f"{p.severity}: {p}", file=sys.stderr)


def _load_checked(args: argparse.Namespace, settings: config.Settings, registry: Registry,
                  strict: bool = False) -> RuleSet | None:
    configured = set(settings.notifiers) if args.config else None
    ruleset, problems = rules.check(_rules_paths(settings), registry, strict=strict,
                                    notifiers=configured,
                                    protected=settings.protected.namespaces)
    _print_problems(problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        print(f"invalid rules: {len(errors)} error(s), {len(problems) - len(errors)} "
              "warning(s)", file=sys.stderr)
        return None
    return ruleset


def cmd_check(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    ruleset = _load_checked(args, settings, registry, strict=args.strict)
    if ruleset is None:
        return 1
    n = len(ruleset.rules)
    print(f"rules file valid: {n} rule{'s' if n != 1 else ''} from "
          f"{len(ruleset.files)} file(s), {len(ruleset.warnings)} warning(s)")
    return 0


def cmd_print(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    ruleset = _load_checked(args, settings, registry)
    if ruleset is None:
        return 1
    sys.stdout.write(render.rules_yaml(ruleset))
    return 0


def _show_event(where: str, event: models.Event, ruleset: RuleSet, registry: Registry) -> None:
    steps = plan.plan(event, ruleset, registry)
    print(f"# {where}: Falco rule '{event.rule}', priority '{event.priority}'")
    if not steps:
        print("no rule matches")
    for s in steps:
        out = {"rule": s.rule.name, "action": s.action.name, "actionner": s.action.actionner,
               "parameters": models.plain(s.parameters)}
        if s.action.output:
            out["output"] = {"target": s.action.output.target,
                             "parameters": models.plain(s.action.output.parameters)}
        if s.dry_run:
            out["dry_run"] = True
        sys.stdout.write(render.dump([out]))


def _show_events(path: str, ruleset: RuleSet, registry: Registry) -> int:
    """Show every event of a JSON file (one event or a list) or JSON Lines file; 1 if one
    is bad (reported with its file:line, the others still shown)."""
    status = 0
    try:
        for record in eventfiles.records(path):
            try:
                if record.error:
                    raise EventError("", record.error)
                event = models.decode(record.text)
            except EventError as exc:
                print(f"{record.where}: {exc}", file=sys.stderr)
                status = 1
                continue
            _show_event(record.where, event, ruleset, registry)
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    return status


def cmd_test(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    ruleset = _load_checked(args, settings, registry)
    if ruleset is None:
        return 1
    status, passed, failed = 0, 0, 0
    for path in args.inputs:
        if Path(path).suffix in (".yaml", ".yml"):
            for result in suite.run_suite(Path(path), ruleset, registry):
                mark = "FAIL" if result.failures else "ok"
                print(f"{mark}: {path}: {result.name}")
                for failure in result.failures:
                    print("  " + failure.replace("\n", "\n  "))
                failed += bool(result.failures)
                passed += not result.failures
        else:
            status |= _show_events(path, ruleset, registry)
    if passed or failed:
        print(f"{passed} passed, {failed} failed")
    return 1 if failed or status else 0


def _load_baseline(args: argparse.Namespace, settings: config.Settings,
                   registry: Registry) -> RuleSet | None:
    configured = set(settings.notifiers) if args.config else None
    ruleset, problems = rules.check(args.baseline, registry, notifiers=configured)
    for p in problems:
        print(f"baseline {p.severity}: {p}", file=sys.stderr)
    if any(p.severity == "error" for p in problems):
        print("invalid baseline rules", file=sys.stderr)
        return None
    return ruleset


def _replay_file(path: str, replayer: replay.Replayer, as_json: bool) -> bool:
    """Replay one file, printing as it goes; False if it cannot be read."""
    try:
        for record in eventfiles.records(path):
            try:
                shown = replayer.replay(record)
            except EventError as exc:
                print(f"{record.where}: bad line: {exc}", file=sys.stderr)
                continue
            if shown is not None:
                print(json.dumps(replay.to_json(shown)) if as_json else replay.text(shown))
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return False
    return True


def cmd_replay(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    if args.fail_on_change and not args.baseline:
        print("--fail-on-change needs --baseline", file=sys.stderr)
        return 2
    ruleset = _load_checked(args, settings, registry)
    baseline = _load_baseline(args, settings, registry) if args.baseline else None
    if ruleset is None or (args.baseline and baseline is None):
        return 1
    replayer = replay.Replayer(ruleset, registry, baseline)
    readable = [_replay_file(path, replayer, args.json) for path in args.inputs]
    summary = replayer.summary
    if args.json:
        print(json.dumps({"summary": summary.to_json(baseline is not None)}))
    else:
        print(replay.summary_text(summary, baseline is not None))
    if not all(readable):
        return 1
    return 1 if args.fail_on_change and summary.changed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = ledger.read_key(args.key) if args.key else None
        report = ledger.verify(args.files, key=key, first_prev=args.prev)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report.problem:
        print(f"{report.where}: {report.problem}", file=sys.stderr)
        print(f"{report.entries} entries verified before it", file=sys.stderr)
        return 1
    macs = ", MACs checked" if key else ""
    print(f"ok: {report.entries} entries in {len(args.files)} file(s){macs}; "
          f"last hash {report.last}")
    return 0


def cmd_list(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    kind = LIST_KINDS[args.command]
    blocks = [render.plugin_block(p) for p in registry.all(kind)]  # type: ignore[arg-type]
    print("\n".join(blocks), end="")
    return 0


def _used_plugins(ruleset: RuleSet, settings: config.Settings,
                  registry: Registry) -> list[PluginInfo]:
    """Every plug-in the rules use (actionners, outputs, contexts, notifiers), once each."""
    found: dict[tuple[str, str], PluginInfo] = {}

    def add(kind: Kind, name: str) -> None:
        if registry.has(kind, name):
            found.setdefault((kind, name), registry.get(kind, name).info)

    for rule in ruleset.rules:
        for action in rule.actions:
            add("actionner", action.actionner)
            if action.output is not None:
                add("output", action.output.target)
            for name in action.additional_contexts:
                add("context", name)
        for name in sorted(set(rule.notifiers) | set(settings.default_notifiers)):
            add("notifier", name)
    return list(found.values())


def cmd_rbac(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    ruleset = _load_checked(args, settings, registry)
    if ruleset is None:
        return 1
    used = _used_plugins(ruleset, settings, registry)
    needed = [p for info in used for p in info.permissions]
    sys.stdout.write(render.cluster_role(
        [*needed, *_support_permissions(settings, ruleset, used)]))
    dd = settings.deduplication
    if dd.leader_election and dd.time_window_seconds > 0:
        sys.stdout.write("---\n" + render.lease_role(dd.lease_namespace))
    sys.stdout.write(render.cloud_permissions(used))
    return 0


def _support_permissions(settings: config.Settings, ruleset: RuleSet,
                         used: list[PluginInfo]) -> tuple[Permission, ...]:
    """What Talon's own loops need: the containment expiry loop (list, patch, delete on
    the kinds the rules mark with a ttl) and the governor's protection lookups (get pods,
    namespaces, nodes)."""
    from talon.actionners.kubernetes import undo

    found: tuple[Permission, ...] = ()
    if settings.containment.enabled:
        with_ttl = {a.actionner for r in ruleset.rules for a in r.actions
                    if a.parameters.get("ttl") not in (None, "")}
        found += undo.reconciler_permissions(with_ttl)
    disruptive = any(i.kind == "actionner" and i.disruptive for i in used)
    if disruptive and settings.protected.selector:
        found += (Permission(("",), ("pods", "namespaces", "nodes"), ("get",)),)
    return found


def cmd_version(args: argparse.Namespace) -> int:
    print(f"Version:\t{__version__}\nPython:\t\t{platform.python_version()}\n"
          f"Platform:\t{sys.platform}/{platform.machine()}")
    return 0


def cmd_server(args: argparse.Namespace, settings: config.Settings, registry: Registry) -> int:
    from talon import app  # the server pulls in prometheus-client; only it needs it

    return app.run(settings, registry, rules_paths=_rules_paths(settings))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        return cmd_version(args)
    if args.command == "ledger":
        return cmd_verify(args)
    settings = _settings(args, server=args.command in SERVER_CONFIG_VERBS)
    if args.command in SAFETY_VERBS:
        return safety_cli.dispatch(args, settings)
    registry = catalog.registry(settings.plugins)
    if args.command == "server":
        return cmd_server(args, settings, registry)
    if args.command in LIST_KINDS:
        return cmd_list(args, settings, registry)
    if args.command == "rbac":
        return cmd_rbac(args, settings, registry)
    if args.command == "journal":
        return journalcli.run(args, settings, registry, _rules_paths(settings))
    handler = {"check": cmd_check, "print": cmd_print, "test": cmd_test, "replay": cmd_replay}
    name = "check" if args.command == "check" else args.rules_command
    return handler[name](args, settings, registry)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 1
    except TalonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
