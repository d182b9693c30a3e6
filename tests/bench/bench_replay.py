"""Benchmark of `talon rules replay` (a script, not a pytest test).

Run: `.venv/bin/python tests/bench/bench_replay.py [--events N] [--keep FILE]`.

Writes a JSON Lines file of N (default 1,000,000) Falco events shaped like Falco's
`json_output` file output: about 10% match the shipped rules (shells, sensitive reads,
C2 traffic, one in ten of them in kube-system, which the rules skip), the rest are other
Falco rules; one line in 100,000 is not JSON. It then runs `python -m talon rules replay
FILE -r rules.d --json` as a fresh process, reads its summary, and prints events/s (by the
wall clock, and per CPU second of the child: the machine may be shared) and the peak RSS
of the replay process (its own ru_maxrss), once against the shipped
rules and once with `--baseline` (the shipped rules against themselves: every event that
can match is planned twice).
Figures only: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATCHING = ("Terminal shell in container", "Read sensitive file untrusted",
            "Outbound Connection to C2 Servers", "Drop and execute new binary in container")
OTHER = ("Write below etc", "Contact K8S API Server From Container", "Clear Log Activities",
         "Launch Privileged Container", "Create Symlink Over Sensitive Files",
         "Change thread namespace", "Redirect STDOUT/STDIN to Network Connection in Container",
         "Packet socket created in container", "Read ssh information", "Mount Launched in "
         "Privileged Container")


def event(i: int) -> dict[str, object]:
    """The i-th generated event: about one in ten matches a shipped rule."""
    matching = i % 10 == 0
    rule = MATCHING[(i // 10) % len(MATCHING)] if matching else OTHER[i % len(OTHER)]
    namespace = "kube-system" if matching and i % 100 == 0 else f"team-{i % 13}"
    return {
        "hostname": f"worker-{i % 40}",
        "output": f"12:00:00.{i % 10**9:09d}: Critical {rule} (user=root pod=web-{i})",
        "priority": "Critical" if i % 3 == 0 else "Warning",
        "rule": rule,
        "source": "syscall",
        "tags": ["container", "mitre_execution", "T1059"],
        "time": "2024-01-03T02:13:42.750111000Z",
        "output_fields": {
            "container.id": f"{i:012x}", "container.image.repository": "docker.io/nginx",
            "evt.time": 1704248022750111000 + i, "evt.type": "execve",
            "k8s.ns.name": namespace, "k8s.pod.name": f"web-{i}",
            "proc.cmdline": "sh -c id", "proc.name": "sh", "user.name": "root",
            "fd.sip": f"10.0.{i % 250}.{i % 200}", "fd.sport": 443,
        },
    }


def write_events(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            if i % 100_000 == 99_999:
                fh.write("this line is not JSON\n")
                continue
            fh.write(json.dumps(event(i), separators=(",", ":")) + "\n")


CHILD = ("import resource, sys\n"
         "from talon import cli\n"
         "code = cli.main(sys.argv[1:])\n"
         "sys.stdout.flush()\n"
         "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
         " file=sys.stderr)\n"
         "sys.exit(code)\n")
"""`python -m talon ARGS`, then its own peak RSS on stderr (the children's ru_maxrss would
count a forked copy of this process too)."""


def run(path: Path, *extra: str) -> None:
    cmd = [sys.executable, "-c", CHILD, "rules", "replay", str(path),
           "-r", str(ROOT / "rules.d"), "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:  # not in this process: a fork copies its RSS
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True,
                              check=False)
        seconds = time.perf_counter() - started
        out.seek(max(0, out.seek(0, 2) - 4096))
        summary = json.loads(out.read().splitlines()[-1])["summary"]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak_kib = int(proc.stderr.split("peak_rss_kib ")[-1])
    read = summary["events"] + summary["bad_lines"]
    print(f"replay {' '.join(extra) or '(no baseline)'}: exit {proc.returncode}, "
          f"{read} lines in {seconds:.1f}s = {read / seconds:,.0f} events/s "
          f"({read / cpu:,.0f} per CPU second), peak RSS {peak_kib / 1024:.0f} MiB")
    print("  summary:", json.dumps(summary, sort_keys=True)[:400])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the events file here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "events.jsonl"
        started = time.perf_counter()
        write_events(path, args.events)
        print(f"wrote {args.events:,} events ({path.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - started:.1f}s")
        run(path)
        run(path, "--baseline", str(ROOT / "rules.d"))


if __name__ == "__main__":
    main()
