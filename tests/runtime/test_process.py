"""The runtime's background pacing: counter writes stay cheap however many keys are busy."""

from __future__ import annotations

import time

import pytest

from keyrelay.config import parse_settings
from keyrelay.core.model import Verdict
from keyrelay.core.pool import Lease
from keyrelay.runtime.process import COUNTER_ROWS_PER_SECOND, MAX_COUNTER_LAG, Runtime

pytestmark = pytest.mark.asyncio


async def _runtime_with_busy_keys(n: int) -> Runtime:
    doc = {"store": {"url": "memory://"}, "pools": [{"name": "openai", "base_url": "http://127.0.0.1:9/v1"}]}
    rt = Runtime(parse_settings(doc, {}))
    await rt.store.open()
    await rt.store.add_keys("openai", [f"sk-busy-{i:06d}-abcdefghijklmnop" for i in range(n)], time.time())
    await rt.sync()
    pool = rt.pools["openai"]
    for rec in pool.records():  # one success on every key
        pool.observe(Lease(rec.id, pool.name, rec.secret, rec.version, rec.masked), Verdict.ok(200))
    return rt


async def test_a_few_busy_keys_are_flushed_every_interval() -> None:
    rt = await _runtime_with_busy_keys(10)
    assert await rt._paced_flush() < rt.settings.server.flush_interval
    counted = {r.id: r.counters.requests for r in await rt.store.load("openai")}
    assert set(counted.values()) == {1}


@pytest.mark.parametrize("n", [8_000, 50_000])
async def test_many_busy_keys_space_the_flushes_out(n: int) -> None:
    rt = await _runtime_with_busy_keys(n)
    wait = await rt._paced_flush()
    assert wait == min(MAX_COUNTER_LAG, n / COUNTER_ROWS_PER_SECOND)
    assert wait > rt.settings.server.flush_interval
    # nothing was lost by waiting: every key's request is in the store
    assert sum(r.counters.requests for r in await rt.store.load("openai")) == n
