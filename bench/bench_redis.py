"""keyrelay on Redis vs on the embedded SQLite store, and ``--workers 2`` vs 1, in one run.

1. **Store.** The same gateway (1 key, a config token, access log on) on ``sqlite:///…`` and on
   ``redis://127.0.0.1:6379/0?prefix=<unique>`` (the prefix is deleted afterwards), pinned to
   core 0 as in bench_proxy.py, with nginx and wrk on core 1. Neither store is on the hot path
   (keys are chosen in memory; counters are flushed once a second; Redis adds a pub/sub
   subscription and a change-feed poll); the ratio shows what that costs. Besides requests/s,
   the gateway's own CPU time during the load is read (``/proc/<pid>/stat``): requests per CPU
   second is the steadier figure on a shared machine.
2. **Workers.** ``serve --workers 2`` (SO_REUSEPORT sockets, the default; and one shared socket)
   against one process, on the SQLite store, with *nothing pinned*: on a 2-core machine the
   gateway's processes, nginx and wrk all share both cores, so this measures what a second
   worker buys when the load generator and the upstream compete with it — a lower bound of what
   it gives on a machine where they run elsewhere.

Rounds alternate the configurations so drift (other work on the machine) spreads over all of
them; every round is printed, then the median and range of each figure and ratio.

    python bench/bench_redis.py [--seconds 6] [--connections 64] [--rounds 3] [--redis redis://127.0.0.1:6379/0]
                                [--only store|workers]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bp  # a sibling script, not a package

# starts `run_workers` with the socket mode given (the CLI always uses the default)
LAUNCH = """
import sys
from keyrelay.config import load_settings
from keyrelay.logs import setup_logging
from keyrelay.server.workers import run_workers
settings = load_settings(sys.argv[1])
setup_logging(settings.server.log_level)
sys.exit(run_workers(settings, int(sys.argv[2]), reuse_port=sys.argv[3] == "reuseport"))
"""


@dataclass
class Row:
    plain: bp.Result
    stream: bp.Result
    plain_cpu: float  # requests per CPU second of the gateway's processes
    stream_cpu: float
    busiest: float = 1.0  # the share of the requests the busiest worker served (from the access log)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (running or reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in (pid, *children(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start(upstream: str, tmp: Path, name: str, store_url: str, workers: int, mode: str, pin: bool,
          log_level: str) -> tuple[subprocess.Popen[bytes], int]:
    port = bp.free_port()
    conf = tmp / f"{name}.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "{log_level}"\n'
        f'[store]\nurl = "{store_url}"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n'
        f'[[tokens]]\nname = "bench"\npools = ["*"]\ntoken = "{bp.TOKEN}"\n'
    )
    if workers == 1:
        argv = [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(conf)]
    else:
        argv = [sys.executable, "-c", LAUNCH, str(conf), str(workers), mode]
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(bp.pinned(0, argv) if pin else argv, stderr=log)
    bp.wait_port(port)
    if workers > 1:  # the port answers once the first worker listens: wait for all of them
        end = time.time() + 30
        while "workers serving" not in (tmp / f"{name}.log").read_text():
            if time.time() > end:
                raise RuntimeError((tmp / f"{name}.log").read_text())
            time.sleep(0.1)
    return proc, port


def measure(proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace) -> Row:
    base = f"http://127.0.0.1:{port}/v1"
    bp.run_load(base + "/chat/completions", 2, args.connections)  # warm-up
    out = []
    for path in ("/chat/completions", "/sse"):
        cpu0 = cpu_seconds(proc.pid)
        r = bp.run_load(base + path, args.seconds, args.connections)
        used = cpu_seconds(proc.pid) - cpu0
        out.append((r, r.rps * args.seconds / used if used > 0 else float("nan")))
    return Row(out[0][0], out[1][0], out[0][1], out[1][1])


def busiest_share(log: Path) -> float:
    """The busiest worker's share of the access lines (workers end their lines with pid=N)."""
    counts = Counter(re.findall(r"logger=keyrelay\.access .* pid=(\d+)$", log.read_text(), re.MULTILINE))
    return max(counts.values()) / sum(counts.values()) if counts else float("nan")


def seed(url: str) -> None:
    asyncio.run(bp._seed(url, 1))


def drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(names), 1000):
            client.delete(*names[i:i + 1000])
    finally:
        client.close()


def unpinned() -> Callable[[], None]:
    """Make bench_proxy start nginx and wrk without taskset; returns the undo."""
    saved = bp.pinned
    bp.pinned = lambda cpu, argv: argv

    def undo() -> None:
        bp.pinned = saved

    return undo


