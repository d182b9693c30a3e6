"""Benchmark of cluster-wide dedup: what a Lease claim adds to POST-to-action latency.

Run: `.venv/bin/python tests/bench/bench_dedup.py [--rate 100] [--seconds 10] [--runs 3]`.
A script that prints figures, not a pytest test: nothing here asserts on timing.

A fake Kubernetes API server (tests/fakes/kube_api.py, in its own process, real HTTP,
the Lease semantics of the real one) stands in for the cluster. Talon (10 rules, every
event matched, each event a distinct dedup key so that each one claims its own Lease)
runs twice per round: with `deduplication.leader_election: false` (per-process dedup,
no API call) and with `true` (one Lease created per event). Each gets `--rate` events/s
for `--seconds` s; per event, the action's start minus the client's send time. Rounds
are interleaved and the medians of the p50 and p99 reported, with the difference.
Everything started here is stopped here; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import bench_server as bench

ROOT = bench.ROOT
FAKE = textwrap.dedent("""\
    import gc, sys, time
    from pathlib import Path
    from tests.fakes.kube_api import FakeKubeAPI
    gc.freeze()  # the fake's own start-up objects: its collections stay short
    with FakeKubeAPI(keep_requests=False) as api:
        api.kubeconfig(Path(sys.argv[1]))
        print("ready", flush=True)
        sys.stdin.read()
    """)


def start_fake(folder: Path) -> tuple[subprocess.Popen[str], Path]:
    kubeconfig = folder / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-c", FAKE, str(kubeconfig)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the fake API server did not start")
    return proc, kubeconfig


def start_talon(folder: Path, kubeconfig: Path, leases: bool) -> tuple[bench.Process, str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stamps = folder / "stamps.txt"
    falco_rule = bench.write_rules(10, folder, stamps)
    config = folder / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen_address: {bench.HOST}
        listen_port: 0
        log_format: json
        watch_rules: false
        queue_size: 100000
        kubeconfig: {kubeconfig}
        plugins: ["{bench.PLUGIN}"]
        deduplication:
          leader_election: {str(leases).lower()}
          time_window_seconds: 600
          lease_namespace: talon
        """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KUBECONFIG")}
    cmd = [sys.executable, "-m", "talon", "server", "-c", str(config), "-r",
           str(folder / "rules.yaml")]
    name = "talon (Leases)" if leases else "talon (per process)"
    return bench.Process(name, cmd, folder / "talon.log", env), falco_rule, stamps


def claim_seconds(proc: bench.Process) -> str:
    """Mean Lease claim time from /metrics, for the report."""
    import urllib.request

    url = f"http://{bench.HOST}:{proc.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = re.search(r"^talon_dedup_claim_seconds_sum (\S+)$", text, re.M)
    count = re.search(r"^talon_dedup_claim_seconds_count (\S+)$", text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return "no claims"
    claims = float(count.group(1))
    within = re.search(r'^talon_dedup_claim_seconds_bucket\{le="0.005"\} (\S+)$', text, re.M)
    slow = claims - float(within.group(1)) if within else float("nan")
    return (f"{claims:.0f} claims, mean {float(total.group(1)) / claims * 1000:.2f} ms, "
            f"{slow:.0f} over 5 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="paced events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="phase length")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="talon-bench-dedup-") as tmp:
        fake, kubeconfig = start_fake(Path(tmp))
        try:
            seq = 1
            for run in range(args.runs):
                for leases in (False, True):
                    folder = Path(tmp) / f"run{run}-{int(leases)}"
                    proc, falco_rule, stamps = start_talon(folder, kubeconfig, leases)
                    try:
                        phase = bench.paced(proc, bench.event_template(falco_rule), stamps,
                                            seq, args)
                        seq += 1_000_000
                        p50 = bench.percentile(phase.latencies, 50)
                        p99 = bench.percentile(phase.latencies, 99)
                        results[leases].append((p50, p99))
                        extra = claim_seconds(proc) if leases else ""
                        print(f"  run {run + 1} {proc.name:<22} {len(phase.latencies):>5} "
                              f"actions  p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  "
                              f"others {phase.others:4.0%}  {extra}", flush=True)
                    finally:
                        bench.stop_and_report(proc)
        finally:
            assert fake.stdin is not None
            fake.stdin.close()
            fake.wait(10)
    local_p99 = statistics.median(p for _, p in results[False])
    lease_p99 = statistics.median(p for _, p in results[True])
    local_p50 = statistics.median(p for p, _ in results[False])
    lease_p50 = statistics.median(p for p, _ in results[True])
    print(f"\nmedians at {args.rate:.0f} matched events/s: per process p50 "
          f"{local_p50 * 1000:.2f} ms p99 {local_p99 * 1000:.2f} ms; Leases p50 "
          f"{lease_p50 * 1000:.2f} ms p99 {lease_p99 * 1000:.2f} ms; the claim adds "
          f"{(lease_p99 - local_p99) * 1000:.2f} ms to the p99 (target <= 3 ms)")


if __name__ == "__main__":
    main()
