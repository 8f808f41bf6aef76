"""Unauthenticated resource exhaustion against a real ``keyrelay serve`` (loopback only).

Attackers: ``--huge`` connections that each send header lines without end (~800 KB, never a
whole head), and ``--idle`` connections that send half a request line and then nothing. While
they run, a normal client sends chat completions through the gateway (a keep-alive session,
``--concurrency`` at a time) to a fake upstream. Measured: the gateway's resident memory (peak,
sampled every 50 ms from /proc), the normal requests' latency (p50/p99) and failures, and for
every attacker socket how long after its first byte the gateway closed it (the judge: within
the configured ``header_timeout``).

    python bench/bench_exhaustion.py [--huge 1000] [--idle 2000] [--header-timeout 10] [--json]

Prints one JSON object with ``--json`` (tests/e2e/test_exhaustion.py runs a scaled-down
version that way). Bounded: every socket is closed and the gateway stopped at the end, at most
``header_timeout`` + 30 s after the attack starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

KEY = "sk-bench-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
TOKEN = "kr-bench-exhaustion-token-000000000001"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


_UPSTREAM = f"""
import asyncio, sys
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream
async def main():
    await FakeUpstream({{{KEY!r}: Behavior.OK}}).start(port=int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Attack:
    def __init__(self, port: int) -> None:
        self.port = port
        self.close_after: dict[str, list[float]] = {"huge": [], "idle": []}  # first byte → the gateway's close
        self.open_at_end = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return None
        self.writers.append(w)
        return r, w

    async def _wait_closed(self, r: asyncio.StreamReader, started: float, limit: float, kind: str) -> None:
        try:
            while True:
                chunk = await asyncio.wait_for(r.read(65536), max(0.01, started + limit - time.monotonic()))
                if not chunk:
                    break
        except TimeoutError:
            self.open_at_end += 1
            return
        except OSError:
            pass
        self.close_after[kind].append(time.monotonic() - started)

    async def huge(self, limit: float) -> None:
        conn = await self._connect()
        if conn is None:
            return
        r, w = conn
        started = time.monotonic()
        waiter = asyncio.create_task(self._wait_closed(r, started, limit, "huge"))
        try:
            w.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            for i in range(200):  # 200 lines of 4 KB: ~800 KB, never finished
                if waiter.done():
                    break
                w.write(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000))
                await w.drain()
        except OSError:
            pass
        await waiter

    async def idle(self, limit: float) -> None:
        conn = await self._connect()
        if conn is None:
            return
        r, w = conn
        started = time.monotonic()
        try:
            w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            pass
        await self._wait_closed(r, started, limit, "idle")

    def close(self) -> None:
        for w in self.writers:
            w.close()


async def _normal(url: str, stop: asyncio.Event, concurrency: int) -> tuple[list[float], int]:
    lat: list[float] = []
    when: list[float] = []
    failures = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:

        async def one() -> None:
            nonlocal failures
            for _ in range(3):  # warm up: connections made, code paths run once
                async with s.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
                    await r.read()
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    async with s.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                lat.append(time.perf_counter() - t)
                when.append(t)
                if not ok:
                    failures += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    if os.environ.get("BENCH_SLOW"):
        t0 = when[0] if when else 0
        slow = sorted(zip(lat, when), reverse=True)[:15]
        print([(round(a * 1000), round(b - t0, 2)) for a, b in slow], file=sys.stderr)
    return lat, failures


