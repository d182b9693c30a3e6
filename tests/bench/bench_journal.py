"""Benchmark of the journal: ingest with every event committed before its 200, and the
POST-to-action latency it adds.

Run: `.venv/bin/python tests/bench/bench_journal.py [--requests N] [--runs N]`.
A script that prints figures, not a pytest test: nothing here asserts on timing. It
reuses tests/bench/bench_server.py (the load generator, the bare server, the stamps).

1. Ingest of events that match no rule (the usual case in production), interleaved runs,
   medians: the bare stdlib server; Talon without a journal; Talon with the journal
   (fsync on, the default; and off). Target: with the journal, at least 0.5x the bare
   server. With the journal such an event is committed already done (no worker takes
   it), so this measures the group commit; the worker's take / done-mark path is the
   one section 2 exercises. "CPU us/ev" is the server's user + system CPU per event.
2. POST-to-action latency at `--rate` (default 200) matched events/s on 26 pods, with the
   journal (fsync on) and without: p50 / p99 / max. Target: p99 <= 25 ms with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_server as bs  # a sibling script, not a package

TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0


def start_talon(name: str, tmp: Path, journal: str) -> tuple[bs.Process, str, Path]:
    folder = tmp / name.replace(" ", "-").replace(",", "")
    stamps = folder / "stamps.txt"
    falco_rule = bs.write_rules(10, folder, stamps)
    (folder / "config.yaml").write_text(textwrap.dedent(f"""\
        listen_address: {bs.HOST}
        listen_port: 0
        log_format: json
        watch_rules: false
        queue_size: 200000
        plugins: ["{bs.PLUGIN}"]
        deduplication: {{leader_election: false}}
        """) + journal, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KUBECONFIG")}
    cmd = [sys.executable, "-m", "talon", "server", "-c", str(folder / "config.yaml"),
           "-r", str(folder / "rules.yaml")]
    return bs.Process(name, cmd, folder / "talon.log", env), falco_rule, stamps


def journal_config(tmp: Path, name: str, fsync: bool) -> str:
    return (f"journal: {{path: \"{tmp / name}.db\", fsync: {str(fsync).lower()}, "
            "max_events: 200000, max_bytes: 1073741824}\n")


def ingest(targets: list[bs.Target], args: argparse.Namespace) -> None:
    servers = [t.proc for t in targets]
    seq = 0
    for target in targets:  # warm-up
        bs.throughput_run(target, range(seq, seq + 1_000), args, servers)
        seq += 1_000
        target.ingest.clear()
        target.cpu_us.clear()
        target.others.clear()
    for run in range(args.runs):
        for target in targets:
            note = bs.throughput_run(target, range(seq, seq + args.requests), args, servers)
            seq += args.requests
            if note:
                print(f"  run {run + 1} {target.name}:{note}")
    base = statistics.median(targets[0].ingest)
    print("\n1. Ingest of unmatched events, events/s (medians of interleaved runs)")
    print(f"  {'server':<26} {'each run':<26} {'median':>7} {'vs bare':>7} "
          f"{'CPU us/ev':>9} {'others':>6}")
    for t in targets:
        med = statistics.median(t.ingest)
        print(f"  {t.name:<26} {' '.join(f'{v:7.0f}' for v in t.ingest):<26} {med:7.0f} "
              f"{med / base:7.0%} {statistics.median(t.cpu_us):9.0f} "
              f"{statistics.median(t.others):6.0%}")
    for t in targets[1:]:
        ratio = statistics.median(t.ingest) / base
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(f"  {t.name}: {ratio:.0%} of bare ({verdict} >= {TARGET_RATIO:.0%}), "
              f"refused {t.refused}")


def latency(targets: list[bs.Target], args: argparse.Namespace) -> None:
    print(f"\n2. POST-to-action latency, ms, at {args.rate:.0f} matched events/s for "
          f"{args.seconds:.0f} s, {args.runs} runs each")
    print(f"  {'':<42} {'events':>6} {'p50':>8} {'p99':>8} {'max':>8}   "
          f"{'rtt p99':>8} {'late':>5} {'others':>7}")
    seq = 10_000_000
    p99s: dict[str, list[float]] = {t.name: [] for t in targets}
    for run in range(args.runs):
        for target in targets:
            assert target.stamps is not None
            time.sleep(0.5)
            phase = bs.paced(target.proc, target.template, target.stamps, seq, args)
            seq += 1_000_000
            print(bs.latency_row(f"{target.name} (run {run + 1})", phase))
            p99s[target.name].append(bs.percentile(phase.latencies, 99))
    for name, values in p99s.items():
        med = statistics.median(values) * 1000
        verdict = "meets" if med <= TARGET_P99_MS else "MISSES"
        print(f"  {name}: median p99 {med:.2f} ms ({verdict} <= {TARGET_P99_MS:g} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--run-timeout", type=float, default=60.0)
    args = parser.parse_args()
    began = time.monotonic()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.runs} runs of "
          f"{args.requests} POSTs from {args.clients} processes x {args.connections} "
          "connections")
    with tempfile.TemporaryDirectory(prefix="talon-bench-journal-") as tmp_name:
        tmp = Path(tmp_name)
        procs: list[bs.Process] = []
        try:
            bare = bs.Process("bare http.server", [sys.executable, bs.__file__,
                                                   "--bare-server"], tmp / "bare.log")
            procs.append(bare)
            unmatched = bs.event_template("A Falco rule no Talon rule names")
            targets = [bs.Target("bare http.server", bare, unmatched)]
            matched: list[bs.Target] = []
            for name, journal in (("talon, memory", ""),
                                  ("talon, journal fsync", journal_config(tmp, "j1", True)),
                                  ("talon, journal no fsync", journal_config(tmp, "j2", False))):
                proc, falco_rule, stamps = start_talon(name, tmp, journal)
                procs.append(proc)
                targets.append(bs.Target(name, proc, unmatched))
                if "no fsync" not in name:
                    matched.append(bs.Target(name, proc, bs.event_template(falco_rule), stamps))
            ingest(targets, args)
            latency(matched, args)
        finally:
            for proc in procs:
                bs.stop_and_report(proc)
    print(f"\ntotal wall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
