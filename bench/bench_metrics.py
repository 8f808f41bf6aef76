"""What ``/metrics`` costs the gateway: keyrelay with ``[metrics] enabled = true`` vs ``false``,
in the same run, over the same upstream (nginx when installed, else the fake upstream).

Three figures:

- **instructions per request** under valgrind (``--instructions``; the repeatable one: the
  same code counts the same to about 1k instructions, whatever else the machine runs);
- **CPU time per request and req/s** under a load, the two configurations alternating round
  by round (paired ratios, median), so the machine's drift hits both alike;
- **a scrape's time** with ``--keys`` keys in the pool (the exposition is built at scrape time).

    python bench/bench_metrics.py [--seconds 4] [--connections 16] [--rounds 3] [--keys 1]
                                  [--instructions] [--requests 2000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import (
    free_port,
    pinned,
    run_load,
    start_upstream,
    stop,
    wait_port,
    write_keyrelay_config,
)


def configs(upstream: str, tmp: Path, keys: int, log_level: str) -> dict[str, Path]:
    """The same gateway twice: metrics on and metrics off (ports are set per start)."""
    on = write_keyrelay_config(upstream, tmp, keys, log_level, 1)
    # the store is polled by time, not per request: under valgrind a run that the machine slows
    # down would be charged more polls per request (seen: ±2.5 % between the two configurations)
    on.write_text(on.read_text().replace("[server]\n", "[server]\nsync_interval = 60.0\n", 1))
    off = tmp / f"bench-{keys}-metrics-off.toml"
    off.write_text(on.read_text() + "[metrics]\nenabled = false\n")
    return {"metrics on": on, "metrics off": off}


def with_port(conf: Path, port: int) -> Path:
    out = conf.with_name(f"{conf.stem}-{port}.toml")
    out.write_text(conf.read_text().replace("port = 1\n", f"port = {port}\n"))
    return out


def start(conf: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(with_port(conf, port))]
    with open(tmp / "keyrelay.log", "ab") as log:
        proc = subprocess.Popen(pinned(0, argv), stderr=log)
    wait_port(port)
    return proc, port


def scrape_ms(port: int, n: int = 20) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            r.read()
        times.append((time.perf_counter() - t) * 1000)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--log-level", default="warning", help="keyrelay's log level (info adds access lines)")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per request (valgrind)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per instruction count")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, upstream, kind = start_upstream(tmp)
        try:
            confs = configs(upstream, tmp, args.keys, args.log_level)
            print(f"upstream: {kind}; {args.keys:,} key(s); {args.connections} connections, {args.seconds:g}s per run, "
                  f"{args.rounds} round(s), the order alternating")
            rows: dict[str, list[tuple[float, float]]] = {name: [] for name in confs}
            for i in range(args.rounds):
                order = list(confs) if i % 2 == 0 else list(reversed(confs))
                for name in order:
                    proc, port = start(confs[name], tmp)
                    try:
                        url = f"http://127.0.0.1:{port}/v1/chat/completions"
                        run_load(url, 1, args.connections)  # warm-up
                        r = run_load(url, args.seconds, args.connections, proc.pid)
                        rows[name].append((r.rps, r.cpu_us))
                        if name == "metrics on" and i == 0:
                            print(f"a scrape of /metrics: {scrape_ms(port):.2f} ms (median of 20)")
                    finally:
                        stop(proc)
            on, off = rows["metrics on"], rows["metrics off"]
            rps = median(a[0] / b[0] for a, b in zip(on, off, strict=True))
            cpu = median(a[1] / b[1] for a, b in zip(on, off, strict=True))
            print(f"{'':12} {'req/s':>9} {'CPU µs/req':>11}")
            for name, rs in rows.items():
                print(f"{name:12} {median(x[0] for x in rs):9.0f} {median(x[1] for x in rs):11.1f}")
            print(f"ratio on/off (median of paired rounds): req/s {rps:.3f}, CPU per request {cpu:.3f}")
            print("per round (req/s on/off): " + ", ".join(f"{a[0] / b[0]:.3f}" for a, b in zip(on, off, strict=True)))
            if args.instructions:
                if not shutil.which("valgrind"):
                    raise SystemExit("valgrind is not installed (apt-get install valgrind)")
                from bench_instructions import count

                counted = {}
                for name, conf in confs.items():
                    port = free_port()
                    argv = [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(with_port(conf, port))]
                    counted[name] = count(argv, port, tmp, ["/chat/completions", "/sse"], args.requests)
                print("instructions per request (valgrind):")
                for path in ("/chat/completions", "/sse"):
                    a, b = counted["metrics on"][path], counted["metrics off"][path]
                    print(f"  {path:20} on {a / 1000:7.1f} k   off {b / 1000:7.1f} k   on/off {a / b:.4f}")
        finally:
            stop(up)


if __name__ == "__main__":
    main()
