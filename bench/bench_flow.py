"""The relay flow's own CPU cost per request (``runtime/flow.py``), with no I/O at all.

Drives :class:`~keyrelay.runtime.flow.Exchange` directly, as a driver would, with answers held
in memory, over a :class:`~keyrelay.runtime.pool.KeyPool` on a MemoryStore:

- ``json``: a chat completion, 200 ``application/json`` with usage (classified, usage parsed,
  headers filtered and redacted, marks set);
- ``sse``: a streamed chat completion of 22 events, one per upstream chunk: ``peek`` at the
  first, ``Stream.chunk`` for the rest, ``Stream.end``;
- ``failover``: a 401 ``invalid_api_key`` (the key retired, the error body redacted), then a
  200 JSON from the next key.

Each is timed over a pool of 100 and of 100,000 keys, against a bare baseline in the same run:
what any driver must do without the flow — pick a key (``KeyPool.acquire``), build the request
headers with its credentials, give the key back (twice for ``failover``). Prints µs per request
for both, the flow's cost on top of the baseline, and the ratio. Target (issue 11): at most
~15 µs per request on top of the driver's I/O; the exit status is 1 when a figure misses it.

State writes are not the flow's CPU: the pool's writer is a no-op here (drivers hand them to a
loop). Keys the ``failover`` case retires are put back between timed batches, untimed, and the
pool's counter tally is drained there too (the gateway's flush does that every second). The
correlated-failure guard is off, or half the 100-key pool would be retired and the guard's
refusal path timed instead.

    python bench/bench_flow.py [--requests 20000] [--rounds 5] [--profile json|sse|failover]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import logging
import pstats
import random
import statistics
import string
import sys
import time
from collections.abc import Callable

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from keyrelay.config import PoolSettings
from keyrelay.core.model import KeyState
from keyrelay.core.policy import CheckerPolicy
from keyrelay.runtime.flow import MORE, PEEK, READ, Exchange, Reply, Stream
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore

TARGET_US = 15.0
BASE = "https://api.openai.example/v1"
URL = BASE + "/chat/completions"
#: what a driver forwards of an SDK's request (the caller's credentials already dropped)
FORWARDED = {
    "content-type": "application/json",
    "accept": "application/json",
    "user-agent": "OpenAI/Python 1.54.0",
    "x-stainless-lang": "python",
    "x-stainless-package-version": "1.54.0",
    "x-stainless-runtime": "CPython",
}
REQUEST = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in French"}]})
STREAM_REQUEST = orjson.dumps({**orjson.loads(REQUEST), "stream": True, "stream_options": {"include_usage": True}})
#: distinct answer heads: more than the redactor's memo of clean header values holds (4096),
#: so a request id or ray id is new to it, as in real traffic where each answer has its own
HEADS = 8192
VARIANTS = 1024  # distinct answer bodies and streams (nothing remembers a body)
_RNG = random.Random(11)
_B62 = string.ascii_letters + string.digits


def _hex(n: int) -> str:
    """A random-looking hex id (request ids, ray ids): no long run of one digit that a key shares."""
    return "".join(_RNG.choice("0123456789abcdef") for _ in range(n))


def _secret() -> str:
    """A key shaped like OpenAI's project keys (random base62 after ``sk-proj-``)."""
    return "sk-proj-" + "".join(_RNG.choice(_B62) for _ in range(48))


def _answer_headers(i: int, ctype: str) -> CIMultiDictProxy[str]:
    """An OpenAI answer's head as aiohttp hands it to the gateway (``i`` varies the per-answer values)."""
    h: CIMultiDict[str] = CIMultiDict()
    for k, v in (
        ("Date", f"Wed, 02 Dec 2026 05:{i % 60:02d}:{i % 59:02d} GMT"),
        ("Content-Type", ctype),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-abc123"),
        ("openai-processing-ms", str(200 + i % 300)),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "200000"),
        ("x-ratelimit-remaining-requests", str(9999 - i % 100)),
        ("x-ratelimit-remaining-tokens", str(199_000 - i % 1000)),
        ("x-ratelimit-reset-requests", "8.64s"),
        ("x-ratelimit-reset-tokens", "6ms"),
        ("x-request-id", f"req_{_hex(32)}"),
        ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ("CF-Cache-Status", "DYNAMIC"),
        ("Set-Cookie", f"__cf_bm={_hex(40)}; path=/; domain=.api.openai.com; HttpOnly; Secure"),
        ("X-Content-Type-Options", "nosniff"),
        ("Server", "cloudflare"),
        ("CF-RAY", f"{_hex(16)}-CDG"),
        ("alt-svc", 'h3=":443"; ma=86400'),
    ):
        h.add(k, v)
    return CIMultiDictProxy(h)


