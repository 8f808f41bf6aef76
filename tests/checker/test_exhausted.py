"""Exhausted keys come back when a probe proves money, by default, on an OpenAI-style upstream;
a spent key's 429 ``insufficient_quota`` reads "still exhausted"; the check reports the state a
key is really in; a person's ``enable`` resets that key's part in the correlated-failure guard;
the ``failures`` column counts only the key's failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from keyrelay.cli.common import failures
from keyrelay.core.machine import ProbeKind, on_admin
from keyrelay.core.model import Counters, KeyState, Outcome, Transition, Verdict
from keyrelay.core.policy import CheckerPolicy
from keyrelay.providers import get_dialect
from keyrelay.providers.balance import BalanceProbe
from keyrelay.providers.money import money_probe
from keyrelay.providers.probes import CompletionProbe, build_probes
from keyrelay.runtime.checker import Checker
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore
from keyrelay.stores.sqlite import SQLiteStore
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream

from .helpers import Clock, make_pool, stored

SPENT = "sk-proj-spent-" + "s" * 30 + "S001"
FUNDED = "sk-proj-funded-" + "f" * 30 + "F001"
CHAT_PATH = "/v1/chat/completions"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream({SPENT: Behavior.QUOTA, FUNDED: Behavior.OK}) as up:
        yield up


async def _exhaust(pool: KeyPool, secret_id: str) -> None:
    """Traffic found the key spent (429 insufficient_quota)."""
    lease = pool.acquire([r.id for r in pool.records() if r.id != secret_id])
    assert lease is not None and lease.key_id == secret_id
    verdict = Verdict(Outcome.QUOTA_EXHAUSTED, 429, "insufficient_quota", reason="insufficient quota")
    t = pool.observe(lease, verdict, release=True)
    assert t is not None
    await pool.persist(t, verdict, lease.version)


async def test_by_default_a_completion_probe_brings_a_refunded_key_back(fake: FakeUpstream) -> None:
    store, clock = MemoryStore(), Clock(time.time())
    pool = await make_pool(store, fake.url, [FUNDED], clock)  # probes: the default ["models"]
    await _exhaust(pool, (await stored(store, "main", FUNDED)).id)
    async with Checker.session() as session:
        report = await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)
    (row,) = report.rows
    assert (row.before, row.after) == (KeyState.EXHAUSTED, KeyState.ACTIVE)
    assert row.result.probe == "completion" and row.result.funds
    rec = await stored(store, "main", FUNDED)
    assert (rec.state, rec.reason) == (KeyState.ACTIVE, "balance back")
    chat = [c for c in fake.calls if c.path == CHAT_PATH]
    assert len(chat) == 1 and json.loads(chat[0].body) == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1
    }


async def test_an_active_key_gets_no_completion_probe(fake: FakeUpstream) -> None:
    store, clock = MemoryStore(), Clock(time.time())
    pool = await make_pool(store, fake.url, [FUNDED], clock)
    async with Checker.session() as session:
        await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)
    assert [c.path for c in fake.calls] == ["/v1/models"]  # no token spent on a live key


async def test_a_key_still_spent_reads_still_exhausted_not_unexpected(fake: FakeUpstream) -> None:
    store, clock = MemoryStore(), Clock(time.time())
    pool = await make_pool(store, fake.url, [SPENT], clock)
    await _exhaust(pool, (await stored(store, "main", SPENT)).id)
    async with Checker.session() as session:
        report = await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)
    (row,) = report.rows
    assert row.result.kind is ProbeKind.EXHAUSTED
    assert (row.before, row.after) == (KeyState.EXHAUSTED, KeyState.EXHAUSTED)
    assert "unexpected" not in row.result.describe() and "insufficient_quota" in row.result.describe()


async def test_opting_out_keeps_the_configured_probes_only(fake: FakeUpstream) -> None:
    store, clock = MemoryStore(), Clock(time.time())
    pool = await make_pool(store, fake.url, [FUNDED], clock, exhausted_probe="off")
    await _exhaust(pool, (await stored(store, "main", FUNDED)).id)
    async with Checker.session() as session:
        await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)
    assert (await stored(store, "main", FUNDED)).state is KeyState.EXHAUSTED
    assert not [c for c in fake.calls if c.path == CHAT_PATH]


async def test_the_models_probe_reads_insufficient_quota_as_exhausted(fake: FakeUpstream) -> None:
    store, clock = MemoryStore(), Clock(time.time())
    pool = await make_pool(store, fake.url, [SPENT], clock)
    async with Checker.session() as session:
        report = await Checker(store, [pool], clock=clock).sweep(pool, session, force=True)
    (row,) = report.rows
    assert row.result.probe == "models" and row.result.kind is ProbeKind.EXHAUSTED
    assert row.after is KeyState.EXHAUSTED


@pytest.mark.parametrize(
    ("base_url", "policy", "expected"),
    [
        ("https://api.openai.com/v1", {}, ("completion", "gpt-4o-mini")),
        ("https://api.groq.com/openai/v1", {}, ("completion", "llama-3.1-8b-instant")),
        ("https://my-proxy.example/v1", {"completion_model": "cheap-1"}, ("completion", "cheap-1")),
        ("https://api.deepseek.com/v1", {}, ("balance", "deepseek")),
        ("https://openrouter.ai/api/v1", {}, ("balance", "openrouter")),
        ("https://api.openai.com/v1", {"exhausted_probe": "off"}, None),
        ("https://api.openai.com/v1", {"probes": ["models", "billing"]}, None),  # billing sees money already
    ],
)
def test_which_probe_can_see_money_per_upstream(base_url: str, policy: dict[str, object], expected: object) -> None:
    p = CheckerPolicy(**policy)  # type: ignore[arg-type]
    dialect = get_dialect("openai")
    probe = money_probe(p, base_url, dialect, build_probes(p, base_url, dialect))
    if expected is None:
        assert probe is None
    elif isinstance(probe, CompletionProbe):
        assert (probe.name, json.loads(probe.body)["model"]) == expected
    else:
        assert isinstance(probe, BalanceProbe) and (probe.name, probe.api) == expected


async def test_the_check_reports_the_state_traffic_sees(tmp_path: Path, fake: FakeUpstream) -> None:
    """A cooling key whose time has passed is active: the JSON says so, not the stored 'cooling'."""
    from cli import invoke

    from keyrelay.core.masking import mask

    db = tmp_path / "k.db"
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    (rec,) = (await store.add_keys("openai", [FUNDED], time.time() - 100)).added
    cooled = Transition(rec.id, "openai", rec.version, KeyState.ACTIVE, KeyState.COOLING, "rate limited",
                        time.time() - 60, until=time.time() - 1)
    assert await store.apply(cooled) is not None
    await store.close()
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{db}"\n[[pools]]\nname = "openai"\nbase_url = "{fake.url}"\n')
    result = await asyncio.to_thread(invoke, cfg, "check", "--json")  # the fake answers on this loop
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["masked"], row["before"], row["after"]) == (mask(FUNDED), "active", "active")


async def test_a_person_enabling_a_key_resets_its_part_in_the_guard() -> None:
    store, clock = MemoryStore(), Clock(time.time())
    secrets = [f"sk-proj-guard{i}-{'g' * 30}{i:04d}" for i in range(8)]
    pool = await make_pool(store, "http://upstream.invalid/v1", secrets, clock)
    ids = [r.id for r in sorted(pool.records(), key=lambda r: r.id)]
    bad = Verdict(Outcome.INVALID_KEY, 401, "invalid_api_key", reason="invalid api key")
    for kid in ids[:5]:  # four retire; the fifth trips the guard and stays in
        lease = pool.acquire([k for k in ids if k != kid])
        assert lease is not None
        t = pool.observe(lease, bad, release=True)
        if t is not None:
            await pool.persist(t, bad, lease.version)
    assert pool.guard.tripped(clock())
    first = await store.get(ids[0])
    assert first is not None and first.state is KeyState.INVALID
    enable = on_admin(first, "enable", clock())
    assert enable is not None
    enabled = await store.apply(enable)
    assert enabled is not None
    pool.upsert(enabled)  # what a gateway does when the store's change feed shows the enable
    clock.advance(0.012)
    lease = pool.acquire([k for k in ids if k != ids[0]])
    assert lease is not None
    assert pool.observe(lease, bad, release=True) is None  # kept in: the guard holds, as for any key
    rec = pool.state.get(ids[0])
    assert rec is not None and rec.state is KeyState.ACTIVE


def test_failures_count_only_what_the_key_failed() -> None:
    c = Counters(requests=20, successes=5, client_error=10, upstream_fault=2, network_error=1, rate_limited=1,
                 quota_exhausted=0, invalid_key=1)
    assert failures(c) == 2  # 404s, 5xx and network errors are not the key's


async def test_keys_list_failures_ignore_client_errors(tmp_path: Path) -> None:
    from cli import invoke

    db = tmp_path / "k.db"
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    (rec,) = (await store.add_keys("openai", [FUNDED], time.time())).added
    await store.add_counters({rec.id: Counters(requests=7, successes=3, client_error=4)})
    await store.close()
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    shown = await asyncio.to_thread(invoke, cfg, "keys", "show", rec.id)
    assert shown.exit_code == 0 and "7 (3 ok, 0 failed)" in shown.stdout
