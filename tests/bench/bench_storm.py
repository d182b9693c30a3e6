"""Benchmark of Kubernetes actions in an incident storm, against the fake API server.

Run: `.venv/bin/python tests/bench/bench_storm.py [--runs N] [--before REV]`.
A script that prints figures, not a pytest test: nothing here asserts on timing.

Each run starts, per Talon tree, a fresh fake API server (tests/fakes/kube_api.py, in its
own process, seeded with the pods) and a Talon (`python -m talon server`, `--workers`
workers, default 8, JSON logs to a file, de-duplication per process: `leader_election:
false`, so no Lease requests) whose one rule acts on every event. The fake writes one line
per pod write it applied (`time.time()`, verb, pod), which is where an action "arrives".
Scenarios:

1. storm: `--storm` `kubernetes:terminate` events for as many distinct pods, posted as fast
   as possible (2 client processes x 8 keep-alive connections): deletions that reached the
   API server, and the time from the first POST to the last deletion;
2. label at `--rates` events/s for `--seconds` s, each event for a new pod: POST-to-PATCH
   latency (the fake's clock when the PATCH was applied minus the client's clock just
   before the POST), p50/p99/max, and how many PATCHes arrived.

With `--tls`, the fake API server speaks https with a throwaway CA that the kubeconfig
names (as the API server does in a cluster); without it, plain http.
With `--before REV`, the same scenarios run on the tree of git revision REV (extracted to a
temporary folder with `git archive`), interleaved with the working tree run by run, so that
a noisy moment hits both. Medians over the runs are printed, with the share of the machine's
CPU that processes outside the benchmark used meanwhile. Only 127.0.0.1 is used; every
process started here is stopped here.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_server import (
    HOST,
    ROOT,
    OtherLoad,
    Process,
    event_template,
    load,
    percentile,
)

NAMESPACE = "shop"
FALCO_RULE = "Terminal shell in container"


# -- the fake API server process (run as `bench_storm.py --fake-api ...`) ---------------------

def fake_api(pods: int, record: Path, kubeconfig: Path, tls: bool = False) -> None:
    from tests.fakes.kube_api import FakeKubeAPI

    cluster: dict[str, str] = {}
    context = None
    if tls:  # a throwaway CA, as an API server's own; Talon trusts it from the kubeconfig
        import base64
        import ssl

        import trustme

        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        cluster["certificate-authority-data"] = base64.b64encode(ca.cert_pem.bytes()).decode()
    fake = FakeKubeAPI(keep_requests=False, tls=context)
    for i in range(pods):
        fake.add({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"pod-{i}", "namespace": NAMESPACE,
                               "labels": {"app": "web"},
                               "ownerReferences": [{"apiVersion": "apps/v1",
                                                    "kind": "ReplicaSet", "name": "web-5d9c",
                                                    "uid": "u-1", "controller": True}]},
                  "spec": {"nodeName": "node-1", "containers": [{"name": "app",
                                                                 "image": "nginx"}]},
                  "status": {"phase": "Running"}})
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_write(verb: str, resource: str, obj: Any) -> None:
        if resource == "pods":
            name = obj.get("metadata", {}).get("name", "?")
            os.write(fd, f"{time.time():.6f} {verb} {name}\n".encode())

    fake.on_write(on_write)
    gc.freeze()  # the seeded pods are long-lived: the fake's collections skip them
    fake.start()
    fake.kubeconfig(kubeconfig, namespace=NAMESPACE, cluster=cluster)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"fake API server listening on {HOST}:{fake.port}", flush=True)
    stop.wait()
    fake.stop()


def read_writes(record: Path) -> list[tuple[float, str, str]]:
    if not record.exists():
        return []
    rows = []
    for line in record.read_text().splitlines():
        stamp, verb, name = line.split(" ", 2)
        rows.append((float(stamp), verb, name))
    return rows


def wait_writes(record: Path, expected: int, timeout: float) -> list[tuple[float, str, str]]:
    deadline = time.monotonic() + timeout
    rows = read_writes(record)
    while len(rows) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = read_writes(record)
    return rows


# -- one Talon with its fake cluster --------------------------------------------------------

@dataclass
class Rig:
    fake: Process
    talon: Process
    record: Path

    def stop(self) -> None:
        for proc in (self.talon, self.fake):
            if proc.stop(30) not in (0, None, -signal.SIGTERM):
                print(f"  {proc.name} exited badly:\n"
                      f"{proc.log_path.read_text(errors='replace')[-2000:]}")


WORKERS = 8
TLS = {"tls": False}
"""Whether the fake API server speaks https (`--tls`), set once by main()."""


def start_rig(tree: Path, folder: Path, pods: int, actionner: str,
              workers: int = WORKERS) -> Rig:
    folder.mkdir(parents=True, exist_ok=True)
    record, kubeconfig = folder / "writes.txt", folder / "kubeconfig"
    record.unlink(missing_ok=True)
    fake = Process("fake API", [sys.executable, __file__, "--fake-api", str(pods),
                                str(record), str(kubeconfig)]
                   + (["--tls"] if TLS["tls"] else []), folder / "fake.log")
    parameters = '{labels: {suspicious: "true"}}' if actionner.endswith("label") else "{}"
    (folder / "rules.yaml").write_text(textwrap.dedent(f"""\
        - rule: Respond
          match: {{rules: ["{FALCO_RULE}"]}}
          actions:
            - action: Act
              actionner: {actionner}
              parameters: {parameters}
        """))
    (folder / "config.yaml").write_text(textwrap.dedent(f"""\
        listen_address: {HOST}
        listen_port: 0
        log_format: json
        watch_rules: false
        queue_size: 200000
        workers: {workers}
        kubeconfig: {kubeconfig}
        deduplication: {{leader_election: false}}
        """))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KUBECONFIG")}
    env["PYTHONPATH"] = str(tree)
    talon = Process("talon", [sys.executable, "-m", "talon", "server", "-c",
                              str(folder / "config.yaml"), "-r", str(folder / "rules.yaml")],
                    folder / "talon.log", env, cwd=tree)
    return Rig(fake, talon, record)


def template() -> bytes:
    return event_template(FALCO_RULE)


@dataclass
class Figures:
    storm_done: list[int] = field(default_factory=list)
    storm_seconds: list[float] = field(default_factory=list)
    label: dict[float, list[tuple[int, float, float, float]]] = field(default_factory=dict)
    others: list[float] = field(default_factory=list)
    rss_idle: list[float] = field(default_factory=list)   # MiB, before the storm
    rss_after: list[float] = field(default_factory=list)  # MiB, after the storm
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per scenario, CPU time per event (us) of Talon and of the fake API server."""

    def add_cpu(self, scenario: str, rig: Rig, before: tuple[float, float], n: int) -> None:
        talon, fake = rig.talon.cpu_seconds() - before[0], rig.fake.cpu_seconds() - before[1]
        self.cpu.setdefault(scenario, []).append((talon / n * 1e6, fake / n * 1e6))


