"""Gateway hot-path benchmark: keyrelay vs a bare aiohttp pass-through proxy and vs the lean
reference pass-through (``lean_passthrough.py``: asyncio protocols + httptools), in one run.

Layout on a 2-core machine: the proxy under test is pinned to core 0; the upstream (nginx when
installed, else keyrelay's fake upstream) and the load generator (wrk when installed, else an
aiohttp client) share core 1. Each proxy gets the same load: non-streaming chat completions and
streaming ones (SSE), then keyrelay again with 10,000 keys in its pool.

Prints requests/s and p50/p99 latency for each (and what each adds to the upstream's own p50, measured direct in
the same round: at ``--connections 1``, issue 16's latency figure), and keyrelay's ratio to the baseline: the
median over several rounds of the ratio within a round, as the machine's speed drifts; then
keyrelay's ratios to the lean reference (req/s, and CPU time per request). Also
each proxy's CPU time per request (from /proc) and how busy its core was: near 1.0 when the
proxy, not the load generator or the upstream, set the pace.

    python bench/bench_proxy.py [--seconds 8] [--connections 64] [--rounds 3] [--log-level info] [--engine lean]

With ``--big-pool`` (or ``--big-pool 100,100000``), instead: keyrelay with 100 keys and with
100,000 keys, streaming and not, in the same run (the order alternates per round), and the
ratios 100,000/100 with each size's p99 (docs/design.md, "100,000 keys").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "kr-bench-token-0123456789"

CHAT_JSON = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
)
_CHUNK = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    '"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}\\n\\n'
)
SSE = _CHUNK * 5 + (  # as OpenAI streams with stream_options.include_usage
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[],'
    '"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}\\n\\ndata: [DONE]\\n\\n'
)
#: Anthropic's Messages answer (docs.anthropic.com/en/api/messages, "Response"), for ``bench_dialects.py``
MESSAGES_JSON = (
    '{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-haiku-4-5",'
    '"content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn",'
    '"stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"output_tokens":9}}'
)
#: Anthropic's Messages stream (docs.anthropic.com/en/api/messages-streaming, "Basic streaming
#: request"): message_start (input tokens), a text block of five deltas, message_delta (output
#: tokens), message_stop; for ``bench_dialects.py --stream``
_ANT_DELTA = (
    'event: content_block_delta\\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"Hello"}}\\n\\n'
)
MESSAGES_SSE = (
    'event: message_start\\ndata: {"type":"message_start","message":{"id":"msg_bench","type":"message",'
    '"role":"assistant","content":[],"model":"claude-haiku-4-5","stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":9,"output_tokens":1}}}\\n\\n'
    'event: content_block_start\\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\\n\\n'
    + _ANT_DELTA * 5
    + 'event: content_block_stop\\ndata: {"type":"content_block_stop","index":0}\\n\\n'
    'event: message_delta\\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"output_tokens":5}}\\n\\n'
    'event: message_stop\\ndata: {"type":"message_stop"}\\n\\n'
)
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = float("nan")  #: the proxy's CPU time (user + system, all threads) per request


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- upstream ------------------------------------------------------------------------------


def start_upstream(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        conf = tmp / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{CHAT_JSON}'; }}
    location = /v1/sse {{ default_type text/event-stream; return 200 '{SSE}'; }}
    location = /v1/messages {{ default_type application/json; return 200 '{MESSAGES_JSON}'; }}
    location = /sse/v1/messages {{ default_type text/event-stream; return 200 '{MESSAGES_SSE}'; }}
  }}
}}
"""
        )
        proc = subprocess.Popen(pinned(1, [nginx, "-c", str(conf), "-p", str(tmp)]), stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc, f"http://127.0.0.1:{port}/v1", "nginx"
    proc = subprocess.Popen(
        pinned(1, [sys.executable, str(HERE / "upstream.py"), str(port)]), stdout=subprocess.DEVNULL
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}/v1", "keyrelay fake upstream (aiohttp)"


# -- load ----------------------------------------------------------------------------------


def run_load(url: str, seconds: float, connections: int, pid: int | None = None) -> Result:
    """Load ``url``; with ``pid`` (the proxy), also its CPU time per request."""
    cpu0 = cpu_seconds(pid) if pid else float("nan")
    r, requests = _load(url, seconds, connections)
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")
    return Result(r.rps, r.p50_ms, r.p99_ms, cpu / requests * 1e6 if requests else float("nan"))


def _load(url: str, seconds: float, connections: int) -> tuple[Result, float]:
    """(figures, number of requests)"""
    if shutil.which("wrk"):
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
            f"wrk.headers['Content-Type'] = 'application/json'\nwrk.headers['Authorization'] = 'Bearer {TOKEN}'\n"
        )
        out = subprocess.run(
            pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]),
            capture_output=True, text=True, check=True,
        ).stdout
        script.unlink()
        if "Non-2xx" in out:
            raise RuntimeError(f"errors during the load:\n{out}")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        return Result(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%")), requests
    out = subprocess.run(
        pinned(1, [sys.executable, str(HERE / "loadgen.py"), url, str(seconds), str(connections), TOKEN, BODY]),
        capture_output=True, text=True, check=True,
    ).stdout
    rps, p50, p99 = (float(x) for x in out.split())
    return Result(rps, p50, p99), rps * seconds


def _wrk_ms(out: str, pct: str) -> float:
    m = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


# -- proxies -------------------------------------------------------------------------------


def start_baseline(upstream: str, script: str = "baseline_proxy.py") -> tuple[subprocess.Popen[bytes], int]:
    """A reference proxy (``baseline_proxy.py`` or ``lean_passthrough.py``) on core 0."""
    port = free_port()
    proc = subprocess.Popen(  # its stderr: tracebacks when wrk drops connections at the end of a run
        pinned(0, [sys.executable, str(HERE / script), str(port), upstream]), stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return proc, port


def write_keyrelay_config(upstream: str, tmp: Path, keys: int, log_level: str, port: int, engine: str = "lean") -> Path:
    """A config for a keyrelay on ``port`` over ``keys`` seeded keys (SQLite in ``tmp``), on ``engine``."""
    db = tmp / f"bench-{keys}.db"
    conf = tmp / f"bench-{keys}-{engine}.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "{log_level}"\nengine = "{engine}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n'
        f'[[tokens]]\nname = "bench"\npools = ["*"]\ntoken = "{TOKEN}"\n'
    )
    if not db.exists():
        asyncio.run(_seed(f"sqlite:///{db}", keys))
    return conf


def start_keyrelay(upstream: str, tmp: Path, keys: int, log_level: str, engine: str = "lean") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = write_keyrelay_config(upstream, tmp, keys, log_level, port, engine)
    with open(tmp / f"keyrelay-{keys}.log", "wb") as log:
        proc = subprocess.Popen(pinned(0, [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(conf)]), stderr=log)
    wait_port(port, 20.0 + keys / 2000)  # loading 100,000 keys takes seconds
    return proc, port


async def _seed(url: str, n: int) -> None:
    from keyrelay.stores import open_store

    store = open_store(url)
    await store.open()
    await store.add_keys("openai", [f"sk-bench-{i:08d}-abcdefghijklmnopqrstuvwxyz" for i in range(n)], time.time())
    await store.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(port: int, pid: int, args: argparse.Namespace) -> tuple[Result, Result]:
    base = f"http://127.0.0.1:{port}/v1"
    run_load(base + "/chat/completions", 2, args.connections)  # warm-up
    plain = run_load(base + "/chat/completions", args.seconds, args.connections, pid)
    stream = run_load(base + "/sse", args.seconds, args.connections, pid)
    return plain, stream


def one_round(upstream: str, tmp: Path, args: argparse.Namespace) -> dict[str, tuple[Result, Result]]:
    """Baseline, lean reference, keyrelay with 1 key and with 10,000 keys, one after the other."""
    out: dict[str, tuple[Result, Result]] = {}
    # the upstream without a proxy: what each proxy adds to its latency
    out[DIRECT] = (run_load(upstream + "/chat/completions", args.seconds, args.connections),
                   run_load(upstream + "/sse", args.seconds, args.connections))
    for name, script in ((BASE, "baseline_proxy.py"), (LEAN, "lean_passthrough.py")):
        p, port = start_baseline(upstream, script)
        try:
            out[name] = measure(port, p.pid, args)
        finally:
            stop(p)
    tag = "" if args.engine == "aiohttp" else f" ({args.engine})"
    for n in (1, 10_000):
        p, port = start_keyrelay(upstream, tmp, n, args.log_level, args.engine)
        try:
            out[f"keyrelay{tag}, {n:,} key{'s' if n > 1 else ''}"] = measure(port, p.pid, args)
        finally:
            stop(p)
    return out


def big_pool(upstream: str, tmp: Path, args: argparse.Namespace) -> None:
    """``--big-pool``: keyrelay with a small and a big pool, streaming and not, paired per round."""
    small, big = (int(n) for n in args.big_pool.split(","))
    names = {small: f"keyrelay, {small:,} keys", big: f"keyrelay, {big:,} keys"}
    for n in (small, big):  # seeded once (bulk import), outside the measured rounds
        t0 = time.perf_counter()
        write_keyrelay_config(upstream, tmp, n, args.log_level, 0)
        print(f"seeded {n:,} keys in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)
    rounds: list[dict[str, tuple[Result, Result]]] = []
    for i in range(args.rounds):
        out: dict[str, tuple[Result, Result]] = {}
        for n in (small, big) if i % 2 == 0 else (big, small):  # neither size always runs first
            p, port = start_keyrelay(upstream, tmp, n, args.log_level, args.engine)
            try:
                out[names[n]] = measure(port, p.pid, args)
            finally:
                stop(p)
        rounds.append(out)
        per = "   ".join(f"{k}: {v[0].rps:.0f}/{v[1].rps:.0f} req/s, p99 {v[0].p99_ms:.1f}/{v[1].p99_ms:.1f} ms"
                         for k, v in out.items())
        print(f"round {i + 1} (non-streaming/streaming): {per}", flush=True)
    print(f"\nmedians over {len(rounds)} round(s); load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'':26} {'non-streaming':>34}   {'streaming':>34}")
    print(f"{'':26} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu µs':>8}   {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu µs':>8}")
    for name in names.values():
        cells = []
        for j in (0, 1):
            rs = [r[name][j] for r in rounds]
            cells.append(f"{median([x.rps for x in rs]):9.0f} {median([x.p50_ms for x in rs]):7.2f} "
                         f"{median([x.p99_ms for x in rs]):7.2f} {median([x.cpu_us for x in rs]):8.1f}")
        print(f"{name:26} {cells[0]}   {cells[1]}")
    a, b = names[small], names[big]
    for j, kind in ((0, "non-streaming"), (1, "streaming")):
        ratios = [r[b][j].rps / r[a][j].rps for r in rounds]
        p99s = [r[b][j].p99_ms / r[a][j].p99_ms for r in rounds]
        cpus = [r[b][j].cpu_us / r[a][j].cpu_us for r in rounds]
        print(f"{kind:>14} {big:,}/{small:,} keys: throughput {median(ratios):.3f}x "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}), p99 {median(p99s):.2f}x "
              f"(rounds {', '.join(f'{x:.2f}' for x in p99s)}), CPU per request {median(cpus):.3f}x")


