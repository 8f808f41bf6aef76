"""The runtime's counter flushes: paced and sliced, so they stay cheap however many keys are busy, and exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import pytest

from keyrelay.config import parse_settings
from keyrelay.core.model import Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import COUNTER_ROWS_PER_SECOND, FLUSH_SLICE, MAX_COUNTER_LAG, Runtime
from keyrelay.stores.usage import HOUR, MINUTE, key_scope, pool_scope

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
    now = time.time()
    await rt._paced_flush()
    assert rt._keys_due < now + rt.settings.server.flush_interval  # due again at the next run
    counted = {r.id: r.counters.requests for r in await rt.store.load("openai")}
    assert set(counted.values()) == {1}


@pytest.mark.parametrize("n", [8_000, 50_000, 100_000])
async def test_many_busy_keys_space_their_writes_out_while_the_pools_charts_keep_up(n: int) -> None:
    rt = await _runtime_with_busy_keys(n)
    t0 = time.time()
    await rt._paced_flush()
    wait = rt._keys_due - t0
    assert min(MAX_COUNTER_LAG, n / COUNTER_ROWS_PER_SECOND) - 1 <= wait <= min(MAX_COUNTER_LAG, n / COUNTER_ROWS_PER_SECOND) + 1
    assert wait > rt.settings.server.flush_interval
    # nothing was lost by waiting: every key's request is in the store
    assert sum(r.counters.requests for r in await rt.store.load("openai")) == n

    # before the keys are due again: the pool's usage row is written, the keys' sums wait
    pool = rt.pools["openai"]
    rec = pool.records()[0]
    for _ in range(3):
        pool.observe(Lease(rec.id, pool.name, rec.secret, rec.version, rec.masked), Verdict.ok(200))
    await rt._paced_flush()
    assert (await rt.store.get(rec.id)).counters.requests == 1  # type: ignore[union-attr]
    minutes = await rt.store.usage(pool_scope("openai"), MINUTE, t0 - HOUR, t0 + HOUR)
    assert sum(c.requests for _, c in minutes) == n + 3
    assert sum(c.requests for _, c in await rt.store.usage(key_scope(rec.id), MINUTE, t0 - HOUR, t0 + HOUR)) == 1
    rt._keys_due = 0.0  # due: the sums kept are written, once
    await rt._paced_flush()
    assert (await rt.store.get(rec.id)).counters.requests == 4  # type: ignore[union-attr]
    assert sum(c.requests for _, c in await rt.store.usage(key_scope(rec.id), MINUTE, t0 - HOUR, t0 + HOUR)) == 4
    assert sum(r.counters.requests for r in await rt.store.load("openai")) == n + 3
    assert sum(c.requests for _, c in await rt.store.usage(pool_scope("openai"), MINUTE, t0 - HOUR, t0 + HOUR)) == n + 3


# -- a big flush: in slices, the loop free between them, nothing lost or counted twice -----------


async def test_a_big_flush_leaves_the_event_loop_free_between_slices() -> None:
    n = 3 * FLUSH_SLICE + 7
    rt = await _runtime_with_busy_keys(n)
    ticks = 0

    async def ticker() -> None:  # stands for the requests the gateway serves meanwhile
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    writes: list[int] = []
    add = rt.store.add_key_sums

    async def add_key_sums(at: float, sums: Mapping[str, Sequence[int]]) -> None:
        writes.append(len(sums))
        await add(at, sums)

    rt.store.add_key_sums = add_key_sums  # type: ignore[method-assign]
    beat = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        assert await rt.flush() == n
    finally:
        beat.cancel()
    assert max(writes) <= FLUSH_SLICE and sum(writes) == n
    assert ticks >= 2 * (len(writes) - 1)  # the loop ran between the slices summed and between those written
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1}


async def test_a_store_lost_in_the_middle_of_a_flush_loses_and_doubles_nothing() -> None:
    n = 2 * FLUSH_SLICE + 3
    rt = await _runtime_with_busy_keys(n)
    add = rt.store.add_key_sums
    calls = 0

    async def add_key_sums(at: float, sums: Mapping[str, Sequence[int]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreUnavailable("lost")
        await add(at, sums)

    rt.store.add_key_sums = add_key_sums  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await rt.flush()
    assert sum(r.counters.requests for r in await rt.store.load("openai")) == FLUSH_SLICE

    assert await rt.flush() == n - FLUSH_SLICE  # the store is back: the rest, once
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1}


async def test_a_flush_cancelled_in_the_middle_loses_nothing_at_shutdown() -> None:
    n = 3 * FLUSH_SLICE
    rt = await _runtime_with_busy_keys(n)
    add = rt.store.add_key_sums
    started = asyncio.Event()
    gate = asyncio.Event()
    written: list[int] = []

    async def add_key_sums(at: float, sums: Mapping[str, Sequence[int]]) -> None:
        if written:  # the second slice waits, as a slow store would
            started.set()
            await gate.wait()
        await add(at, sums)
        written.append(sum(row[0] for row in sums.values()))  # requests

    rt.store.add_key_sums = add_key_sums  # type: ignore[method-assign]
    flush = asyncio.create_task(rt.flush())
    await started.wait()
    flush.cancel()  # shutting down while the second slice is being written
    with pytest.raises(asyncio.CancelledError):
        await flush
    gate.set()
    await rt.stop()  # waits for the slice under way, then flushes what was not written
    assert sum(written) == n


async def test_keys_arriving_in_a_big_pool_are_redacted_without_a_rebuild_on_the_loop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A big pool's redaction is rebuilt in a worker thread before new keys serve (at 100,000
    keys a rebuild is about a second of CPU, which on the loop would stall every request)."""
    from keyrelay.runtime import process, redactor

    monkeypatch.setattr(process, "BIG_REDACTION", 1)
    rt = await _runtime_with_busy_keys(10)
    redactor.current()
    built: list[str] = []
    real = redactor.prepare

    def prepare(extra):  # type: ignore[no-untyped-def]
        import threading

        built.append(threading.current_thread().name)
        return real(extra)

    monkeypatch.setattr(redactor, "prepare", prepare)
    fresh = "sk-arrives-later-abcdefghijklmnopqrstuv"
    await rt.store.add_keys("openai", [fresh], time.time())
    await rt.sync()
    assert built and built[0] != "MainThread"  # built off the loop
    assert redactor._cached[0] == redactor._generation  # nothing left to rebuild on the next use
    assert fresh not in redactor.current().text(f"upstream said: bad key {fresh}")