def rss_mib(proc: Process) -> float:
    """Resident set size of `proc` (Linux /proc), in MiB."""
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def storm(tree: Path, folder: Path, n: int, figures: Figures, workers: int = WORKERS) -> None:
    rig = start_rig(tree, folder, n, "kubernetes:terminate", workers)
    try:
        other = OtherLoad([rig.talon, rig.fake])
        pods = tuple(f"pod-{i}" for i in range(n))
        figures.rss_idle.append(rss_mib(rig.talon))
        cpu = (rig.talon.cpu_seconds(), rig.fake.cpu_seconds())
        res = load(rig.talon.port, template(), range(n), clients=2, connections=8, pods=pods,
                   timeout=60)
        rows = [r for r in wait_writes(rig.record, n, 60) if r[1] == "delete"]
        figures.rss_after.append(rss_mib(rig.talon))
        figures.add_cpu("storm", rig, cpu, n)
        figures.others.append(other.share())
        figures.storm_done.append(len({r[2] for r in rows}))
        last = max((r[0] for r in rows), default=float("nan"))
        figures.storm_seconds.append(last - res.first_send)
    finally:
        rig.stop()


def labels(tree: Path, folder: Path, rate: float, seconds: float, figures: Figures,
           workers: int = WORKERS) -> None:
    n = int(rate * seconds)
    rig = start_rig(tree, folder, n, "kubernetes:label", workers)
    try:
        other = OtherLoad([rig.talon, rig.fake])
        pods = tuple(f"pod-{i}" for i in range(n))
        cpu = (rig.talon.cpu_seconds(), rig.fake.cpu_seconds())
        res = load(rig.talon.port, template(), range(n), clients=1, connections=16, pods=pods,
                   rate=rate, timeout=seconds + 30)
        rows = [r for r in wait_writes(rig.record, n, 30) if r[1] == "patch"]
        figures.add_cpu(f"label at {rate:.0f}/s", rig, cpu, n)
        figures.others.append(other.share())
        patched = {name: stamp for stamp, _verb, name in rows}
        lat = [patched[pods[seq]] - sent for seq, sent in res.sends.items()
               if pods[seq] in patched]
        figures.label.setdefault(rate, []).append(
            (len(lat), percentile(lat, 50), percentile(lat, 99), max(lat, default=0.0)))
    finally:
        rig.stop()


