"""Benchmark of rule matching and of `rules check` start-up (a script, not a pytest test).

Run: `.venv/bin/python tests/bench/bench_rules.py [--events N] [--runs N]`.

For 10, 100, 1,000 and 10,000 generated rules (each matching one distinct Falco rule,
plus about 5% wildcard rules matching on priority and output fields; 1 to 3 actions each,
using kubernetes:label and kubernetes:networkpolicy with parameters), it loads the files
through `talon.rules.load` and times `ruleset.matcher.match(event)` over a cycle of event
shapes, some matching, some not. It then times `python -m talon rules check` on the
1,000-rule folder as a fresh process and lists the cloud SDKs that command imports.
Figures only: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talon import catalog, models, rules  # noqa: E402
from talon.rules.model import RuleSet  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)
WILDCARD_EVERY = 20  # one rule in 20 (5%) has no match.rules
TARGET_CHECK_SECONDS = 0.5
HEAVY = ("kubernetes", "boto3", "botocore", "minio")
SKIP_NAMESPACES = "k8s.ns.name!=kube-system, k8s.ns.name!=falco, k8s.ns.name!=talon"

SHARED_BLOCKS = """\
- action: Label Pod as Suspicious
  actionner: kubernetes:label
  parameters:
    labels:
      talon.falco.org/suspicious: "true"

- action: Isolate Pod
  actionner: kubernetes:networkpolicy
  parameters:
    allow_cidr: []
"""


def _actions(i: int) -> str:
    """1 to 3 actions: shared blocks and inline actions with their own parameters."""
    label = (f"    - action: Label for response {i}\n"
             f"      actionner: kubernetes:label\n"
             f"      parameters:\n"
             f"        labels:\n"
             f"          talon.bench/response: \"r{i}\"\n"
             f"          talon.bench/team: \"team-{i % 7}\"\n")
    netpol = (f"    - action: Restrict egress {i}\n"
              f"      actionner: kubernetes:networkpolicy\n"
              f"      parameters:\n"
              f"        allow_cidr: [\"10.{i % 250}.0.0/16\", \"192.168.{i % 250}.0/24\"]\n"
              f"        allow_namespaces: [monitoring, \"team-{i % 7}\"]\n")
    shared = "    - action: Label Pod as Suspicious\n"
    return [label, shared + netpol, label + shared + "    - action: Isolate Pod\n"][i % 3]


def _rule(i: int) -> str:
    if i % WILDCARD_EVERY == WILDCARD_EVERY - 1:
        match = (f"    priority: \">=Critical\"\n"
                 f"    output_fields:\n"
                 f"      - k8s.ns.name=team-{i % 7}, proc.name=nc\n"
                 f"      - k8s.ns.name=restricted-{i}\n")
    else:
        match = (f"    rules:\n"
                 f"      - Falco rule {i}\n"
                 f"    output_fields:\n"
                 f"      - {SKIP_NAMESPACES}\n")
    return (f"- rule: Response {i}\n"
            f"  description: Generated response number {i}\n"
            f"  match:\n{match}"
            f"  actions:\n{_actions(i)}")


def write_rules(n: int, folder: Path) -> list[str]:
    """A rules folder with `n` rules split across files of at most 1,000 rules."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "00-blocks.yaml").write_text(SHARED_BLOCKS, encoding="utf-8")
    for start in range(0, n, 1_000):
        body = "\n".join(_rule(i) for i in range(start, min(n, start + 1_000)))
        (folder / f"{10 + start // 1_000:02d}-rules.yaml").write_text(body, encoding="utf-8")
    return [str(folder)]


def _event(rule: str, priority: str, **fields: str) -> models.Event:
    return models.decode(json.dumps({
        "rule": rule, "priority": priority, "source": "syscall",
        "output": f"12:00:00.000000000: {priority} bench event",
        "time": "2024-01-03T02:13:42.750111000Z",
        "output_fields": {"k8s.pod.name": "web-1", "proc.name": "sh", **fields}}))


def events_for(n: int) -> list[models.Event]:
    """A cycle of shapes: named match, filtered by namespace, unknown rule, wildcard hit."""
    middle = n // 2
    if middle % WILDCARD_EVERY == WILDCARD_EVERY - 1:
        middle -= 1  # a named rule, not a wildcard one
    named = f"Falco rule {middle}"
    return [
        _event(named, "Warning", **{"k8s.ns.name": "shop"}),
        _event(named, "Warning", **{"k8s.ns.name": "kube-system"}),
        _event("Some rule nobody handles", "Notice", **{"k8s.ns.name": "shop"}),
        _event("Outbound Connection to C2 Servers", "Critical",
               **{"k8s.ns.name": "team-3", "proc.name": "nc"}),
        _event("Some rule nobody handles", "Critical", **{"k8s.ns.name": "shop"}),
    ]


