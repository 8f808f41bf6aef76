"""What a native-dialect request costs next to an OpenAI-dialect one (issue 13: "within 5 %"):
one keyrelay with an ``openai`` pool and an ``anthropic`` pool (``provider = "anthropic"``) over
the same upstream (nginx when installed, else the fake upstream), non-streaming — or, with
``--stream``, streaming: OpenAI's chat completion chunks (7 events, usage last) against
Anthropic's Messages stream (11 events, usage in message_start and message_delta), both answered
by nginx (the ``anthropic-sse`` pool's base URL leads to the stream).

- OpenAI: ``POST /v1/chat/completions`` with ``Authorization: Bearer <token>`` (what ``openai``
  sends), answered with a chat completion;
- Anthropic: ``POST /anthropic/v1/messages`` with ``x-api-key: <token>`` and
  ``anthropic-version`` (what ``anthropic`` sends), answered with a Messages body with ``usage``.

Each round starts a fresh gateway and loads both dialects, the order alternating round by
round (paired ratios, median), so the machine's drift hits both alike. Prints req/s and the
gateway's CPU µs per request per dialect and the median ratio anthropic/openai.

    python bench/bench_dialects.py [--seconds 4] [--connections 16] [--rounds 3] [--keys 1]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_proxy import (
    BODY,
    TOKEN,
    Result,
    cpu_seconds,
    free_port,
    pinned,
    start_upstream,
    stop,
    wait_port,
)

ANTHROPIC_BODY = '{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'
#: per dialect: the path under the gateway, the body, the headers its SDK sends the token in
_ANT_HEADERS = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
DIALECTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "openai": ("/v1/chat/completions", BODY, {"Authorization": f"Bearer {TOKEN}"}),
    "anthropic": ("/anthropic/v1/messages", ANTHROPIC_BODY, _ANT_HEADERS),
}
STREAMING: dict[str, tuple[str, str, dict[str, str]]] = {
    "openai": ("/v1/sse", BODY[:-1] + ',"stream":true}', {"Authorization": f"Bearer {TOKEN}"}),
    "anthropic": ("/anthropic-sse/v1/messages", ANTHROPIC_BODY[:-1] + ',"stream":true}', _ANT_HEADERS),
}


def write_config(upstream: str, tmp: Path, keys: int, log_level: str) -> Path:
    """One gateway, two pools over the same upstream (``upstream`` ends in ``/v1``)."""
    db = tmp / "dialects.db"
    root = upstream.removesuffix("/v1")
    conf = tmp / "dialects.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 1\nlog_level = "{log_level}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n'
        f'[[pools]]\nname = "anthropic"\nprovider = "anthropic"\nbase_url = "{root}"\n'
        f'[[pools]]\nname = "anthropic-sse"\nprovider = "anthropic"\nbase_url = "{root}/sse"\n'
        f'[[tokens]]\nname = "bench"\npools = ["*"]\ntoken = "{TOKEN}"\n'
    )
    asyncio.run(_seed(f"sqlite:///{db}", keys))
    return conf


async def _seed(url: str, n: int) -> None:
    from keyrelay.stores import open_store

    store = open_store(url)
    await store.open()
    await store.add_keys("openai", [f"sk-bench-{i:08d}-abcdefghijklmnopqrstuvwxyz" for i in range(n)], time.time())
    for pool in ("anthropic", "anthropic-sse"):
        await store.add_keys(pool, [f"sk-ant-api03-bench{i:08d}-" + "a" * 80 for i in range(n)], time.time())
    await store.close()


def start(conf: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    run_conf = tmp / f"dialects-{port}.toml"
    run_conf.write_text(conf.read_text().replace("port = 1\n", f"port = {port}\n"))
    argv = [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(run_conf)]
    with open(tmp / "keyrelay.log", "ab") as log:
        proc = subprocess.Popen(pinned(0, argv), stderr=log)
    wait_port(port)
    return proc, port


def load(url: str, body: str, headers: dict[str, str], seconds: float, connections: int, pid: int) -> Result:
    """``bench_proxy.run_load`` with the dialect's body and credential headers."""
    cpu0 = cpu_seconds(pid)
    if shutil.which("wrk"):
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        lines = ["wrk.method = 'POST'", f"wrk.body = '{body}'", "wrk.headers['Content-Type'] = 'application/json'"]
        lines += [f"wrk.headers['{k}'] = '{v}'" for k, v in headers.items()]
        script.write_text("\n".join(lines) + "\n")
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
        out = subprocess.run(pinned(1, argv), capture_output=True, text=True, check=True).stdout
        script.unlink()
        if "Non-2xx" in out:
            raise RuntimeError(f"errors during the load of {url}:\n{out}")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    else:
        token = headers.get("Authorization", "").removeprefix("Bearer ") or "-"
        extra = [f"{k}: {v}" for k, v in headers.items() if k != "Authorization"]
        argv = [sys.executable, str(HERE / "loadgen.py"), url, str(seconds), str(connections), token, body, *extra]
        out = subprocess.run(pinned(1, argv), capture_output=True, text=True, check=True).stdout
        rps = float(out.split()[0])
        requests = rps * seconds
    cpu = cpu_seconds(pid) - cpu0
    return Result(rps, float("nan"), float("nan"), cpu / requests * 1e6 if requests else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--log-level", default="warning", help="keyrelay's log level (info adds access lines)")
    ap.add_argument("--stream", action="store_true", help="streaming answers instead (SSE, both dialects)")
    args = ap.parse_args()
    dialects = STREAMING if args.stream else DIALECTS
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, upstream, kind = start_upstream(tmp)
        try:
            conf = write_config(upstream, tmp, args.keys, args.log_level)
            print(f"upstream: {kind}; {args.keys:,} key(s) per pool; {args.connections} connections, "
                  f"{args.seconds:g}s per run, {args.rounds} round(s), the order alternating; "
                  f"{'streaming' if args.stream else 'non-streaming'}")
            rows: dict[str, list[Result]] = {name: [] for name in dialects}
            for i in range(args.rounds):
                proc, port = start(conf, tmp)
                try:
                    for path, body, headers in dialects.values():  # warm-up, both
                        load(f"http://127.0.0.1:{port}{path}", body, headers, 1, args.connections, proc.pid)
                    order = list(dialects) if i % 2 == 0 else list(reversed(dialects))
                    for name in order:
                        path, body, headers = dialects[name]
                        url = f"http://127.0.0.1:{port}{path}"
                        rows[name].append(load(url, body, headers, args.seconds, args.connections, proc.pid))
                finally:
                    stop(proc)
            oa, an = rows["openai"], rows["anthropic"]
            rps = median(a.rps / b.rps for a, b in zip(an, oa, strict=True))
            cpu = median(a.cpu_us / b.cpu_us for a, b in zip(an, oa, strict=True))
            print(f"{'':10} {'req/s':>9} {'CPU µs/req':>11}")
            for name, rs in rows.items():
                print(f"{name:10} {median(r.rps for r in rs):9.0f} {median(r.cpu_us for r in rs):11.1f}")
            print(f"ratio anthropic/openai (median of paired rounds): req/s {rps:.3f}, CPU per request {cpu:.3f}")
            print("per round (req/s anthropic/openai): "
                  + ", ".join(f"{a.rps / b.rps:.3f}" for a, b in zip(an, oa, strict=True)))
        finally:
            stop(up)


if __name__ == "__main__":
    main()
