"""Library-mode overhead: the openai SDK with a keyrelay HTTP client vs its default client.

Both talk to the same local fake upstream (a separate process, every key healthy), in the same
run, alternating in rounds so drift hits both alike:

- sync: N sequential chat completions, then N sequential streamed ones;
- async: N chat completions with ``--concurrency`` in flight;
- and, first, the same SDK calls over an in-process upstream (no network): the transport's own
  cost per call, the least noisy figure on a busy machine.

Prints calls/s for each client and keyrelay's time ratio (target: ≤ 1.1× over the local
upstream; the exit status is 1 when a ratio misses it). The in-process figure is the worst
case — an SDK call that costs under a millisecond — and is printed for information.

    python bench/bench_library.py [--calls 2000] [--concurrency 32] [--keys 8] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import openai

import keyrelay

UPSTREAM = """
import asyncio, sys
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream

async def main(port):
    fake = FakeUpstream(default=Behavior.OK, record_calls=False)
    await fake.start(port=port)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""
MSG = [{"role": "user", "content": "Say hello"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("the fake upstream did not start")
    return proc, f"http://127.0.0.1:{port}/v1"


def chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG)


def stream(client: openai.OpenAI) -> None:
    for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True):
        pass


def timed_sync(client: openai.OpenAI, call: Callable[[openai.OpenAI], None], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call(client)
    return time.perf_counter() - started


async def timed_async(client: openai.AsyncOpenAI, n: int, concurrency: int) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.chat.completions.create(model="gpt-4o-mini", messages=MSG)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def in_process_overhead(pool: keyrelay.Pool, n: int, rounds: int) -> float:
    """The SDK over an in-process upstream (``httpx2.MockTransport``): no network, no other
    process, so the figure is the transport's own cost per call, with little noise."""
    import httpx2

    body = (
        b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

    plain = openai.OpenAI(
        api_key="sk-x",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    relayed = openai.OpenAI(
        api_key="unused",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=keyrelay.httpx_client(pool, transport=httpx2.MockTransport(handler)),
    )
    timed_sync(plain, chat, 200)
    timed_sync(relayed, chat, 200)
    base, ours = [], []
    for _ in range(rounds):
        base.append(timed_sync(plain, chat, n // rounds))
        ours.append(timed_sync(relayed, chat, n // rounds))
    b, o = min(base) / (n // rounds), min(ours) / (n // rounds)  # the least disturbed round of each
    print(
        f"{'in-process (no network)':28} default {b * 1e6:8.0f} us/call  keyrelay {o * 1e6:8.0f} us/call  "
        f"overhead {(o - b) * 1e6:+.0f} us, time ratio {o / b:.3f}x"
    )
    plain.close()
    relayed.close()
    return o / b


def report(name: str, per_round: int, base: list[float], ours: list[float]) -> float:
    """Rates over all rounds; the ratio is the median of the rounds' ratios (each pair of runs
    is adjacent in time, so the machine's drift cancels out)."""
    ratio = statistics.median(o / b for b, o in zip(base, ours, strict=True))
    n = per_round * len(base)
    print(
        f"{name:28} default {n / sum(base):8.0f} calls/s   keyrelay {n / sum(ours):8.0f} calls/s   "
        f"time ratio {ratio:.3f}x"
    )
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--keys", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    keys = [f"sk-bench-{i:024d}" for i in range(args.keys)]
    proc, base_url = start_upstream()
    pool = keyrelay.Pool.from_keys(keys, base_url=base_url)
    try:
        plain = openai.OpenAI(api_key=keys[0], base_url=base_url, max_retries=0)
        relayed = openai.OpenAI(
            api_key="unused", base_url=base_url, max_retries=0, http_client=keyrelay.httpx_client(pool)
        )
        per_round = max(1, args.calls // args.rounds)
        n = per_round * args.rounds
        in_process_overhead(pool, n, args.rounds)  # informative: the worst case, no network at all
        ratios = []
        for name, call in (("sync chat (sequential)", chat), ("sync stream (sequential)", stream)):
            timed_sync(plain, call, 100)  # warm-up: connections, imports, pydantic models
            timed_sync(relayed, call, 100)
            base, ours = [], []
            for _ in range(args.rounds):
                base.append(timed_sync(plain, call, per_round))
                ours.append(timed_sync(relayed, call, per_round))
            ratios.append(report(name, per_round, base, ours))

        async def run_async() -> tuple[list[float], list[float]]:
            a_plain = openai.AsyncOpenAI(api_key=keys[0], base_url=base_url, max_retries=0)
            a_relayed = openai.AsyncOpenAI(
                api_key="unused", base_url=base_url, max_retries=0, http_client=keyrelay.async_httpx_client(pool)
            )
            await timed_async(a_plain, 200, args.concurrency)
            await timed_async(a_relayed, 200, args.concurrency)
            b: list[float] = []
            o: list[float] = []
            for _ in range(args.rounds):
                b.append(await timed_async(a_plain, per_round, args.concurrency))
                o.append(await timed_async(a_relayed, per_round, args.concurrency))
            await a_plain.close()
            await a_relayed.close()
            return b, o

        b, o = asyncio.run(run_async())
        ratios.append(report(f"async chat (concurrency {args.concurrency})", per_round, b, o))
        plain.close()
        relayed.close()
        recs = pool.keys()
        total = sum(r.counters.successes for r in recs)
        print(f"keys used: {sum(1 for r in recs if r.counters.requests)}/{len(recs)}, successes counted: {total}")
        worst = max(ratios)
        print(f"worst time ratio: {worst:.3f}x (target <= 1.1x) on {os.cpu_count()} CPUs")
        return 0 if worst <= 1.1 else 1
    finally:
        pool.close()
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