def time_matching(ruleset: RuleSet, shapes: list[models.Event], events: int,
                  runs: int) -> tuple[float, int]:
    """Median ns per event over `runs` passes of `events` events, and matches per pass."""
    stream = [shapes[i % len(shapes)] for i in range(events)]
    match = ruleset.matcher.match
    hits = sum(len(match(e)) for e in stream)  # warm-up, and a sanity figure
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for event in stream:
            match(event)
        samples.append((time.perf_counter_ns() - start) / len(stream))
    return statistics.median(samples), hits


def time_check(folder: Path, runs: int, env: dict[str, str] | None = None,
               ) -> tuple[float, int, str]:
    """Median wall time of `python -m talon rules check -r folder`, its exit code, output."""
    cmd = [sys.executable, "-m", "talon", "rules", "check", "-r", str(folder)]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, env=env)  # warm-up
    samples, proc = [], None
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                              env=env)
        samples.append(time.perf_counter() - start)
    assert proc is not None
    return statistics.median(samples), proc.returncode, (proc.stdout + proc.stderr).strip()


def cached_bytecode_env(tmp: Path) -> dict[str, str]:
    """This environment, but with .pyc files allowed (kept under `tmp`, not in the tree)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def heavy_imports(folder: Path) -> list[str]:
    """The cloud SDK modules loaded by `rules check` on `folder`, in a fresh process."""
    probe = ("import contextlib, io, json, sys\n"
             "from talon import cli\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    cli.main(['rules', 'check', '-r', {str(folder)!r}])\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}"
             " or m.startswith('google.cloud'))))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    heavy: list[str] = json.loads(out.stdout)
    return heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per timed pass")
    parser.add_argument("--runs", type=int, default=5, help="timed passes per size")
    parser.add_argument("--check-runs", type=int, default=5, help="`rules check` runs")
    args = parser.parse_args()
    registry = catalog.registry()
    print(f"Python {sys.version.split()[0]}, {args.events} events per pass, "
          f"median of {args.runs} passes; event shapes cycle: named match, named but "
          "filtered, unknown rule, wildcard match, unknown rule at Critical")
    print(f"{'rules':>7} {'wildcards':>9} {'load s':>8} {'ns/event':>9} {'vs 10':>7} "
          f"{'matches/pass':>12}")
    with tempfile.TemporaryDirectory(prefix="talon-bench-") as tmp:
        base = None
        for n in SIZES:
            folder = Path(tmp) / f"rules-{n}"
            paths = write_rules(n, folder)
            start = time.perf_counter()
            ruleset = rules.load(paths, registry)
            load_s = time.perf_counter() - start
            ns, hits = time_matching(ruleset, events_for(n), args.events, args.runs)
            base = base or ns
            wildcards = sum(1 for r in ruleset.rules if not r.match.rules)
            print(f"{len(ruleset.rules):>7} {wildcards:>9} {load_s:>8.3f} {ns:>9.0f} "
                  f"{ns / base:>6.1f}x {hits:>12}")
        folder = Path(tmp) / "rules-1000"
        no_pyc = "without .pyc" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "as is"
        print(f"\n`python -m talon rules check`, median wall time of {args.check_runs} runs "
              f"(target {TARGET_CHECK_SECONDS} s for 1,000 rules):")
        for label, path, env in (
                (f"shipped rules.d, {no_pyc}", ROOT / "rules.d", None),
                (f"1,000 rules, {no_pyc}", folder, None),
                ("shipped rules.d, .pyc cached", ROOT / "rules.d",
                 cached_bytecode_env(Path(tmp))),
                ("1,000 rules, .pyc cached", folder, cached_bytecode_env(Path(tmp)))):
            wall, code, output = time_check(path, args.check_runs, env)
            verdict = "" if path == ROOT / "rules.d" else (
                "  within target" if wall <= TARGET_CHECK_SECONDS else "  OVER target")
            print(f"  {label:<32} {wall:6.3f} s{verdict}  (exit {code}: {output})")
        heavy = heavy_imports(folder)
        print(f"cloud SDK modules imported by `rules check`: {heavy or 'none'}")


if __name__ == "__main__":
    main()
