"""Per-key usage is exact: 300 mixed requests from the official openai SDK (half of them
streamed, which the SDK closes right after ``data: [DONE]``) through the gateway and through
library mode; every key's counters equal what the fake upstream served."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import openai

import keyrelay
from keyrelay.core.masking import mask
from keyrelay.testing.fake_upstream import Behavior, KeySpec, Served

from .conftest import cli, free_port, write_config

HEALTHY = [f"sk-proj-count{i}-{'c' * 30}{i:04d}" for i in range(4)]
FLAKY = "sk-proj-countflaky-" + "f" * 30 + "F001"
QUOTA = "sk-proj-countquota-" + "q" * 30 + "Q002"
KEYS = {**{k: KeySpec(Behavior.OK) for k in HEALTHY}, FLAKY: KeySpec(Behavior.FLAKY, flaky_rate=0.3),
        QUOTA: KeySpec(Behavior.QUOTA)}
N = 300


async def _one(client: openai.AsyncOpenAI, i: int) -> None:
    if i % 2:  # streamed, read to the end as a user's code does: the SDK closes after [DONE]
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}], stream=True,
            stream_options={"include_usage": True},
        )
        parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        assert parts
    elif i % 4 == 0:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content
    else:
        e = await client.embeddings.create(model="text-embedding-3-small", input=[f"a {i}", "b"])
        assert len(e.data) == 2


async def _traffic(client: openai.AsyncOpenAI) -> list[BaseException]:
    errors: list[BaseException] = []
    sem = asyncio.Semaphore(12)

    async def guarded(i: int) -> None:
        async with sem:
            try:
                await _one(client, i)
            except Exception as exc:  # noqa: BLE001 — every error is a failure of the test
                errors.append(exc)

    await asyncio.gather(*(guarded(i) for i in range(N)))
    return errors


def _expected(served: dict[str | None, Served]) -> dict[str, tuple[int, int, int]]:
    return {mask(k): (s.requests, s.prompt_tokens, s.completion_tokens) for k, s in served.items() if k}


def _counted(counters: dict[str, dict[str, int]]) -> dict[str, tuple[int, int, int]]:
    return {m: (c["requests"], c["prompt_tokens"], c["completion_tokens"]) for m, c in counters.items() if c["requests"]}


def _check_totals(expected: dict[str, tuple[int, int, int]], counted: dict[str, tuple[int, int, int]]) -> None:
    assert counted == expected
    served = sum(v[0] for v in expected.values())
    assert served >= N  # every request reached the upstream at least once (failovers add more)
    assert sum(v[2] for v in counted.values()) == sum(v[2] for v in expected.values()) > 0
    assert expected[mask(QUOTA)][0] >= 1  # the mix holds failures too: they are counted, once each


def test_gateway_counts_what_the_upstream_served(tmp_path: Path, upstream_factory: Any, server_factory: Any) -> None:
    up = upstream_factory(dict(KEYS), end_delay=0.15)
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    assert cli(config, "keys", "add", "--pool", "openai", *KEYS).returncode == 0
    token = cli(config, "tokens", "create", "counting", "--pool", "openai").stdout.strip().splitlines()[-1]
    server = server_factory(config, port)

    async def run() -> list[BaseException]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0) as client:
            return await _traffic(client)

    errors = asyncio.run(run())
    assert errors == [], errors[:3]
    expected = _expected(up.fake.served)
    counted: dict[str, tuple[int, int, int]] = {}
    for _ in range(50):  # the gateway flushes its counters every 0.2 s
        listing = json.loads(cli(config, "keys", "list", "--json").stdout)
        counted = _counted({k["masked"]: k["counters"] for k in listing})
        if counted == expected:
            break
        time.sleep(0.2)
    _check_totals(expected, counted)
    log = server.log.read_text()
    assert log.count("status=200") >= N
    assert "client_gone" not in log and "status=499" not in log
    assert "outcome= " not in log and 'outcome=""' not in log


def test_library_mode_counts_what_the_upstream_served(upstream_factory: Any) -> None:
    up = upstream_factory(dict(KEYS), end_delay=0.15)

    async def run() -> tuple[list[BaseException], dict[str, tuple[int, int, int]]]:
        async with keyrelay.Pool.from_keys(list(KEYS), base_url=up.url) as pool:
            async with openai.AsyncOpenAI(
                api_key="unused", base_url=pool.base_url, max_retries=0, http_client=keyrelay.async_httpx_client(pool)
            ) as client:
                errors = await _traffic(client)
            await asyncio.to_thread(pool.flush)
            keys = await asyncio.to_thread(pool.keys)
            return errors, _counted({k.masked: k.counters.as_dict() for k in keys})

    errors, counted = asyncio.run(run())
    assert errors == [], errors[:3]
    _check_totals(_expected(up.fake.served), counted)
