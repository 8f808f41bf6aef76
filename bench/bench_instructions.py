"""CPU instructions per request: keyrelay vs the bare aiohttp proxy, counted by valgrind.

Requests per second swing with whatever else the machine runs; instruction counts do not.
Each proxy runs under ``valgrind --tool=callgrind``; after a warm-up its counters are zeroed,
a fixed number of requests go through it, and the instructions it executed are read back.
The same code gives the same count to within ~1k, so an A/B of one change is quick and
repeatable (``--keyrelay-only``); changes under ~5k are within what code layout alone moves.

The ratio baseline / keyrelay is a pessimistic stand-in for the throughput ratio: it counts
user-space instructions only, while both proxies spend the same kernel time on their sockets
(about a fifth of their CPU time, see ``bench_proxy.py``), and it weighs every instruction
alike. On 2026-11-28 it read 0.91 / 0.88 while req/s and CPU time per request read 0.98 / 0.98.

    python bench/bench_instructions.py [--requests 2000] [--keys 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import BODY, TOKEN, free_port, start_upstream, stop, wait_port, write_keyrelay_config


async def _load(url: str, n: int, concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    left = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=BODY, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status} from {url}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))


def load(url: str, n: int, concurrency: int = 8) -> None:
    asyncio.run(_load(url, n, concurrency))


def _callgrind(pid: int, what: str, tmp: Path) -> None:
    subprocess.run(["callgrind_control", *what.split(), str(pid)], cwd=tmp, capture_output=True, check=True)


def _instructions(tmp: Path, pid: int) -> int:
    """Instructions in the newest dump of ``pid``."""
    dumps = sorted(tmp.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
    text = dumps[-1].read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return int(m.group(1))


def count(argv: list[str], port: int, tmp: Path, paths: list[str], n: int) -> dict[str, float]:
    proc = subprocess.Popen(
        # instrumentation off until the gateway listens: start-up (imports, loading 100,000 keys)
        # runs at valgrind's bare speed, not callgrind's
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/callgrind.out.%p", *argv],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        wait_port(port, timeout=300)
        _callgrind(proc.pid, "-i on", tmp)
        out: dict[str, float] = {}
        for path in paths:
            url = f"http://127.0.0.1:{port}/v1{path}"
            load(url, max(200, n // 5))  # warm-up: caches, connections, lazy imports
            _callgrind(proc.pid, "-z", tmp)
            load(url, n)
            _callgrind(proc.pid, "-d", tmp)
            time.sleep(0.5)
            out[path] = _instructions(tmp, proc.pid) / n
        return out
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--engine", default="lean", choices=("aiohttp", "lean"), help="keyrelay's [server] engine")
    ap.add_argument("--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)")
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    ap.add_argument("--paths", default="/chat/completions,/sse", help="comma-separated paths under /v1")
    ap.add_argument("--keyrelay-only", action="store_true", help="skip the baseline (for quick A/B of a change)")
    args = ap.parse_args()
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, upstream, kind = start_upstream(tmp)
        try:
            port = free_port()
            base = {p: float("nan") for p in paths} if args.keyrelay_only else count([sys.executable, str(HERE / "baseline_proxy.py"), str(port), upstream], port, tmp, paths, args.requests)
            port = free_port()
            conf = write_keyrelay_config(upstream, tmp, args.keys, args.log_level, port, args.engine)
            kr = count([sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(conf)], port, tmp, paths, args.requests)
        finally:
            stop(up)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("callgrind.out.*"):
                shutil.copy(f, args.keep / f.name)
    print(f"upstream: {kind}; {args.requests} requests per run, {args.keys:,} key(s)")
    print(f"{'':20} {'bare aiohttp proxy':>20} {'keyrelay':>12} {'ratio':>7}")
    for path in paths:
        print(f"{path:20} {base[path] / 1000:17.0f} k {kr[path] / 1000:9.0f} k {base[path] / kr[path]:7.3f}")
    print("(instructions per request; ratio = baseline / keyrelay, higher is better, 1.0 = no overhead)")


if __name__ == "__main__":
    main()