def _nothing() -> None:
    pass


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--log-level", default="info", help="keyrelay's log level (access lines are info)")
    ap.add_argument("--only", choices=("store", "workers"), default=None, help="run one of the two comparisons")
    args = ap.parse_args()
    prefix = f"krbench-{uuid.uuid4().hex[:10]}"
    redis_url = f"{args.redis}?prefix={prefix}"
    results: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sqlite_url = f"sqlite:///{tmp}/bench.db"
        seed(sqlite_url)
        seed(redis_url)
        # (name, store, workers, socket mode, pinned)
        store_runs = [("sqlite, pinned", sqlite_url, 1, "", True), ("redis, pinned", redis_url, 1, "", True)]
        worker_runs = [
            ("1 process, unpinned", sqlite_url, 1, "", False),
            ("2 workers reuseport", sqlite_url, 2, "reuseport", False),
            ("2 workers shared", sqlite_url, 2, "shared", False),
        ]
        print(f"load: wrk, {args.connections} connections, {args.seconds:g}s per run, {args.rounds} rounds; "
              f"cores: {os.cpu_count()}")
        try:
            for rnd in range(args.rounds):
                groups = [(store_runs, True), (worker_runs, False)]
                for group, pin in [g for g in groups if args.only != ("workers" if g[1] else "store")]:
                    undo = _nothing if pin else unpinned()
                    up, upstream, kind = bp.start_upstream(tmp)
                    try:
                        order = group if rnd % 2 == 0 else list(reversed(group))
                        for name, url, workers, mode, pinned in order:
                            tag = f"r{rnd}-" + re.sub(r"\W+", "-", name)
                            proc, port = start(upstream, tmp, tag, url, workers, mode,
                                               pinned, args.log_level)
                            try:
                                row = measure(proc, port, args)
                            finally:
                                stop(proc)
                            if workers > 1:
                                row.busiest = busiest_share(tmp / f"{tag}.log")
                            results.setdefault(name, []).append(row)
                            print(f"round {rnd + 1} {name:22} {kind}: {fmt(row)}", flush=True)
                    finally:
                        bp.stop(up)
                        undo()
        finally:
            drop_prefix(args.redis, prefix)
    report(results)


def fmt(r: Row) -> str:
    share = "" if r.busiest == 1.0 else f" | busiest worker {r.busiest:.0%} of the requests"
    return (f"plain {r.plain.rps:6.0f} req/s p50 {r.plain.p50_ms:5.2f} p99 {r.plain.p99_ms:6.2f} ms "
            f"({r.plain_cpu:5.0f} req/cpu-s) | stream {r.stream.rps:6.0f} req/s p50 {r.stream.p50_ms:5.2f} "
            f"p99 {r.stream.p99_ms:6.2f} ms ({r.stream_cpu:5.0f} req/cpu-s){share}")


def spread(xs: list[float], digits: int = 0) -> str:
    return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}–{max(xs):.{digits}f}]"


def report(results: dict[str, list[Row]]) -> None:
    print("\nmedian [min–max] over rounds")
    print(f"{'':22} {'plain req/s':>20} {'p50 ms':>18} {'p99 ms':>18} {'stream req/s':>20} {'p50 ms':>18} {'p99 ms':>18}")
    for name, rows in results.items():
        print(
            f"{name:22} {spread([r.plain.rps for r in rows]):>20} {spread([r.plain.p50_ms for r in rows], 2):>18} "
            f"{spread([r.plain.p99_ms for r in rows], 2):>18} {spread([r.stream.rps for r in rows]):>20} "
            f"{spread([r.stream.p50_ms for r in rows], 2):>18} {spread([r.stream.p99_ms for r in rows], 2):>18}"
        )

    def ratios(a: str, b: str) -> None:
        if a not in results or b not in results:
            return
        pairs = list(zip(results[a], results[b]))
        print(
            f"{a} / {b}: plain {spread([x.plain.rps / y.plain.rps for x, y in pairs], 3)}, "
            f"stream {spread([x.stream.rps / y.stream.rps for x, y in pairs], 3)}; per CPU second: plain "
            f"{spread([x.plain_cpu / y.plain_cpu for x, y in pairs], 3)}, "
            f"stream {spread([x.stream_cpu / y.stream_cpu for x, y in pairs], 3)}"
        )

    print()
    ratios("redis, pinned", "sqlite, pinned")
    ratios("2 workers reuseport", "1 process, unpinned")
    ratios("2 workers shared", "1 process, unpinned")
    ratios("2 workers reuseport", "2 workers shared")


if __name__ == "__main__":
    main()
