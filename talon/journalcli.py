"""The `journal` verbs: list, show, retry, drop, export (whether the server runs or not).

Layer L6, beside talon.cli, which adds these verbs to its parser and calls `run`. The
journal is `journal.path` from the configuration, or `--journal PATH`. `retry` runs each
recorded failed action again through an engine built from the configuration as the
server builds its own (talon.app.action_engine): the action as the rules define it now,
its parameters substituted again from the recorded event (a recorded parameter is never
substituted twice). An action that succeeds is marked resolved; one that fails again
stays failed, with its new error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from talon import config, journalview
from talon.engine import Engine, Failure
from talon.errors import TalonError
from talon.journal import JournalError
from talon.registry import Registry
from talon.rules.model import Action, Rule


def add_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser, common2: argparse.ArgumentParser) -> None:
    """Add `journal list|show|retry|drop|export` to the CLI's verbs (`common2`: the
    options each action accepts too)."""
    top = verbs.add_parser("journal", parents=[common], help="inspect the event journal, "
                           "retry or drop failed actions")
    top.add_argument("--journal", dest="journal_path", metavar="PATH",
                     help="journal file (default: journal.path from the configuration)")
    sub = top.add_subparsers(dest="journal_command", metavar="ACTION", required=True)

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common2], help=text)

    listing = verb("list", "list the events (id, state, times, rule)")
    listing.add_argument("--failed", action="store_true", help="only events with a failed "
                         "action not yet resolved")
    listing.add_argument("--since", metavar="DURATION", help="accepted within, e.g. 1h")
    verb("show", "an event and its failed actions").add_argument("id", type=int)
    again = verb("retry", "run the failed actions of an event again")
    again.add_argument("id", type=int, nargs="?")
    again.add_argument("--all-failed", action="store_true", help="every unresolved one")
    verb("drop", "give up the failed actions of an event").add_argument("id", type=int)
    export = verb("export", "the events as JSON Lines (for `rules test`)")
    export.add_argument("--failed", action="store_true")
    export.add_argument("--since", metavar="DURATION")


def run(args: argparse.Namespace, settings: config.Settings, registry: Registry,
        rules_paths: Sequence[str]) -> int:
    path = args.journal_path or settings.journal.path
    if not path:
        raise JournalError("no journal: set journal.path in the configuration or give "
                           "--journal PATH")
    view = journalview.View(path)
    try:
        command = args.journal_command
        if command == "retry":
            return _retry(view, args, settings, registry, rules_paths)
        return {"list": _list, "show": _show, "drop": _drop, "export": _export}[command](
            view, args)
    finally:
        view.close()


def _since(args: argparse.Namespace) -> float | None:
    if not getattr(args, "since", None):
        return None
    try:
        return journalview.parse_since(args.since)
    except ValueError as exc:
        raise TalonError(str(exc)) from None


def _list(view: journalview.View, args: argparse.Namespace) -> int:
    found = view.events(failed=args.failed, since=_since(args))
    print(f"{'ID':>8}  {'STATE':<8}  {'ACCEPTED':<20}  {'DONE':<20}  RULE")
    for row in found:
        print(f"{row['id']:>8}  {row['state']:<8}  {journalview.when(row['accepted']):<20}  "
              f"{journalview.when(row['done']):<20}  {json.dumps(row['rule'])}")
    return 0


def _show(view: journalview.View, args: argparse.Namespace) -> int:
    event = view.event(args.id)
    if event is None:
        print(f"no event {args.id} in {view.path}", file=sys.stderr)
        return 1
    failures = [{"id": f.id, "rule": f.rule, "action": f.action, "actionner": f.actionner,
                 "parameters": f.parameters, "error": f.error, "attempts": f.attempts,
                 "failed_at": journalview.when(f.at),
                 "resolved": journalview.when(f.resolved) if f.resolved else None,
                 "resolution": f.resolution}
                for f in view.failures(args.id, unresolved=False)]
    print(json.dumps({"id": args.id, "event": event.to_dict(), "failures": failures},
                     indent=2, default=str))
    return 0


def _drop(view: journalview.View, args: argparse.Namespace) -> int:
    failures = view.failures(args.id)
    if not failures:
        print(f"event {args.id} has no failed action to drop", file=sys.stderr)
        return 1
    for failure in failures:
        view.resolve(failure.id, "dropped")
        print(f"dropped: event {args.id}: rule '{failure.rule}', action '{failure.action}'")
    return 0


def _export(view: journalview.View, args: argparse.Namespace) -> int:
    for text in view.event_text(failed=args.failed, since=_since(args)):
        sys.stdout.write(text.replace("\n", " ") + "\n")
    return 0


def _retry(view: journalview.View, args: argparse.Namespace, settings: config.Settings,
           registry: Registry, rules_paths: Sequence[str]) -> int:
    if (args.id is None) == (not args.all_failed):
        raise TalonError("give an event id or --all-failed (not both)")
    failures = view.failures(None if args.all_failed else args.id)
    if not failures:
        print("no failed action to retry", file=sys.stderr)
        return 1
    from talon import app  # the server's wiring pulls in prometheus-client: only retry needs it

    last: list[Failure] = []
    wired = app.action_engine(settings, registry, rules_paths, last.append)
    wired.start()
    status = 0
    try:
        for failure in failures:
            last.clear()
            status |= _retry_one(view, failure, wired.engine, last)
    finally:
        wired.stop(min(10.0, settings.notifier_timeout_seconds + 1))
    return status


def _retry_one(view: journalview.View, failure: journalview.Failed, engine: Engine,
               last: list[Failure]) -> int:
    where = f"event {failure.event_id}: rule '{failure.rule}', action '{failure.action}'"
    event = view.event(failure.event_id)
    found = _find(engine.rules.current.rules, failure.rule, failure.action)
    if event is None or found is None:
        why = "the event is gone" if event is None else "no such action in the rules now"
        print(f"cannot retry {where}: {why}", file=sys.stderr)
        return 1
    outcome = engine.run_action(event, *found)
    if outcome.ok:
        view.resolve(failure.id, "retried")
        print(f"resolved: {where} ({outcome.status})")
        return 0
    error = last[-1].error if last else outcome.status
    view.failed_again(failure.id, error, last[-1].attempts if last else 1)
    print(f"failed again: {where}: {error}", file=sys.stderr)
    return 1


def _find(rules: Sequence[Rule], rule_name: str, action_name: str
          ) -> tuple[Rule, Action] | None:
    for rule in rules:
        if rule.name == rule_name:
            for action in rule.actions:
                if action.name == action_name:
                    return rule, action
    return None
