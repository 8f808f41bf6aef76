"""The runtime's counter flushes: paced and sliced, so they stay cheap however many keys are busy, and exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from keyrelay.config import parse_settings
from keyrelay.core.model import Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import COUNTER_ROWS_PER_SECOND, FLUSH_SLICE, MAX_COUNTER_LAG, Runtime
from keyrelay.stores.usage import HOUR, MINUTE, key_scope, pool_scope

pytestmark = pytest.mark.asyncio


async def _runtime_with_busy_keys(n: int, clock: Callable[[], float] = time.time) -> Runtime:
    doc = {"store": {"url": "memory://"}, "pools": [{"name": "openai", "base_url": "http://127.0.0.1:9/v1"}]}
    rt = Runtime(parse_settings(doc, {}), clock=clock)
    await rt.store.open()
    await rt.store.add_keys("openai", [f"sk-busy-{i:06d}-abcdefghijklmnop" for i in range(n)], time.time())
    await rt.sync()
    pool = rt.pools["openai"]
    for rec in pool.records():  # one success on every key
        pool.observe(Lease(rec.id, pool.name, rec.secret, rec.version, rec.masked), Verdict.ok(200))
    return rt


async def test_a_few_busy_keys_are_flushed_every_interval() -> None:
    rt = await _runtime_with_busy_keys(10)
    assert await rt._paced_flush() is None
    counted = {r.id: r.counters.requests for r in await rt.store.load("openai")}
    assert set(counted.values()) == {1}
    pool = rt.pools["openai"]
    rec = pool.records()[0]
    pool.observe(Lease(rec.id, pool.name, rec.secret, rec.version, rec.masked), Verdict.ok(200))
    await rt._paced_flush()  # the next second: written again at once
    assert (await rt.store.get(rec.id)).counters.requests == 2  # type: ignore[union-attr]


async def test_many_busy_keys_are_written_a_pace_a_second_oldest_first_while_the_pools_charts_keep_up() -> None:
    n = 5_000
    clock = _Clock()
    rt = await _runtime_with_busy_keys(n, clock)
    pool = rt.pools["openai"]
    burst = int(COUNTER_ROWS_PER_SECOND * 2)
    assert await rt.flush(paced=True) == burst  # the saved-up budget: two seconds' worth
    written = {r.id for r in await rt.store.load("openai") if r.counters.requests}
    assert len(written) == burst
    # a key busy again now waits behind the keys busy before it
    again = next(r for r in pool.records() if r.id in written)
    pool.observe(Lease(again.id, pool.name, again.secret, again.version, again.masked), Verdict.ok(200))
    for second in range(1, 100):
        clock.now += 1.0
        rows = await rt.flush(paced=True)
        assert rows <= COUNTER_ROWS_PER_SECOND + 1
        if rows == 0:
            break
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1} | {2}
    assert (await rt.store.get(again.id)).counters.requests == 2  # type: ignore[union-attr]
    assert second == -(-(n + 1 - burst) // int(COUNTER_ROWS_PER_SECOND)) + 1  # the last second wrote nothing left
    # the pool's own rows were written every second, whole
    minutes = await rt.store.usage(pool_scope("openai"), MINUTE, clock.now - HOUR, clock.now + HOUR)
    assert sum(c.requests for _, c in minutes) == n + 1
    other = next(r for r in pool.records() if r.id != again.id)
    assert sum(c.requests for _, c in await rt.store.usage(key_scope(other.id), MINUTE, 0, clock.now + HOUR)) == 1
    assert sum(c.requests for _, c in await rt.store.usage(key_scope(again.id), MINUTE, 0, clock.now + HOUR)) == 2


async def test_no_busy_key_waits_longer_than_the_longest_lag() -> None:
    n = 3_000
    clock = _Clock()
    rt = await _runtime_with_busy_keys(n, clock)
    await rt.flush(paced=True)  # the first burst
    clock.now += MAX_COUNTER_LAG  # a flush loop that stalled for that long (a suspended VM)
    assert await rt.flush(paced=True) == n - int(COUNTER_ROWS_PER_SECOND * 2)  # every key overdue: all at once
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1}


async def test_a_full_flush_writes_every_key_at_once() -> None:
    rt = await _runtime_with_busy_keys(3_000)
    assert await rt.flush() == 3_000
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1}


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


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


async def test_a_flush_asked_for_returns_with_what_a_background_flush_was_still_writing() -> None:
    """``Pool.flush()``, shutdown, a test: all counted before the call is written when it
    returns, even while the background flush holds some of the counts in a slow write."""
    rt = await _runtime_with_busy_keys(10)
    add = rt.store.add_key_sums
    writing = asyncio.Event()
    gate = asyncio.Event()

    async def slow(at: float, sums: Mapping[str, Sequence[int]]) -> None:
        writing.set()
        await gate.wait()
        await add(at, sums)

    rt.store.add_key_sums = slow  # type: ignore[method-assign]
    background = asyncio.create_task(rt._paced_flush())
    await writing.wait()
    asked = asyncio.create_task(rt.flush())
    await asyncio.sleep(0.05)
    assert not asked.done()  # it waits for the write under way
    gate.set()
    await asked
    assert {r.counters.requests for r in await rt.store.load("openai")} == {1}
    await background