async def _client_main(url: str, seconds: float, concurrency: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    lat, failures = await _normal(url, stop, concurrency)
    print(json.dumps({"lat": lat, "failures": failures}))


class Gateway:
    """The fake upstream and `keyrelay serve` in processes of their own (set up without a loop)."""

    def __init__(self, header_timeout: float) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        tmp = self.tmp.name
        up_port, self.port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.up_url = f"http://127.0.0.1:{up_port}/v1"
        self.upstream = subprocess.Popen([sys.executable, "-c", _UPSTREAM, str(up_port)])
        conf = Path(tmp) / "keyrelay.toml"
        conf.write_text(
            f'[server]\nport = {self.port}\nheader_timeout = {header_timeout}\nlog_level = "warning"\n'
            f'[store]\nurl = "sqlite:///{tmp}/k.db"\n'
            f'[[pools]]\nname = "openai"\nbase_url = "{self.up_url}"\n'
            f'[[tokens]]\nname = "bench"\npools = ["*"]\ntoken = "{TOKEN}"\n'
        )
        cli = [sys.executable, "-m", "keyrelay.cli.main"]
        subprocess.run([*cli, "keys", "add", "--pool", "openai", KEY, "--config", str(conf)],
                       check=True, capture_output=True, timeout=60)
        self.log_path = Path(tmp) / "gateway.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([*cli, "serve", "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> str:
        """Stop both; the gateway's output."""
        for p in (self.proc, self.upstream):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        text = self.log_path.read_text(errors="replace")
        self.tmp.cleanup()
        return text


async def _ready(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(gw.up_url + "/models", headers={"Authorization": f"Bearer {KEY}"}) as r0, \
                        s.get(gw.url + "/healthz") as r:
                    await r0.read()
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not start")


async def _attack(gw: Gateway, huge: int, idle: int, header_timeout: float, concurrency: int
                  ) -> tuple[dict[str, float], list[float], int, Attack]:
    await _ready(gw)
    pid = gw.proc.pid
    rss = {"before": _rss_mb(pid)}
    peak = rss["before"]
    # the normal client runs in a process of its own: the attackers' load must not count as
    # the gateway's latency
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", gw.url, "--seconds", str(header_timeout + 4.0),
        "--concurrency", str(concurrency), stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # a baseline of normal traffic first
    attack = Attack(gw.port)
    limit = header_timeout + 5.0
    tasks = []
    for i in range(max(huge, idle)):  # ramp up: both kinds interleaved
        if i < huge:
            tasks.append(asyncio.create_task(attack.huge(limit)))
        if i < idle:
            tasks.append(asyncio.create_task(attack.idle(limit)))
        if i % 100 == 99:
            await asyncio.sleep(0.02)
            peak = max(peak, _rss_mb(pid))
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.05)
        peak = max(peak, _rss_mb(pid))
    out, _ = await client.communicate()
    got = json.loads(out)
    rss["peak"], rss["after"] = peak, _rss_mb(pid)
    attack.close()
    return rss, got["lat"], got["failures"], attack


def run(huge: int, idle: int, header_timeout: float, concurrency: int) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gw = Gateway(header_timeout)
    try:
        rss, lat, failures, attack = asyncio.run(_attack(gw, huge, idle, header_timeout, concurrency))
    finally:
        gateway_log = gw.stop()
    lat.sort()
    closes = sorted(attack.close_after["huge"] + attack.close_after["idle"])
    huge_closes = sorted(attack.close_after["huge"])
    return {
        "huge": huge,
        "idle": idle,
        "header_timeout": header_timeout,
        "rss_mb_before": round(rss["before"], 1),
        "rss_mb_peak": round(rss["peak"], 1),
        "rss_mb_after": round(rss["after"], 1),
        "normal_requests": len(lat),
        "normal_failures": failures,
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
        "attackers_closed": len(closes),
        "attackers_open_at_end": attack.open_at_end,
        "close_max_s": round(closes[-1], 2) if closes else None,
        "close_median_s": round(statistics.median(closes), 2) if closes else None,
        "huge_close_max_s": round(huge_closes[-1], 2) if huge_closes else None,
        "tracebacks": gateway_log.count("Traceback"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--huge", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run the normal client against this URL
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        asyncio.run(_client_main(a.client, a.seconds, a.concurrency))
        return
    out = run(a.huge, a.idle, a.header_timeout, a.concurrency)
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