def _chat_json(i: int) -> bytes:
    return orjson.dumps({
        "id": f"chatcmpl-{_hex(29)}", "object": "chat.completion", "created": 1764653400 + i, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour !", "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 13, "completion_tokens": 4, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_0ba0d124f1",
    })


def _sse_events(i: int) -> list[bytes]:
    base = {"id": f"chatcmpl-{_hex(29)}", "object": "chat.completion.chunk", "created": 1764653400 + i,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_0ba0d124f1"}

    def ev(choices: list[object], usage: object = None) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, "usage": usage}) + b"\n\n"

    out = [ev([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])]
    for w in range(19):
        out.append(ev([{"index": 0, "delta": {"content": f" word{w}"}, "logprobs": None, "finish_reason": None}]))
    out.append(ev([], {"prompt_tokens": 13, "completion_tokens": 19, "total_tokens": 32}))
    out.append(b"data: [DONE]\n\n")
    return out  # 22 events


def _invalid_key_body(secret: str) -> bytes:
    shown = f"{secret[:8]}***{secret[-4:]}"
    return orjson.dumps({"error": {
        "message": f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})


# -- the pool ------------------------------------------------------------------------------------
def make_pool(n: int) -> KeyPool:
    settings = PoolSettings("bench", base_url=BASE, strategy="round_robin",
                            checker=CheckerPolicy(correlated_share=1.0))  # the guard off (see above)
    store = MemoryStore()

    async def build() -> KeyPool:
        await store.open()
        await store.add_keys("bench", [_secret() for _ in range(n)], time.time())
        pool = KeyPool(settings, store)
        for rec in await store.load("bench"):
            pool.upsert(rec)
        return pool

    pool = asyncio.run(build())
    pool.writer = lambda t, verdict, version: None  # writes are the driver's loop's, not the flow's CPU
    return pool


def restore(pool: KeyPool) -> None:
    """Put retired keys back and drain the counter tally (untimed, between batches)."""
    for rec in pool.records():
        if rec.state is not KeyState.ACTIVE:
            pool.upsert(dataclasses.replace(rec, state=KeyState.ACTIVE, reason="", until=0.0, version=rec.version + 1))
    pool.take_counters()


# -- one request, as a driver does it -------------------------------------------------------------
class Answers:
    def __init__(self) -> None:
        self.json_heads = [_answer_headers(i, "application/json") for i in range(HEADS)]
        self.sse_heads = [_answer_headers(i, "text/event-stream; charset=utf-8") for i in range(HEADS)]
        self.err_heads = [_answer_headers(i, "application/json; charset=utf-8") for i in range(HEADS)]
        self.json_bodies = [_chat_json(i) for i in range(VARIANTS)]
        self.streams = [_sse_events(i) for i in range(VARIANTS)]


def flow_json(pool: KeyPool, a: Answers, i: int) -> None:
    ex = Exchange(pool, "POST", URL, dict(FORWARDED), REQUEST)
    reply = ex.start()
    assert reply is None
    assert ex.head(200, a.json_heads[i]) is READ
    reply = ex.body(a.json_bodies[i % VARIANTS])
    assert isinstance(reply, Reply) and reply.status == 200


def flow_sse(pool: KeyPool, a: Answers, i: int) -> None:
    ex = Exchange(pool, "POST", URL, dict(FORWARDED), STREAM_REQUEST)
    assert ex.start() is None
    assert ex.head(200, a.sse_heads[i]) is PEEK
    events = a.streams[i % VARIANTS]
    step = ex.peek(events[0])
    assert step is not MORE and isinstance(step, Stream)
    chunk = step.chunk
    for e in events[1:]:
        chunk(e)
    step.end()


def flow_failover(pool: KeyPool, a: Answers, i: int) -> None:
    ex = Exchange(pool, "POST", URL, dict(FORWARDED), REQUEST)
    assert ex.start() is None
    assert ex.head(401, a.err_heads[i]) is READ
    lease = ex.lease
    assert lease is not None
    assert ex.body(_invalid_key_body(lease.secret)) is None  # the next attempt
    assert ex.head(200, a.json_heads[i]) is READ
    reply = ex.body(a.json_bodies[i % VARIANTS])
    assert isinstance(reply, Reply) and reply.status == 200 and reply.headers["x-keyrelay-attempts"] == "2"


def _bare(pool: KeyPool) -> None:
    lease = pool.acquire()
    assert lease is not None
    headers = dict(FORWARDED)
    headers.update(pool.dialect.auth_headers(lease.secret))
    pool.release(lease)


def base_one(pool: KeyPool, a: Answers, i: int) -> None:
    _bare(pool)


def base_two(pool: KeyPool, a: Answers, i: int) -> None:
    _bare(pool)
    _bare(pool)


CASES: dict[str, tuple[Callable[[KeyPool, Answers, int], None], Callable[[KeyPool, Answers, int], None]]] = {
    "json": (flow_json, base_one),
    "sse": (flow_sse, base_one),
    "failover": (flow_failover, base_two),
}


def timed(fn: Callable[[KeyPool, Answers, int], None], pool: KeyPool, a: Answers, n: int, batch: int) -> float:
    """µs per call of ``fn`` over ``n`` calls, timed in batches with the pool restored between them."""
    spent, done = 0.0, 0
    while done < n:
        k = min(batch, n - done)
        restore(pool)
        t0 = time.process_time()
        for i in range(done, done + k):
            fn(pool, a, i % HEADS)
        spent += time.process_time() - t0
        done += k
    restore(pool)
    return spent / n * 1e6


class _Formatted(logging.Handler):
    """Logs formatted, then dropped: the CPU of a log line without its I/O."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def main() -> int:
    log = logging.getLogger("keyrelay")
    log.addHandler(_Formatted())
    log.propagate = False
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000, help="requests per case, per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (the median is printed)")
    ap.add_argument("--sizes", default="100,100000", help="pool sizes")
    ap.add_argument("--profile", choices=list(CASES), help="profile this case (largest pool) and print the top costs")
    args = ap.parse_args()
    answers = Answers()
    worst = 0.0
    print(f"flow cost per request, no I/O; median of {args.rounds} rounds of {args.requests:,} requests")
    print(f"{'pool':>8} {'case':>9} {'flow µs':>8} {'bare µs':>8} {'on top µs':>9} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        pool = make_pool(size)
        batch = max(1, min(1000, size // 4))  # failover retires a key per request: restore before they run out
        for name, (flow, bare) in CASES.items():
            timed(flow, pool, answers, 500, batch)  # warm up (memo, redactor built)
            flows, bares = [], []
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                flows.append(timed(flow, pool, answers, args.requests, batch))
                bares.append(timed(bare, pool, answers, args.requests, batch))
            f, b = statistics.median(flows), statistics.median(bares)
            worst = max(worst, f - b)
            print(f"{size:>8,} {name:>9} {f:8.2f} {b:8.2f} {f - b:9.2f} {f / b:5.1f}x")
        if args.profile and size == max(int(s) for s in args.sizes.split(",")):
            flow = CASES[args.profile][0]
            prof = cProfile.Profile()
            prof.enable()
            timed(flow, pool, answers, args.requests, batch)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    ok = worst <= TARGET_US
    print(f"worst cost on top of the baseline: {worst:.2f} µs per request (target ≤ {TARGET_US:g} µs): "
          f"{'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