BASE = "bare aiohttp proxy"
LEAN = "lean reference"
DIRECT = "upstream, direct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all three; ratios are paired per round")
    ap.add_argument("--log-level", default="info", help="keyrelay's log level (access lines are info)")
    ap.add_argument("--big-pool", nargs="?", const="100,100000", metavar="SMALL,BIG",
                    help="compare keyrelay with SMALL and BIG keys (default 100,100000) instead")
    ap.add_argument("--engine", default="lean", choices=("aiohttp", "lean"), help="keyrelay's [server] engine")
    args = ap.parse_args()
    if args.big_pool:
        with tempfile.TemporaryDirectory() as d:
            up, upstream, _ = start_upstream(Path(d))
            try:
                big_pool(upstream, Path(d), args)
            finally:
                stop(up)
        return
    rounds: list[dict[str, tuple[Result, Result]]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, upstream, kind = start_upstream(tmp)
        load = "wrk" if shutil.which("wrk") else "aiohttp load generator"
        print(f"upstream: {kind}; load: {load}, {args.connections} connections, {args.seconds:g}s per run, "
              f"{args.rounds} round(s); proxies pinned to core 0 (cores: {os.cpu_count()})")
        try:
            for _ in range(args.rounds):
                rounds.append(one_round(upstream, tmp, args))
        finally:
            stop(up)
    names = [n for n in rounds[0] if n != DIRECT]
    print(f"\nmedians over {len(rounds)} round(s); ratio = median of the per-round ratios to the baseline")
    print(f"{'':24} {'non-streaming':>32}   {'streaming':>32}")
    print(f"{'':24} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}   {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}")
    for name in names:
        cells = []
        for i in (0, 1):
            rs = [r[name][i] for r in rounds]
            ratio = median([r[name][i].rps / r[BASE][i].rps for r in rounds])
            cells.append(f"{median([x.rps for x in rs]):9.0f} {median([x.p50_ms for x in rs]):7.2f} "
                         f"{median([x.p99_ms for x in rs]):7.2f} {ratio:6.2f}")
        print(f"{name:24} {cells[0]}   {cells[1]}")
    print("\nper-round ratios to the baseline (non-streaming / streaming):")
    for name in names[1:]:
        per = ", ".join(f"{r[name][0].rps / r[BASE][0].rps:.2f}/{r[name][1].rps / r[BASE][1].rps:.2f}" for r in rounds)
        print(f"  {name:22} {per}")
    print("\nthe proxy's CPU time per request (user + system, all its threads) and how busy its core was")
    print("(near 1.00: the proxy was the bottleneck, as the ratios above assume):")
    for name in names:
        cells = []
        for i in (0, 1):
            cpu = median([r[name][i].cpu_us for r in rounds])
            busy = median([r[name][i].cpu_us * r[name][i].rps / 1e6 for r in rounds])
            cells.append(f"{cpu:6.1f} µs, core {busy:4.2f} busy")
        print(f"  {name:22} non-streaming {cells[0]}   streaming {cells[1]}")
    print("\nkeyrelay against the lean reference (median of paired rounds; req/s ratio, then CPU per request ratio):")
    for name in names[2:]:
        rps = [median([r[name][i].rps / r[LEAN][i].rps for r in rounds]) for i in (0, 1)]
        cpu = [median([r[name][i].cpu_us / r[LEAN][i].cpu_us for r in rounds]) for i in (0, 1)]
        print(f"  {name:22} non-streaming {rps[0]:.2f}x req/s, {cpu[0]:.2f}x CPU   "
              f"streaming {rps[1]:.2f}x req/s, {cpu[1]:.2f}x CPU")
    print(f"\np50 latency each proxy adds to the upstream's own ({median([r[DIRECT][0].p50_ms for r in rounds]):.3f} / "
          f"{median([r[DIRECT][1].p50_ms for r in rounds]):.3f} ms direct), median of paired rounds, non-streaming / streaming:")
    for name in names:
        added = [median([r[name][i].p50_ms - r[DIRECT][i].p50_ms for r in rounds]) for i in (0, 1)]
        print(f"  {name:22} {added[0]:.3f} / {added[1]:.3f} ms")
    one, many = names[2], names[3]
    sel = [median([r[many][i].rps / r[one][i].rps for r in rounds]) for i in (0, 1)]
    print(f"\nselection from 10,000 keys vs 1 key (median of paired rounds): non-streaming {sel[0]:.3f}x, "
          f"streaming {sel[1]:.3f}x")


if __name__ == "__main__":
    main()
