"""The seed's job against a one-api style upstream: one sweep of the billing probe retires the
expired key and the spent one, and leaves every key whose answer says nothing bad alone."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import DAY, HOUR, NOW, Clock, make_pool, stored
from keyrelay.core.machine import ProbeKind
from keyrelay.core.model import KeyState
from keyrelay.runtime.checker import Checker
from keyrelay.stores.base import Store
from keyrelay.stores.memory import MemoryStore
from keyrelay.stores.sqlite import SQLiteStore

EXPIRED = "sk-expired-000000000000000000000001"
SPENT = "sk-spent-00000000000000000000000002"
NEVER_EXPIRES = "sk-forever-000000000000000000000003"
ERROR_200 = "sk-error200-00000000000000000000004"
NO_BILLING = "sk-nobilling-0000000000000000000005"
HEALTHY = "sk-healthy-000000000000000000000006"
SIX = (EXPIRED, SPENT, NEVER_EXPIRES, ERROR_200, NO_BILLING, HEALTHY)


def six_accounts(up: BillingUpstream) -> None:
    up.accounts.update({
        EXPIRED: Account(hard_limit_usd=18.0, access_until=NOW - DAY, total_usage_cents=100),
        SPENT: Account(hard_limit_usd=5.0, access_until=NOW + 30 * DAY, total_usage_cents=500),
        NEVER_EXPIRES: Account(hard_limit_usd=20.0, access_until=0, total_usage_cents=250),
        ERROR_200: Account(billing="error200"),
        NO_BILLING: Account(billing="missing"),
        HEALTHY: Account(hard_limit_usd=100.0, access_until=NOW + 90 * DAY, total_usage_cents=1234),
    })


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(f"sqlite:///{tmp_path / 'kr.db'}")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_one_sweep_retires_exactly_the_expired_and_the_spent_key(
    upstream: BillingUpstream, session: aiohttp.ClientSession, store: Store
) -> None:
    six_accounts(upstream)
    clock = Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert len(report.rows) == 6
    expired, spent = await stored(store, "main", EXPIRED), await stored(store, "main", SPENT)
    assert (expired.state, expired.reason) == (KeyState.INVALID, "expired")
    assert (spent.state, spent.reason) == (KeyState.EXHAUSTED, "usage reached the hard limit")
    for secret in (NEVER_EXPIRES, ERROR_200, NO_BILLING, HEALTHY):
        rec = await stored(store, "main", secret)
        assert (rec.state, rec.version) == (KeyState.ACTIVE, 1), secret
    # memory follows the store: traffic no longer gets the two retired keys
    assert {pool.state.get(expired.id).state, pool.state.get(spent.id).state} == {  # type: ignore[union-attr]
        KeyState.INVALID, KeyState.EXHAUSTED}
    assert pool.eligible_count() == 4


async def test_the_sweep_reads_each_answer_for_what_it_is(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    by_key = {row.key_id: row.result for row in report.rows}
    kind = {s: by_key[(await stored(store, "main", s)).id] for s in SIX}
    assert kind[NEVER_EXPIRES].kind is ProbeKind.OK and kind[NEVER_EXPIRES].balance == 17.5
    assert kind[HEALTHY].kind is ProbeKind.OK and kind[HEALTHY].balance == pytest.approx(87.66)
    assert kind[ERROR_200].kind is ProbeKind.UNKNOWN and kind[ERROR_200].balance is None
    assert kind[NO_BILLING].kind is ProbeKind.UNKNOWN and kind[NO_BILLING].status == 404
    assert kind[SPENT].balance == 0.0
    # balances read are stored, unreadable ones are not turned into 0
    assert (await stored(store, "main", NEVER_EXPIRES)).balance == 17.5
    assert (await stored(store, "main", HEALTHY)).currency == "USD"
    assert (await stored(store, "main", ERROR_200)).balance is None
    assert (await stored(store, "main", NO_BILLING)).balance is None


async def test_each_retirement_is_an_event_by_the_checker_with_its_evidence(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])

    await Checker(store, [pool], clock=clock).sweep(pool, session)

    expired = [e for e in await store.events((await stored(store, "main", EXPIRED)).id) if e.actor == "checker"]
    spent = [e for e in await store.events((await stored(store, "main", SPENT)).id) if e.actor == "checker"]
    assert [(e.from_state, e.to_state, e.reason) for e in expired] == [("active", "invalid", "expired")]
    assert "probe billing" in expired[0].detail and "http 200" in expired[0].detail
    assert [(e.from_state, e.to_state) for e in spent] == [("active", "exhausted")]
    assert "used 5 of 5 USD" in spent[0].detail and "balance 0 USD" in spent[0].detail
    # the two unreadable answers leave one note each, the healthy ones none
    notes = [e for e in await store.events() if e.actor == "checker" and e.from_state == e.to_state]
    assert sorted(e.key_id for e in notes) == sorted(
        [(await stored(store, "main", ERROR_200)).id, (await stored(store, "main", NO_BILLING)).id])
    assert all(e.reason == "probe could not tell" for e in notes)


async def test_an_unreadable_answer_is_noted_once_not_every_sweep(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts.update({ERROR_200: Account(billing="error200"), HEALTHY: Account()})
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [ERROR_200, HEALTHY], clock, probes=["billing"])
    checker = Checker(store, [pool], clock=clock)

    for _ in range(5):
        await checker.sweep(pool, session)
        clock.advance(61)

    assert len([e for e in await store.events() if e.actor == "checker"]) == 1


async def test_an_lmstudio_style_200_is_unknown_never_a_zero_balance(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts["sk-lmstudio-0000000000000000001"] = Account(billing="lmstudio")
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, ["sk-lmstudio-0000000000000000001"], clock, probes=["billing"])

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert report.rows[0].result.kind is ProbeKind.UNKNOWN
    assert (await stored(store, "main", "sk-lmstudio-0000000000000000001")).state is KeyState.ACTIVE


async def test_billing_then_models_catches_a_key_the_billing_endpoint_cannot_judge(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts[NO_BILLING] = Account(billing="missing")
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, [NO_BILLING, "sk-revoked-000000000000000000009"], clock,
                           probes=["billing", "models"])

    await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert (await stored(store, "main", NO_BILLING)).state is KeyState.ACTIVE  # models: valid
    revoked = await stored(store, "main", "sk-revoked-000000000000000000009")
    assert (revoked.state, revoked.reason) == (KeyState.INVALID, "invalid api key")
    assert revoked.until == NOW + DAY


async def test_the_spent_key_is_rechecked_on_the_slow_schedule_not_every_sweep(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    six_accounts(upstream)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=["billing"])
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)
    spent = await stored(store, "main", SPENT)
    assert spent.until == NOW + 6 * HOUR
    before = upstream.probed(SPENT)

    clock.advance(60)
    await checker.sweep(pool, session)
    clock.advance(3 * HOUR)
    await checker.sweep(pool, session)

    assert upstream.probed(SPENT) == before
    assert upstream.probed(HEALTHY) == 2 * 3  # two requests per billing probe, three sweeps
