"""Benchmark of authenticated ingest: TLS and a bearer token, as a ratio to plain HTTP.

Run: `.venv/bin/python tests/bench/bench_auth.py [--requests N] [--runs N] [--clients N]`.
A script that prints figures, not a pytest test: nothing here asserts on timing.

Four Talon processes (10 rules, JSON logs to a file, as in bench_server.py) take the same
~1 KB Falco event, which matches no rule (the usual case: ingest cost only): plain HTTP;
a bearer token; TLS (a throwaway CA made with trustme); TLS and a bearer token. Each of
`--clients` client processes keeps one keep-alive connection (TLS handshake once) and
sends `--requests` / clients POSTs, one in flight, as Falcosidekick does. Runs are
interleaved across the servers and the median is reported: requests per second, the
server's CPU milliseconds per event (from /proc, steadier than rates on a shared
machine), and both as a ratio to plain HTTP.

Everything started here is stopped here; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.pool
import os
import socket
import ssl
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import HOST, ROOT, Process, event_template, request_bytes, write_rules

TOKEN = "bench-token-0123456789abcdef0123456789"
CONFIGS = ("plain", "token", "tls", "tls+token")


@dataclass(frozen=True)
class ClientJob:
    port: int
    ca_file: str
    use_tls: bool
    token: str
    requests: int
    falco_rule: str


def _read_reply(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response (bodies are short, with Content-Length); its status code."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)
    buffer[:] = rest[length:]
    return int(head.split(b" ", 2)[1])


def client(job: ClientJob) -> tuple[int, int]:
    """Send the job's requests over one keep-alive connection: (ok, refused)."""
    template = event_template(job.falco_rule)
    raw = socket.create_connection((HOST, job.port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock: socket.socket = raw
    if job.use_tls:
        context = ssl.create_default_context(cafile=job.ca_file)
        sock = context.wrap_socket(raw, server_hostname=HOST)
    auth = f"Authorization: Bearer {job.token}\r\n".encode() if job.token else b""
    ok = refused = 0
    buffer = bytearray()
    with sock:
        for seq in range(job.requests):
            data = request_bytes(template, "web", seq, time.time())
            if auth:
                data = data.replace(b"\r\n", b"\r\n" + auth, 1)
            sock.sendall(data)
            if _read_reply(sock, buffer) == 200:
                ok += 1
            else:
                refused += 1
    return ok, refused


def start(name: str, tmp: Path, ca: trustme.CA) -> tuple[Process, str]:
    folder = tmp / name.replace("+", "-")
    falco_rule = write_rules(10, folder, folder / "stamps.txt")
    extra = ""
    if "tls" in name:
        cert = ca.issue_cert(HOST)
        cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
        cert.private_key_pem.write_to_path(str(folder / "tls.key"))
        extra += f"tls: {{cert_file: {folder / 'tls.crt'}, key_file: {folder / 'tls.key'}}}\n"
    if "token" in name:
        (folder / "tokens").write_text(TOKEN + "\n")
        extra += f"auth: {{bearer_tokens_file: {folder / 'tokens'}}}\n"
    config = folder / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen_address: {HOST}
        listen_port: 0
        log_format: json
        watch_rules: false
        queue_size: 200000
        plugins: ["{Path(__file__).resolve().parent / 'bench_plugin.py'}"]
        """) + extra, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KUBECONFIG")}
    cmd = [sys.executable, "-m", "talon", "server", "-c", str(config), "-r",
           str(folder / "rules.yaml")]
    return Process(name, cmd, folder / "talon.log", env), falco_rule


def one_run(proc: Process, name: str, ca_file: str, args: argparse.Namespace,
            pool: multiprocessing.pool.Pool) -> tuple[float, float]:
    """(requests per second, server CPU ms per request) of one run."""
    per_client = args.requests // args.clients
    jobs = [ClientJob(proc.port, ca_file, "tls" in name, TOKEN if "token" in name else "",
                      per_client, "no rule has this name") for _ in range(args.clients)]
    cpu0, t0 = proc.cpu_seconds(), time.perf_counter()
    results = pool.map(client, jobs)
    elapsed, cpu = time.perf_counter() - t0, proc.cpu_seconds() - cpu0
    ok = sum(r[0] for r in results)
    if ok != per_client * args.clients:
        raise RuntimeError(f"{name}: {ok} of {per_client * args.clients} accepted")
    return ok / elapsed, cpu * 1000 / ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8000, help="POSTs per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per server")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    args = parser.parse_args()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="talon-bench-auth-") as tmp_name:
        tmp, ca = Path(tmp_name), trustme.CA()
        ca_file = str(tmp / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        servers = {name: start(name, tmp, ca)[0] for name in CONFIGS}
        rates: dict[str, list[float]] = {n: [] for n in CONFIGS}
        cpus: dict[str, list[float]] = {n: [] for n in CONFIGS}
        try:
            with multiprocessing.Pool(args.clients) as pool:
                for _ in range(args.runs):
                    for name in CONFIGS:
                        rate, cpu = one_run(servers[name], name, ca_file, args, pool)
                        rates[name].append(rate)
                        cpus[name].append(cpu)
        finally:
            for proc in servers.values():
                proc.stop()
    print(f"{args.requests} POSTs per run, {args.clients} keep-alive connections, "
          f"median of {args.runs} runs, {os.cpu_count()} CPUs (shared)")
    base_rate = statistics.median(rates["plain"])
    base_cpu = statistics.median(cpus["plain"])
    print(f"{'server':<10} {'req/s':>8} {'ratio':>6} {'CPU ms/req':>11} {'ratio':>6}")
    for name in CONFIGS:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        print(f"{name:<10} {rate:>8.0f} {rate / base_rate:>6.2f} {cpu:>11.3f} "
              f"{cpu / base_cpu:>6.2f}")


if __name__ == "__main__":
    main()
