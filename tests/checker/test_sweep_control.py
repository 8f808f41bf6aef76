"""How sweeps are run: one gateway at a time per pool, dry runs, pacing, balances per provider."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import Clock, make_pool, stored
from checker.test_billing_sweep import SIX, six_accounts
from keyrelay.core.model import KeyState
from keyrelay.runtime.checker import Checker
from keyrelay.stores.memory import MemoryStore


async def test_only_one_gateway_sweeps_a_pool_at_a_time(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])
    a = Checker(store, [pool], clock=clock, owner="gw-a")
    b = Checker(store, [pool], clock=clock, owner="gw-b")
    assert await store.try_lock("checker:main", "gw-a", 180.0, clock())  # a sweep of gw-a is under way

    report = await b.sweep(pool, session)

    assert report.locked_out and report.rows == []
    assert upstream.requests == []
    assert (await a.sweep(pool, session)).rows  # the owner may go on


async def test_a_lock_left_by_a_dead_gateway_is_taken_over_after_its_ttl(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])
    await store.try_lock("checker:main", "gw-dead", 180.0, clock())

    clock.advance(181)
    report = await Checker(store, [pool], clock=clock, owner="gw-b").sweep(pool, session)

    assert not report.locked_out and len(report.rows) == 6


async def test_the_lock_is_released_after_a_sweep(upstream: BillingUpstream, session: aiohttp.ClientSession) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["models"])

    await Checker(store, [pool], clock=clock, owner="gw-a").sweep(pool, session)

    assert await store.try_lock("checker:main", "gw-b", 180.0, clock())


async def test_a_dry_run_reports_what_would_change_and_writes_nothing(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])
    events = await store.events()

    report = await Checker(store, [pool], clock=clock).sweep(pool, session, dry_run=True)

    assert sorted(r.after.value for r in report.changed) == ["exhausted", "invalid"]
    assert await store.events() == events
    assert {(r.state, r.version, r.balance) for r in await store.load()} == {(KeyState.ACTIVE, 1, None)}
    assert pool.eligible_count() == 6


async def test_a_probe_list_given_for_one_sweep_replaces_the_configured_one(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])

    await Checker(store, [pool], clock=clock).sweep(pool, session, probes=["models"])

    assert {path for path, _ in upstream.requests} == {"/v1/models"}
    assert {r.state for r in await store.load()} == {KeyState.ACTIVE}


async def test_active_keys_are_not_probed_when_active_interval_is_zero(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"], active_interval=0)

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert report.rows == [] and upstream.requests == []


async def test_concurrency_and_rate_bound_a_sweep(upstream: BillingUpstream, session: aiohttp.ClientSession) -> None:
    secrets = [f"sk-many-{i:030d}" for i in range(20)]
    upstream.accounts.update({s: Account() for s in secrets})
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, secrets, clock, probes=["models"], concurrency=3, max_rate=100)

    started = time.perf_counter()
    report = await Checker(store, [pool], clock=clock).sweep(pool, session)
    took = time.perf_counter() - started

    assert len(report.rows) == 20
    assert took >= 0.15  # 100 starts/s, in bursts of 3: the last burst starts at 160 ms or later


@pytest.mark.parametrize(
    ("api", "currency"), [("deepseek", "CNY"), ("openrouter", "USD"), ("siliconflow", "CNY"), ("moonshot", "CNY")]
)
async def test_the_balance_probe_records_each_providers_balance_and_retires_at_the_threshold(
    upstream: BillingUpstream, session: aiohttp.ClientSession, api: str, currency: str
) -> None:
    upstream.accounts.update({"sk-rich-00000000000000000001": Account(balance=12.5),
                              "sk-poor-00000000000000000002": Account(balance=0.5)})
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, list(upstream.accounts), clock, probes=["balance"],
                           balance_api=api, balance_threshold=1.0)

    await Checker(store, [pool], clock=clock).sweep(pool, session)

    rich, poor = await stored(store, "main", "sk-rich-00000000000000000001"), await stored(
        store, "main", "sk-poor-00000000000000000002")
    assert (rich.state, rich.balance, rich.currency) == (KeyState.ACTIVE, 12.5, currency)
    assert (poor.state, poor.balance, poor.currency) == (KeyState.EXHAUSTED, 0.5, currency)
    assert poor.reason == "balance at or below 1"


async def test_a_balance_is_written_only_when_it_changed(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts["sk-rich-00000000000000000001"] = Account(balance=12.5)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, ["sk-rich-00000000000000000001"], clock, probes=["balance"],
                           balance_api="deepseek")
    writes: list[float | None] = []
    original = store.set_balance

    async def spy(key_id: str, balance: float | None, currency: str) -> None:
        writes.append(balance)
        await original(key_id, balance, currency)

    store.set_balance = spy  # type: ignore[method-assign]
    checker = Checker(store, [pool], clock=clock)
    for balance in (12.5, 12.5, 12.5, 11.0):
        upstream.accounts["sk-rich-00000000000000000001"].balance = balance
        await checker.sweep(pool, session)
        clock.advance(61)

    assert writes == [12.5, 11.0]


async def test_the_completion_probe_retires_a_key_without_quota(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts.update({"sk-paid-00000000000000000001": Account(),
                              "sk-free-00000000000000000002": Account(quota_exhausted=True)})
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, list(upstream.accounts), clock, probes=["completion"],
                           completion_model="gpt-4o-mini")

    await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert (await stored(store, "main", "sk-paid-00000000000000000001")).state is KeyState.ACTIVE
    free = await stored(store, "main", "sk-free-00000000000000000002")
    assert (free.state, free.reason) == (KeyState.EXHAUSTED, "quota exhausted")


async def test_of_two_gateways_running_the_checker_one_leads_and_each_key_is_probed_once(
    upstream: BillingUpstream,
) -> None:
    upstream.accounts.update({s: Account() for s in SIX})
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["models"], interval=0.02,
                           active_interval=3600)
    a = Checker(store, [pool], clock=clock, owner="gw-a")
    b = Checker(store, [pool], clock=clock, owner="gw-b")

    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    await asyncio.sleep(0.3)
    leader, standby = (a, b) if a._leading else (b, a)
    assert leader._leading == {"main"} and standby._leading == set()
    assert [upstream.probed(s) for s in SIX] == [1] * 6
    leader_task = tasks[0] if leader is a else tasks[1]
    leader_task.cancel()
    await asyncio.gather(leader_task, return_exceptions=True)
    await asyncio.sleep(0.2)

    assert standby._leading == {"main"}  # it took over as soon as the leader stood down
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
