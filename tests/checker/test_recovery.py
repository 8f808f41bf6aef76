"""Keys come back: an exhausted key whose money returns, an invalid key that works again, a
quota period that resets — each at its due probe, not before, and each with an event."""

from __future__ import annotations

import aiohttp

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import DAY, HOUR, NOW, Clock, make_pool, stored
from keyrelay.core.model import KeyState, Outcome, Verdict
from keyrelay.core.policy import next_reset
from keyrelay.runtime.checker import Checker
from keyrelay.stores.memory import MemoryStore

SPENT = "sk-spent-00000000000000000000000002"
GONE = "sk-gone-000000000000000000000000007"


async def test_an_exhausted_key_whose_balance_comes_back_is_active_after_its_next_due_probe(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[SPENT] = Account(hard_limit_usd=5.0, total_usage_cents=500)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [SPENT], clock, probes=["billing"])
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)
    assert (await stored(store, "main", SPENT)).state is KeyState.EXHAUSTED

    upstream.accounts[SPENT].hard_limit_usd = 25.0  # topped up
    clock.advance(HOUR)
    await checker.sweep(pool, session)
    assert (await stored(store, "main", SPENT)).state is KeyState.EXHAUSTED  # not due yet

    clock.advance(5 * HOUR)
    await checker.sweep(pool, session)

    rec = await stored(store, "main", SPENT)
    assert (rec.state, rec.reason, rec.balance) == (KeyState.ACTIVE, "balance back", 20.0)
    assert pool.eligible_count() == 1
    last = (await store.events(rec.id))[-1]
    assert (last.actor, last.from_state, last.to_state) == ("checker", "exhausted", "active")
    assert "balance 20 USD" in last.detail


async def test_a_key_spent_in_live_traffic_is_probed_at_its_recheck_time_and_comes_back(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[SPENT] = Account(balance=0.0)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [SPENT], clock, probes=["balance"], balance_api="deepseek")
    lease = pool.acquire()
    assert lease is not None
    t = pool.observe(lease, Verdict(Outcome.QUOTA_EXHAUSTED, 402, reason="payment required"))
    assert t is not None
    await pool.persist(t, Verdict(Outcome.QUOTA_EXHAUSTED), lease.version)
    pool.release(lease)
    checker = Checker(store, [pool], clock=clock)

    clock.advance(6 * HOUR - 1)
    await checker.sweep(pool, session)
    assert upstream.probed(SPENT) == 0
    upstream.accounts[SPENT].balance = 3.0
    clock.advance(2)
    await checker.sweep(pool, session)

    rec = await stored(store, "main", SPENT)
    assert (rec.state, rec.balance, rec.currency) == (KeyState.ACTIVE, 3.0, "CNY")


async def test_a_still_spent_key_gets_a_new_recheck_time(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[SPENT] = Account(balance=0.0)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [SPENT], clock, probes=["balance"], balance_api="moonshot")
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)

    clock.advance(6 * HOUR)
    await checker.sweep(pool, session)

    rec = await stored(store, "main", SPENT)
    assert (rec.state, rec.until) == (KeyState.EXHAUSTED, clock() + 6 * HOUR)
    assert upstream.probed(SPENT) == 2


async def test_an_invalid_key_whose_probe_succeeds_is_revived_with_an_event(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [GONE], clock, probes=["models"])
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)  # unknown upstream-side: 401
    assert (await stored(store, "main", GONE)).state is KeyState.INVALID

    upstream.accounts[GONE] = Account()  # the provider restored it
    clock.advance(DAY)
    await checker.sweep(pool, session)

    rec = await stored(store, "main", GONE)
    assert (rec.state, rec.reason) == (KeyState.ACTIVE, "revived: probe succeeded")
    ev = (await store.events(rec.id))[-1]
    assert (ev.actor, ev.from_state, ev.to_state) == ("checker", "invalid", "active")
    assert "probe models" in ev.detail


async def test_an_invalid_key_is_rechecked_rarely_and_stays_invalid_while_it_fails(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [GONE], clock, probes=["models"])
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)

    for _ in range(10):
        clock.advance(HOUR)
        await checker.sweep(pool, session)
    assert upstream.probed(GONE) == 1
    clock.advance(DAY)
    await checker.sweep(pool, session)

    rec = await stored(store, "main", GONE)
    assert (rec.state, rec.until) == (KeyState.INVALID, clock() + DAY)
    assert upstream.probed(GONE) == 2


async def test_an_exhausted_key_only_a_validity_probe_can_see_comes_back_at_the_quota_reset(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[SPENT] = Account()
    store, clock = MemoryStore(), Clock(NOW + 7 * HOUR)  # 22:06 UTC: midnight comes before the 6 h recheck
    pool = await make_pool(  # no probe that sees money: the default completion probe turned off
        store, upstream.base_url, [SPENT], clock, probes=["models"], reset="daily", exhausted_probe="off"
    )
    lease = pool.acquire()
    assert lease is not None
    t = pool.observe(lease, Verdict(Outcome.QUOTA_EXHAUSTED, 429, reason="daily limit reached"))
    assert t is not None
    await pool.persist(t, Verdict(Outcome.QUOTA_EXHAUSTED), lease.version)
    checker = Checker(store, [pool], clock=clock)
    midnight = next_reset("daily", clock())
    assert midnight is not None

    clock.t = midnight - 60
    await checker.sweep(pool, session)
    assert upstream.probed(SPENT) == 0
    clock.t = midnight + 1
    await checker.sweep(pool, session)

    rec = await stored(store, "main", SPENT)
    assert (rec.state, rec.reason) == (KeyState.ACTIVE, "daily quota reset")


async def test_openrouter_limit_reset_sets_the_recheck_time(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[SPENT] = Account(balance=0.0, limit_reset="daily")
    store, clock = MemoryStore(), Clock(NOW + 7 * HOUR)  # 22:06 UTC
    pool = await make_pool(store, upstream.base_url, [SPENT], clock, probes=["balance"], balance_api="openrouter")

    await Checker(store, [pool], clock=clock).sweep(pool, session)

    rec = await stored(store, "main", SPENT)
    assert rec.state is KeyState.EXHAUSTED
    assert rec.until == next_reset("daily", clock())  # midnight UTC comes before now + 6 h


async def test_disabled_and_cooling_keys_are_never_probed(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [GONE, SPENT], clock, probes=["models"])
    gone, spent = await stored(store, "main", GONE), await stored(store, "main", SPENT)
    from keyrelay.core.machine import on_admin

    t = on_admin(gone, "disable", clock())
    assert t is not None
    pool.upsert(await store.apply(t))  # type: ignore[arg-type]
    lease = pool.acquire()
    assert lease is not None and lease.key_id == spent.id
    cooled = pool.observe(lease, Verdict(Outcome.RATE_LIMITED, 429, retry_after=120))
    assert cooled is not None
    await pool.persist(cooled, Verdict(Outcome.RATE_LIMITED), lease.version)

    report = await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)

    assert report.rows == []
    assert upstream.requests == []
