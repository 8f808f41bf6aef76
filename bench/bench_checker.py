"""Gateway throughput while the key checker sweeps 10,000 keys, against the same gateway without it.

Layout as in bench_proxy.py: keyrelay pinned to core 0; the upstream (nginx when installed, else
a small aiohttp app) and the load generator (wrk when installed, else bench/loadgen.py) on core 1.
The upstream answers chat completions and the one-api billing endpoints, so every key is healthy
and the sweep changes nothing: what is measured is the cost of probing alone.

Runs, each on a fresh gateway over a 10,000-key SQLite store:

- ``no checker``: the checker off;
- ``checker (default pacing)``: the billing probe (two requests per key) on every key, with the
  default ``concurrency = 8`` and ``max_rate = 50`` probes/s;
- ``checker (unpaced)``: the same with ``max_rate = 0`` — as fast as 8 probes at a time go.

The load runs only while a sweep is under way (checked by counting probe requests at the
upstream before and after). Prints requests/s, p50/p99 latency, the probe rate seen during the
load, and each run's ratio to ``no checker``; rounds alternate to spread out drift (medians).

On a shared or virtual machine the wall-clock rate swings with the neighbours' load, so the
gateway's own CPU time during the load is read too (``/proc/<pid>/stat``): requests per CPU
second is what the gateway gets done with the CPU it was given, and its ratio is the throughput
ratio when the gateway is CPU-bound. And before each load, the gateway's CPU use is measured
for a few seconds with no load at all: with the checker on, minus without, divided by the probe
rate, it is the CPU cost of one probe request — the steadiest figure of the three; times the
probe rate it predicts the share of a core the sweep takes from traffic.

    python bench/bench_checker.py [--seconds 10] [--connections 64] [--rounds 2] [--keys 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import (
    CHAT_JSON,
    TOKEN,
    Result,
    free_port,
    pinned,
    run_load,
    stop,
    wait_port,
)

SUBSCRIPTION = (
    '{"object":"billing_subscription","has_payment_method":true,"soft_limit_usd":100,'
    '"hard_limit_usd":100,"system_hard_limit_usd":100,"access_until":0}'
)
USAGE = '{"object":"list","total_usage":1234}'
PROBE_PATHS = ("/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage")

FALLBACK_UPSTREAM = f"""
import sys
from aiohttp import web
counts = {{"probes": 0}}
def static(body):
    async def handler(request):
        if request.path != "/v1/chat/completions":
            counts["probes"] += 1
        return web.Response(body=body, content_type="application/json")
    return handler
async def probes(request):
    return web.Response(text=str(counts["probes"]))
app = web.Application()
app.router.add_post("/v1/chat/completions", static({CHAT_JSON!r}.encode()))
app.router.add_get("/v1/dashboard/billing/subscription", static({SUBSCRIPTION!r}.encode()))
app.router.add_get("/v1/dashboard/billing/usage", static({USAGE!r}.encode()))
app.router.add_get("/probes", probes)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


class Upstream:
    """nginx (probe requests counted from its access log) or the aiohttp fallback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.log = tmp / "probes.log"
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx:
            self.kind = "nginx"
            conf = tmp / "nginx.conf"
            probe_locations = "\n".join(
                f"    location = {path} {{ access_log {self.log} brief; default_type application/json; "
                f"return 200 '{body}'; }}"
                for path, body in zip(PROBE_PATHS, (SUBSCRIPTION, USAGE))
            )
            conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  log_format brief '$request_uri';
  client_body_temp_path {tmp}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{CHAT_JSON}'; }}
{probe_locations}
  }}
}}
""")
            argv = [nginx, "-c", str(conf), "-p", str(tmp)]
        else:
            self.kind = "aiohttp (fallback)"
            script = tmp / "upstream.py"
            script.write_text(FALLBACK_UPSTREAM)
            argv = [sys.executable, str(script), str(self.port)]
        self.proc = subprocess.Popen(pinned(1, argv), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_port(self.port)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def probes(self) -> int:
        """Probe requests served so far."""
        if self.kind == "nginx":
            try:
                with open(self.log, "rb") as f:
                    return sum(1 for _ in f)
            except FileNotFoundError:
                return 0
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"GET /probes HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return int(data.split(b"\r\n\r\n", 1)[1])

    def close(self) -> None:
        stop(self.proc)


async def _seed(url: str, n: int) -> None:
    from keyrelay.stores import open_store

    store = open_store(url)
    await store.open()
    for i in range(0, n, 5000):
        batch = [f"sk-bench-{j:08d}-abcdefghijklmnopqrstuvwxyz" for j in range(i, min(n, i + 5000))]
        await store.add_keys("openai", batch, time.time())
    await store.close()


def start_gateway(tmp: Path, upstream: str, name: str, checker: str, keys: int, log_level: str) -> tuple[
        subprocess.Popen[bytes], int]:
    port = free_port()
    db = tmp / f"{name}.db"
    asyncio.run(_seed(f"sqlite:///{db}", keys))
    conf = tmp / f"{name}.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "{log_level}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n{checker}'
        f'[[tokens]]\nname = "bench"\npools = ["*"]\ntoken = "{TOKEN}"\n'
    )
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it until stopped
    proc = subprocess.Popen(
        pinned(0, [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(conf)]), stderr=log
    )
    wait_port(port, timeout=60)
    return proc, port


