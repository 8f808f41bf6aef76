"""Mixed-fault soak of a real ``keyrelay serve`` (issue 16: "0 unexpected client errors, RSS flat").

On 127.0.0.1 only: keyrelay's fake upstream (``soak_upstream.py``, a process of its own) holds a
pool of ``--keys`` keys, a mix of them bad in different ways (invalid, deactivated, spent,
rate-limited with Retry-After, flaky 5xx, slow, hanging, streams cut mid-way, first stream
event an error, connections reset) and some switching during the run (good keys go invalid,
spent or rate-limited; rate-limited and flaky ones recover). The gateway (``--engine``, default
lean) runs in front of it with ``max_attempts = 6`` and a 3 s read timeout. ``--concurrency``
clients send mixed traffic for ``--seconds``: chat completions and SSE streams over keep-alive
and fresh connections, ``/v1/models``, clients hanging up mid-request and mid-stream, and bad
input (an unknown token, malformed JSON, a 10 KB header line).

Every outcome is classified. Expected: a whole, well-formed 200 (a stream ends with
``data: [DONE]``); bad input answered with a 4xx; a client's own hang-up; a stream cut by the
upstream (its key is a ``stream_cut`` one, per ``x-keyrelay-key``). UNEXPECTED: anything else
on a well-formed request (a 5xx, a 4xx, a reset, a timeout, a stream ending without its last
event, a broken body), bad input answered otherwise than 4xx, a seeded key's fragment in any
answer, a traceback in the gateway's log, a seeded key's fragment in the log or in
``keys list --json``, and a key that was always good not active at the end.

The gateway's RSS is sampled every ``--sample`` seconds: start (after ``--warmup``), peak, end,
and the slope over the second half; flat = end within max(10 %, 5 MB) of the start.

    python bench/bench_soak.py [--seconds 180] [--engine lean|aiohttp] [--keys 200] [--json]

Exits 1 on any unexpected outcome or RSS growth beyond the threshold (``--no-rss-check`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from keyrelay.stores import key_id_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_exhaustion import _rss_mb
from bench_proxy import free_port, stop, wait_port
from soak_checks import Leaks, answer_problem, gateway_log, rss_summary, stream_verdict
from soak_upstream import Plan, make_plan

TOKEN = "kr-soak-token-5b2f0c81d9e34a7f"
CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
STREAM = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true}'
BAD_JSON = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hel'
#: request kinds and their weights
KINDS = {
    "chat": 28, "chat_new_conn": 10, "stream": 20, "stream_new_conn": 6, "stream_hangup": 7,
    "chat_hangup": 5, "models": 4, "bad_token": 8, "bad_json": 8, "big_header": 4,
}
BAD_INPUT = ("bad_token", "bad_json", "big_header")
TIMEOUT = 30.0  # per well-formed request: 6 attempts of a hanging key (3 s each) fit in it
class Gateway:
    """``keyrelay serve`` over the plan's keys (imported with ``keyrelay keys import``)."""

    def __init__(self, tmp: Path, upstream: str, plan: Plan, engine: str, log_level: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = tmp / "soak.toml"
        self.conf.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nlog_level = "{log_level}"\nengine = "{engine}"\n'
            f'[store]\nurl = "sqlite:///{tmp}/soak.db"\n'
            f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n'
            f"[pools.retry]\nmax_attempts = 6\nread_timeout = 3.0\nconnect_timeout = 3.0\n"
            f'[[tokens]]\nname = "soak"\npools = ["*"]\ntoken = "{TOKEN}"\n'
        )
        keyfile = tmp / "keys.txt"
        keyfile.write_text("\n".join(plan.keys) + "\n")
        self.cli("keys", "import", "--pool", "openai", str(keyfile))
        keyfile.unlink()
        self.log = tmp / "gateway.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(self.conf)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        end = time.time() + 30
        while time.time() < end:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the gateway did not start:\n{self.log.read_text()[-3000:]}")

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "keyrelay.cli.main", *args, "--config", str(self.conf)],
                              check=True, capture_output=True, text=True, timeout=120).stdout


