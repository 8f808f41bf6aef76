"""The correlated-failure guard as traffic and the checker meet it: a few bad keys are retired
as usual; when most of a pool fails at once the keys are not blamed."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import Clock, make_pool
from keyrelay.core.model import KeyState, Outcome, Verdict
from keyrelay.runtime.checker import Checker
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore

EIGHT = [f"sk-pool-{i:030d}" for i in range(8)]

INVALID = Verdict(Outcome.INVALID_KEY, 401, "invalid_api_key", reason="invalid api key")
DEACTIVATED = Verdict(Outcome.INVALID_KEY, 401, "account_deactivated", reason="account deactivated")
EXHAUSTED = Verdict(Outcome.QUOTA_EXHAUSTED, 429, "insufficient_quota", reason="quota exhausted")
RATE_LIMITED = Verdict(Outcome.RATE_LIMITED, 429, "rate_limit_exceeded", retry_after=2.0, reason="rate limited")
FLAKY = Verdict(Outcome.UPSTREAM_FAULT, 502, reason="upstream error")
OK = Verdict(Outcome.OK, 200)


def hit(pool: KeyPool, secret: str, verdict: Verdict) -> None:
    """One request that landed on ``secret``'s key and got ``verdict``."""
    rec = next(r for r in pool.records() if r.secret == secret)
    lease = pool.acquire(exclude=[r.id for r in pool.records() if r.id != rec.id])
    assert lease is not None and lease.key_id == rec.id, f"{secret} is not eligible"
    pool.observe(lease, verdict)
    pool.release(lease)


def states(pool: KeyPool) -> dict[str, KeyState]:
    return {r.secret: r.state for r in pool.records()}


async def test_a_pool_of_8_with_4_bad_keys_retires_and_cools_all_four(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, "http://upstream.invalid/v1", EIGHT, clock)

    with caplog.at_level(logging.WARNING, logger="keyrelay"):
        for secret, verdict in zip(EIGHT, (INVALID, DEACTIVATED, EXHAUSTED, RATE_LIMITED, FLAKY, OK, OK, OK)):
            hit(pool, secret, verdict)
            clock.advance(1)
        clock.advance(2)  # the rate-limited key comes back ...
        hit(pool, EIGHT[3], RATE_LIMITED)  # ... and is cooled again: still one key of the four
        hit(pool, EIGHT[4], FLAKY)

    got = states(pool)
    assert [got[s] for s in EIGHT[:4]] == [KeyState.INVALID, KeyState.INVALID, KeyState.EXHAUSTED, KeyState.COOLING]
    assert [got[s] for s in EIGHT[4:]] == [KeyState.ACTIVE] * 4
    assert pool.guard.refused == 0
    assert not [r for r in caplog.records if "correlated" in r.getMessage()]


async def test_when_the_whole_pool_fails_at_once_only_half_is_taken_out(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, "http://upstream.invalid/v1", EIGHT, clock)

    with caplog.at_level(logging.WARNING, logger="keyrelay"):
        for secret in EIGHT:  # an IP ban: every key answers 401 within seconds
            hit(pool, secret, INVALID)
            clock.advance(0.5)

    got = states(pool)
    assert sorted(got.values()) == sorted([KeyState.INVALID] * 4 + [KeyState.ACTIVE] * 4)
    assert pool.eligible_count() == 4
    assert len([r for r in caplog.records if "correlated failure" in r.getMessage()]) == 1
    counted = pool.take_counters()
    assert sum(c.upstream_fault for c in counted.values()) == 4
    assert sum(c.invalid_key for c in counted.values()) == 4


async def test_after_a_quiet_window_keys_can_be_retired_again() -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, "http://upstream.invalid/v1", EIGHT, clock)
    for secret in EIGHT[:6]:
        hit(pool, secret, INVALID)
    assert list(states(pool).values()).count(KeyState.INVALID) == 4

    clock.advance(61)
    hit(pool, EIGHT[4], INVALID)

    assert states(pool)[EIGHT[4]] is KeyState.INVALID


@pytest.mark.parametrize("size", [2, 3])
async def test_a_small_pool_still_retires_its_bad_keys(size: int) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, "http://upstream.invalid/v1", EIGHT[:size], clock)

    for secret in EIGHT[: size - 1]:
        hit(pool, secret, INVALID)

    assert list(states(pool).values()).count(KeyState.INVALID) == size - 1


async def test_the_guard_can_be_turned_off() -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, "http://upstream.invalid/v1", EIGHT, clock, correlated_share=1.0)

    for secret in EIGHT:
        hit(pool, secret, INVALID)

    assert set(states(pool).values()) == {KeyState.INVALID}


async def test_a_sweep_that_finds_most_of_the_pool_invalid_retires_only_half(
    upstream: BillingUpstream, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = MemoryStore(), Clock()  # the upstream knows none of the keys: all 401
    pool = await make_pool(store, upstream.base_url, EIGHT, clock, probes=["models"], concurrency=1)

    with caplog.at_level(logging.WARNING, logger="keyrelay"):
        report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert sum(r.changed for r in report.rows) == 4
    assert sum(r.correlated for r in report.rows) == 4
    stored_states = [r.state for r in await store.load()]
    assert stored_states.count(KeyState.INVALID) == 4 and stored_states.count(KeyState.ACTIVE) == 4
    assert len([r for r in caplog.records if "correlated failure" in r.getMessage()]) == 1


async def test_traffic_and_the_checker_share_one_guard(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts.update({s: Account() for s in EIGHT[3:]})
    upstream.accounts[EIGHT[7]].valid = False
    upstream.accounts[EIGHT[6]].valid = False
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, EIGHT, clock, probes=["models"], concurrency=1)
    for secret in EIGHT[:3]:
        hit(pool, secret, INVALID)

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert sum(r.changed for r in report.rows) == 1  # the 4th take-out of 8 is allowed, not a 5th
    assert sum(r.correlated for r in report.rows) == 1