def checker_table(max_rate: float) -> str:
    return (
        '[pools.checker]\nenabled = true\nprobes = ["billing"]\ninterval = 1.0\nactive_interval = 3600.0\n'
        f"max_rate = {max_rate}\n"
    )


RUNS = {
    "no checker": "",
    "checker (default pacing)": checker_table(50.0),
    "checker (unpaced)": checker_table(0.0),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


IDLE_SECONDS = 3.0


def measure(
    tmp: Path, up: Upstream, name: str, args: argparse.Namespace, n: int
) -> tuple[Result, float, float, float, float]:
    """(load result, probe requests per second during the load, requests per gateway CPU second,
    gateway CPU seconds per second with no load, probe requests per second with no load)."""
    proc, port = start_gateway(tmp, up.base_url, f"{name.split()[0]}-{n}-{abs(hash(name)) % 1000}",
                               RUNS[name], args.keys, args.log_level)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        if RUNS[name]:
            first = up.probes()
            deadline = time.time() + 30
            while up.probes() == first:  # wait for the sweep to begin
                if time.time() > deadline:
                    raise RuntimeError(f"{name}: no probe reached the upstream in 30 s")
                time.sleep(0.1)
        p0, c0 = up.probes(), cpu_seconds(proc.pid)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(proc.pid) - c0) / IDLE_SECONDS
        idle_probes = (up.probes() - p0) / IDLE_SECONDS
        run_load(url, 2, args.connections)  # warm-up
        before, t0, cpu0 = up.probes(), time.perf_counter(), cpu_seconds(proc.pid)
        result = run_load(url, args.seconds, args.connections)
        took, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
        probes = (up.probes() - before) / took
        if RUNS[name] and probes == 0:
            raise RuntimeError(f"{name}: the sweep ended before the load did; use more --keys")
        return result, probes, result.rps * took / cpu, idle_cpu, idle_probes
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()
    samples: dict[str, list[tuple[Result, float, float, float, float]]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up = Upstream(tmp)
        load = "wrk" if shutil.which("wrk") else "aiohttp load generator"
        print(f"upstream: {up.kind}; load: {load}, {args.connections} connections, {args.seconds:g}s per run, "
              f"{args.rounds} rounds; {args.keys:,} keys; billing probe (2 requests per key)")
        try:
            for n in range(args.rounds):
                for name in RUNS:
                    samples[name].append(measure(tmp, up, name, args, n))
                    r, p, per_cpu, _, _ = samples[name][-1]
                    print(f"  round {n + 1} {name:26} {r.rps:8.0f} req/s {per_cpu:8.0f} req/cpu-s  "
                          f"probes {p:5.0f}/s", flush=True)
        finally:
            up.close()
    def med(name: str, i: int) -> float:
        return statistics.median(float(getattr(row[0], ("rps", "p50_ms", "p99_ms")[i]) if i < 3 else row[i - 2])
                                 for row in samples[name])

    base, base_cpu, base_idle = med("no checker", 0), med("no checker", 4), med("no checker", 5)
    print(f"\n{'':26} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'probes/s':>9} {'ratio':>6}"
          f" {'req/cpu-s':>10} {'ratio':>6}")
    for name in samples:
        print(f"{name:26} {med(name, 0):9.0f} {med(name, 1):7.2f} {med(name, 2):7.2f} {med(name, 3):9.0f}"
              f" {med(name, 0) / base:6.3f} {med(name, 4):10.0f} {med(name, 4) / base_cpu:6.3f}")
    print("\nratio to 'no checker' of the same round (median over rounds; the rounds' spread shows the noise):")
    for name in list(samples)[1:]:
        wall = [a[0].rps / b[0].rps for a, b in zip(samples[name], samples["no checker"])]
        cpu = [a[2] / b[2] for a, b in zip(samples[name], samples["no checker"])]
        print(f"  {name:26} req/s {statistics.median(wall):.3f} ({min(wall):.2f}–{max(wall):.2f}),"
              f" req/cpu-s {statistics.median(cpu):.3f} ({min(cpu):.2f}–{max(cpu):.2f})")
    print(f"\nwith no load: the gateway alone uses {base_idle * 100:.1f} % of a core")
    for name in list(samples)[1:]:
        rate = med(name, 6)
        per_probe = (med(name, 5) - base_idle) / rate if rate else float("nan")
        print(f"  {name:26} {rate:5.0f} probe requests/s, {med(name, 5) * 100:5.1f} % of a core: "
              f"{per_probe * 1e6:4.0f} µs CPU per probe request; during the load "
              f"({med(name, 3):.0f}/s) that is {med(name, 3) * per_probe * 100:.1f} % of a core")

if __name__ == "__main__":
    main()
