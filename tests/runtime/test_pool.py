"""``runtime/pool.py``: the run-time pool. Recording an outcome persists it — memory at once,
the store through the pool's writer (one writer task on the loop, in order; library mode's
background loop instead) — and a store outage loses nothing."""

from __future__ import annotations

import asyncio
import time

from keyrelay.config import PoolSettings
from keyrelay.core.model import KeyState, Outcome, Transition, Verdict
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore

KEYS = [f"sk-runtime-pool-test-{i:016d}" for i in range(3)]
_INVALID = Verdict(Outcome.INVALID_KEY, 401, code="invalid_api_key", reason="invalid api key")
_LIMITED = Verdict(Outcome.RATE_LIMITED, 429, retry_after=30.0, reason="rate limited")


async def _pool(store: MemoryStore | None = None) -> KeyPool:
    store = store or MemoryStore()
    await store.open()
    await store.add_keys("p", KEYS, time.time())
    pool = KeyPool(PoolSettings("p", strategy="round_robin"), store)
    for rec in await store.load("p"):
        pool.upsert(rec)
    return pool


async def test_a_recorded_outcome_is_in_memory_at_once_and_in_the_store_once_settled() -> None:
    pool = await _pool()
    lease = pool.acquire()
    assert lease is not None
    pool.record(lease, _INVALID)
    assert pool.state.get(lease.key_id).state is KeyState.INVALID  # type: ignore[union-attr]
    assert pool.acquire([]) is not None and all(  # no new request goes to it
        pool.acquire([]).key_id != lease.key_id for _ in range(5)  # type: ignore[union-attr]
    )
    assert pool.writing
    await pool.settle()
    assert not pool.writing
    stored = await pool.store.get(lease.key_id)
    assert stored is not None and stored.state is KeyState.INVALID and stored.reason == "invalid api key"


async def test_writes_go_out_one_at_a_time_in_the_order_they_were_decided() -> None:
    store = MemoryStore()
    pool = await _pool(store)
    order: list[str] = []
    inner = store.apply
    busy = 0

    async def apply(t: Transition):  # type: ignore[no-untyped-def]
        nonlocal busy
        busy += 1
        assert busy == 1, "two writes at once"
        await asyncio.sleep(0.01)
        order.append(t.key_id)
        busy -= 1
        return await inner(t)

    store.apply = apply  # type: ignore[method-assign]
    leases = [pool.acquire() for _ in KEYS]
    for lease, verdict in zip(leases, (_LIMITED, _INVALID, _LIMITED), strict=True):
        assert lease is not None
        pool.record(lease, verdict)
    await pool.settle()
    assert order == [lease.key_id for lease in leases if lease is not None]


async def test_a_success_writes_nothing_but_counts() -> None:
    pool = await _pool()
    lease = pool.acquire()
    assert lease is not None
    pool.record(lease, Verdict.ok(200))
    assert not pool.writing
    assert pool.take_counters()[lease.key_id].successes == 1


async def test_library_mode_gives_the_pool_its_own_writer() -> None:
    pool = await _pool()
    handed: list[tuple[str, str]] = []
    pool.writer = lambda t, verdict, version: handed.append((t.key_id, t.to_state.value))
    lease = pool.acquire()
    assert lease is not None
    pool.record(lease, _INVALID)
    assert handed == [(lease.key_id, "invalid")] and not pool.writing


async def test_a_write_during_a_store_outage_is_kept_and_written_later() -> None:
    store = MemoryStore()
    pool = await _pool(store)
    inner = store.apply
    down = True

    async def apply(t: Transition):  # type: ignore[no-untyped-def]
        if down:
            raise StoreUnavailable("down")
        return await inner(t)

    store.apply = apply  # type: ignore[method-assign]
    lease = pool.acquire()
    assert lease is not None
    pool.record(lease, _INVALID)
    await pool.settle()
    assert len(pool.backlog) == 1
    assert (await store.get(lease.key_id)).state is KeyState.ACTIVE  # type: ignore[union-attr]
    down = False
    await pool.drain_backlog()
    assert not pool.backlog
    assert (await store.get(lease.key_id)).state is KeyState.INVALID  # type: ignore[union-attr]