class Soak:
    """The clients, the switches and the RSS samples of one run."""

    def __init__(self, gw: Gateway, plan: Plan, upstream: subprocess.Popen[str], args: argparse.Namespace) -> None:
        self.gw, self.plan, self.upstream, self.args = gw, plan, upstream, args
        self.base = gw.url + "/v1"
        self.leaks = Leaks(list(plan.keys))
        self.cutters = {key_id_for("openai", k) for k in plan.stream_cutters()}
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.attempts: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self.latency: dict[str, list[float]] = {"chat": [], "stream": []}
        self.rss: list[tuple[float, float]] = []
        self.t0 = 0.0

    def flag(self, kind: str, what: str, **detail: Any) -> str:
        self.unexpected.append({"t": round(time.monotonic() - self.t0, 2), "kind": kind, "what": what, **detail})
        return "UNEXPECTED " + what

    async def run(self) -> None:
        self.t0 = time.monotonic()
        stop_at = self.t0 + self.args.seconds
        keep = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True), auto_decompress=False)
        try:
            tasks = [asyncio.create_task(self.switches()), asyncio.create_task(self.sample(stop_at))]
            await asyncio.gather(*(self.client(i, keep, fresh, stop_at) for i in range(self.args.concurrency)))
            for t in tasks:
                t.cancel()
        finally:
            await keep.close()
            await fresh.close()

    async def switches(self) -> None:
        assert self.upstream.stdin is not None
        for when, key, spec in self.plan.switches:
            await asyncio.sleep(max(0.0, self.t0 + when - time.monotonic()))
            self.upstream.stdin.write(json.dumps({"key": key, "spec": spec}) + "\n")
            self.upstream.stdin.flush()

    async def sample(self, stop_at: float) -> None:
        while True:
            now = time.monotonic()
            if now <= stop_at + 0.5:
                self.rss.append((now - self.t0, _rss_mb(self.gw.proc.pid)))
            await asyncio.sleep(self.args.sample)

    async def client(self, i: int, keep: aiohttp.ClientSession, fresh: aiohttp.ClientSession, stop_at: float) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        names, weights = list(KINDS), list(KINDS.values())
        while time.monotonic() < stop_at:
            kind = rng.choices(names, weights)[0]
            session = fresh if kind.endswith(("_new_conn", "_hangup")) or kind in BAD_INPUT else keep
            outcome = await self.one(kind, session, rng)
            self.outcomes[(kind, outcome)] += 1

    async def one(self, kind: str, s: aiohttp.ClientSession, rng: random.Random) -> str:
        if kind in BAD_INPUT:
            return await self.bad_input(kind, s, rng)
        stream = kind.startswith("stream")
        if kind == "chat_hangup":  # the client gives up before (or while) the answer comes
            try:
                return await asyncio.wait_for(self.well_formed("chat", s, False), rng.uniform(0.005, 0.3))
            except TimeoutError:
                return "client_hangup"
        return await self.well_formed(kind, s, stream, hangup=kind == "stream_hangup")

    async def well_formed(self, kind: str, s: aiohttp.ClientSession, stream: bool, hangup: bool = False) -> str:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        method, url, body = ("GET", self.base + "/models", None) if kind == "models" else \
            ("POST", self.base + "/chat/completions", STREAM if stream else CHAT)
        started, head, status, data = time.monotonic(), {}, 0, b""
        try:
            async with s.request(method, url, data=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as r:
                head, status = {k.lower(): v for k, v in r.headers.items()}, r.status
                self.attempts[head.get("x-keyrelay-attempts", "?")] += 1
                if hangup and status == 200:
                    await r.content.readline()  # the first line of the first event, then away
                    r.close()
                    return "client_hangup"
                if stream and status == 200:
                    async for line in r.content:
                        data += line
                else:
                    data = await r.read()
        except TimeoutError:
            return self.flag(kind, "no answer in time", status=status, after=round(time.monotonic() - started, 1))
        except aiohttp.ClientPayloadError as exc:
            if stream and head.get("x-keyrelay-key") in self.cutters:
                return "upstream_cut_abrupt"
            return self.flag(kind, f"body broke off: {exc!r}", status=status, head=_marks(head),
                             got=data[-300:].decode(errors="replace"))
        except (aiohttp.ClientError, OSError) as exc:
            return self.flag(kind, f"connection failed: {exc!r}", status=status, head=_marks(head))
        leaked = self.leaks.find(json.dumps(head).encode() + data)
        if leaked:
            return self.flag(kind, "a key in the answer", keys=sorted(k[:13] for k in leaked))
        if status != 200:
            return self.flag(kind, f"status {status}", head=_marks(head), body=data[:300].decode(errors="replace"))
        self.latency["stream" if stream else "chat"].append(time.monotonic() - started)
        return self.stream_outcome(kind, head, data) if stream else self.json_outcome(kind, head, data)

    def json_outcome(self, kind: str, head: dict[str, str], data: bytes) -> str:
        problem = answer_problem(kind, data)
        if problem is None:
            return "ok"
        return self.flag(kind, problem, head=_marks(head), body=data[:300].decode(errors="replace"))

    def stream_outcome(self, kind: str, head: dict[str, str], data: bytes) -> str:
        outcome, problem = stream_verdict(data, head.get("x-keyrelay-key") in self.cutters)
        if problem is None:
            return outcome
        return self.flag(kind, problem, head=_marks(head), got=data[-400:].decode(errors="replace"))

    async def bad_input(self, kind: str, s: aiohttp.ClientSession, rng: random.Random) -> str:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        body = CHAT
        if kind == "bad_token":
            headers["Authorization"] = f"Bearer kr-not-a-token-{rng.getrandbits(64):016x}"
        elif kind == "bad_json":
            body = BAD_JSON
        else:
            headers["X-Pad"] = "p" * 10_000  # one header line over max_line_size (8190)
        status, data = 0, b""
        try:
            async with s.post(self.base + "/chat/completions", data=body, headers=headers,
                              timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as r:
                status, data = r.status, await r.read()
        except TimeoutError:
            return self.flag(kind, "no answer in time")
        except (aiohttp.ClientError, OSError) as exc:
            return self.flag(kind, f"connection failed: {exc!r}")
        if self.leaks.find(data):
            return self.flag(kind, "a key in the answer")
        if 400 <= status < 500:
            return f"refused_{status}"
        return self.flag(kind, f"status {status} for bad input", body=data[:300].decode(errors="replace"))


def _marks(head: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in head.items() if k.startswith("x-keyrelay") or k == "content-type"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--engine", default="lean", choices=("lean", "aiohttp"))
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=float,
                    help="seconds before the RSS start figure (default: a sixth of the run, at most 30)")
    ap.add_argument("--sample", type=float, default=3.0, help="seconds between RSS samples")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--keep-log", type=Path, help="copy the gateway's log here")
    ap.add_argument("--no-rss-check", action="store_true", help="report RSS but do not fail on it (short runs)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    args.warmup = args.warmup if args.warmup is not None else min(30.0, args.seconds / 6)
    plan = make_plan(args.keys, args.seconds, args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        tmp = Path(d)
        up_port = free_port()
        with (tmp / "upstream.err").open("w") as err:
            upstream = subprocess.Popen([sys.executable, str(HERE / "soak_upstream.py"), str(up_port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        assert upstream.stdin is not None and upstream.stdout is not None
        upstream.stdin.write(json.dumps({"keys": plan.keys, "chunk_delay": 0.01}) + "\n")
        upstream.stdin.flush()
        upstream.stdout.readline()
        wait_port(up_port)
        gw = Gateway(tmp, f"http://127.0.0.1:{up_port}/v1", plan, args.engine, args.log_level)
        soak = Soak(gw, plan, upstream, args)
        try:
            asyncio.run(soak.run())
            listed = gw.cli("keys", "list", "--json")
        finally:
            stop(gw.proc)
            upstream.stdin.close()
            served = json.loads(upstream.stdout.readline() or "{}")
            stop(upstream)  # type: ignore[arg-type]
        log_text = gw.log.read_text(errors="replace")
        served["tracebacks (the fake's own)"] = (tmp / "upstream.err").read_text().count("Traceback")
        if args.keep_log:
            args.keep_log.write_text(log_text)
    out = verdicts(args, soak, plan, listed, log_text)
    out["upstream"] = served
    report(args, out)
    return 0 if not out["unexpected"] and (out["rss_flat"] or args.no_rss_check) else 1


def verdicts(args: argparse.Namespace, soak: Soak, plan: Plan, listed: str, log_text: str) -> dict[str, Any]:
    """The end-of-run checks (log, key list, key states, RSS) and the summary."""
    errors, logged, levels, warnings = gateway_log(log_text, soak.leaks)
    for e in errors:
        soak.flag("gateway", "an error or a traceback in the gateway log", text=e)
    if logged:
        soak.flag("gateway", f"fragments of {len(logged)} keys in the gateway log", keys=sorted(k[:13] for k in logged))
    if soak.leaks.find(listed.encode()):
        soak.flag("gateway", "a key in keys list --json")
    states = {k["id"]: k["state"] for k in json.loads(listed)}
    switched = {k for _, k, _ in plan.switches}
    by_group: Counter[str] = Counter()
    for key in plan.keys:
        group = "switched to " + plan.spec_at_end(key)["behavior"] if key in switched else plan.group[key]
        by_group[f"{group} -> {states.get(key_id_for('openai', key), 'missing')}"] += 1
    for key in sorted(plan.always_ok()):
        state = states.get(key_id_for("openai", key))
        if state != "active":
            soak.flag("gateway", "an always-good key is not active at the end", key=key[:13], state=state)
    rss = rss_summary(soak.rss, args.warmup, args.seconds)
    limit = max(0.10 * rss["start"], 5.0)
    lat = {k: sorted(v) for k, v in soak.latency.items() if v}
    return {
        "engine": args.engine, "seconds": args.seconds, "keys": args.keys, "concurrency": args.concurrency,
        "requests": sum(soak.outcomes.values()), "unexpected": len(soak.unexpected),
        "first_unexpected": soak.unexpected[:8],
        "outcomes": {f"{k} {o}": n for (k, o), n in sorted(soak.outcomes.items())},
        "attempts": dict(sorted(soak.attempts.items())),
        "latency_ok_ms": {k: {"p50": round(v[len(v) // 2] * 1000, 1), "p99": round(v[int(len(v) * 0.99)] * 1000, 1)}
                          for k, v in lat.items()},
        "rss_mb": {k: round(v, 2) for k, v in rss.items()}, "rss_limit_mb": round(limit, 1),
        "rss_flat": rss["end"] - rss["start"] <= limit,
        "rss_series": [(round(t), round(m, 1)) for t, m in soak.rss],
        "key_states": dict(sorted(by_group.items())), "log_levels": dict(levels), "log_warnings": dict(warnings),
    }


def report(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(out))
        return
    total = out["requests"]
    print(f"soak: engine {args.engine}, {args.seconds:g} s, {args.keys} keys, {args.concurrency} clients: "
          f"{total} requests ({total / args.seconds:.0f}/s), {out['unexpected']} unexpected")
    print("\noutcomes (kind, outcome):")
    for name, n in out["outcomes"].items():
        kind, outcome = name.split(" ", 1)
        print(f"  {kind:16} {outcome:44} {n:7}")
    print(f"\nattempts per answered well-formed request (x-keyrelay-attempts): {out['attempts']}")
    print(f"latency of whole 200s: {out['latency_ok_ms']}")
    r = out["rss_mb"]
    print(f"\nRSS (MB): first {r['first']}, after the {args.warmup:g} s warm-up {r['start']}, peak {r['peak']}, "
          f"end {r['end']}; slope over the second half {r['slope_mb_per_min']:+.2f} MB/min; "
          f"{'flat' if out['rss_flat'] else 'GREW'} (limit +{out['rss_limit_mb']} MB)")
    print("  series (s: MB): " + ", ".join(f"{t}: {m}" for t, m in out["rss_series"]))
    print("\nkey states at the end (group at the start -> state):")
    for name, n in out["key_states"].items():
        print(f"  {name:55} {n:4}")
    print(f"\ngateway log lines by level: {out['log_levels']}")
    for w, n in out["log_warnings"].items():
        print(f"  warning x{n}: {w}")
    print(f"upstream: {out['upstream']}")
    if out["unexpected"]:
        print(f"\nUNEXPECTED ({out['unexpected']}), the first ones:")
        for u in out["first_unexpected"]:
            print("  " + json.dumps(u)[:1500])


if __name__ == "__main__":
    sys.exit(main())
