"""The `containment` and `governor` verbs of the command line.

Layer L6 (beside talon.cli, which registers and dispatches them). `containment list`
prints what is in force (read from the cluster through the configured kubeconfig, or
in-cluster credentials); `containment release OBJECT|--all` undoes it now;
`containment extend OBJECT DURATION` moves its expiry to DURATION from now.
`governor reset` writes the reset file that the server on this host (same configuration)
watches: disruptive actions run again after a trip to dry-run.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from talon import config, containment, governor
from talon.actionners.kubernetes import undo
from talon.clients import Clients
from talon.errors import TalonError

OBJECT_HELP = "pod/NS/NAME, node/NAME, networkpolicy/NS/NAME (or caliconetworkpolicy/NS/NAME, " \
              "ciliumnetworkpolicy/NS/NAME)"


def _out(text: str, stream: Any = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                nested: argparse.ArgumentParser) -> None:
    """Register `containment list|release|extend` and `governor reset` under `verbs`
    (`common` and `nested`: the -c/-r options of each level)."""
    cont = verbs.add_parser("containment", parents=[common],
                            help="list, release or extend the containment in force")
    cverbs = cont.add_subparsers(dest="containment_command", metavar="ACTION", required=True)
    cverbs.add_parser("list", parents=[nested],
                      help="what is contained, since when, until when, why")
    release = cverbs.add_parser("release", parents=[nested], help="undo a containment now")
    release.add_argument("object", nargs="?", metavar="OBJECT", help=OBJECT_HELP)
    release.add_argument("--all", action="store_true", help="undo every containment now")
    extend = cverbs.add_parser("extend", parents=[nested],
                               help="move the expiry of a containment")
    extend.add_argument("object", metavar="OBJECT", help=OBJECT_HELP)
    extend.add_argument("duration", metavar="DURATION", help="90s, 30m, 2h, 1d or seconds")
    gov = verbs.add_parser("governor", parents=[common], help="reset the safety governor")
    gov.add_subparsers(dest="governor_command", metavar="ACTION", required=True).add_parser(
        "reset", parents=[nested],
        help="let disruptive actions run again after a trip to dry-run")


def dispatch(args: argparse.Namespace, settings: config.Settings) -> int:
    if args.command == "governor":
        return governor_reset(settings)
    kube = Clients(settings, timeout=10).kube()
    handler = {"list": list_, "release": release, "extend": extend}
    return handler[args.containment_command](args, kube)


def governor_reset(settings: config.Settings) -> int:
    path = governor.reset_path(settings)
    path.write_text(f"{time.time():.3f}\n")
    _out(f"governor reset requested ({path})")
    return 0


def list_(args: argparse.Namespace, kube: Any) -> int:
    rows = [("OBJECT", "WHAT", "SINCE", "EXPIRES", "RULE", "TRACE ID")]
    rows += [(item.ref, item.mark.what(), item.mark.since, item.mark.expires_at,
              item.mark.rule, item.mark.trace_id) for item in containment.find(kube)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
             + "  " + row[-1])
    return 0


def _report(item: containment.Contained, status: str, text: str) -> None:
    _out(f"{status}: {text}", sys.stderr if status == "failure" else sys.stdout)


def release(args: argparse.Namespace, kube: Any) -> int:
    if bool(args.all) == bool(args.object):
        raise TalonError("give either OBJECT or --all")
    items = list(containment.find(kube)) if args.all else [_get(kube, args.object)]
    done = sum(containment.release(kube, item, _report) for item in items)
    return 0 if done == len(items) else 1


def extend(args: argparse.Namespace, kube: Any) -> int:
    item = _get(kube, args.object)
    try:
        seconds = undo.parse_duration(args.duration)
    except ValueError as exc:
        raise TalonError(str(exc)) from None
    moved = undo.extend(kube, item.kind, item.obj, item.mark, time.time() + seconds)
    _out(f"{item.ref}: expires at {moved.expires_at}")
    return 0


def _get(kube: Any, ref: str) -> containment.Contained:
    try:
        return containment.get(kube, ref)
    except (ValueError, LookupError) as exc:
        raise TalonError(str(exc)) from None
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            raise TalonError(f"{ref} does not exist") from None
        raise