def report(name: str, figures: Figures, storm_n: int) -> None:
    done, secs = figures.storm_done, figures.storm_seconds
    print(f"\n{name} (others: median {statistics.median(figures.others):.0%} of the machine)")
    print(f"  storm of {storm_n} terminate: deletions {done}, first POST to last deletion "
          f"{' '.join(f'{s:.2f}' for s in secs)} s; median {statistics.median(secs):.2f} s "
          f"({storm_n / statistics.median(secs):.0f} deletions/s)")
    print(f"  Talon RSS: idle (connected, before the storm) "
          f"{statistics.median(figures.rss_idle):.0f} MiB, after it "
          f"{statistics.median(figures.rss_after):.0f} MiB (medians)")
    for scenario, rows in figures.cpu.items():
        print(f"  CPU per event, {scenario}: Talon {statistics.median(r[0] for r in rows):.0f} "
              f"us, fake API server {statistics.median(r[1] for r in rows):.0f} us (medians)")
    for rate, rows in sorted(figures.label.items()):
        arrived = [r[0] for r in rows]
        p50 = statistics.median(r[1] for r in rows) * 1000
        p99 = statistics.median(r[2] for r in rows) * 1000
        worst = statistics.median(r[3] for r in rows) * 1000
        print(f"  label at {rate:.0f}/s: arrived {arrived}; median of runs p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, max {worst:.1f} ms; p99 each run "
              f"{' '.join(f'{r[2] * 1000:.1f}' for r in rows)} ms")


def extract(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "talon"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--rates", type=float, nargs="*", default=[500.0, 1000.0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--before", default="", help="git revision to compare with")
    parser.add_argument("--workers", type=int, default=WORKERS, help="Talon's workers")
    parser.add_argument("--tls", action="store_true",
                        help="the fake API server speaks https (as API servers do)")
    parser.add_argument("--fake-api", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_api:
        fake_api(int(args.fake_api[0]), Path(args.fake_api[1]), Path(args.fake_api[2]),
                 args.tls)
        return
    TLS["tls"] = args.tls
    began = time.monotonic()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.runs} interleaved "
          f"runs; label for {args.seconds:g} s at {args.rates} events/s; API server over "
          f"{'https' if args.tls else 'http'}")
    with tempfile.TemporaryDirectory(prefix="talon-bench-storm-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"working tree": ROOT}
        if args.before:
            trees = {f"before ({args.before})": extract(args.before, tmp / "before"), **trees}
        figures = {name: Figures() for name in trees}
        for run in range(args.runs):
            for i, (name, tree) in enumerate(trees.items()):
                folder = tmp / f"r{run}-{i}"
                storm(tree, folder / "storm", args.storm, figures[name], args.workers)
                for rate in args.rates:
                    labels(tree, folder / f"label-{rate:.0f}", rate, args.seconds,
                           figures[name], args.workers)
            print(f"  run {run + 1} done at {time.monotonic() - began:.0f} s", flush=True)
        for name in trees:
            report(name, figures[name], args.storm)
    print(f"\ntotal wall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
