"""The checker as the gateway runs it (a background task of the runtime) and as ``keyrelay check``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import Clock
from checker.test_billing_sweep import EXPIRED, HEALTHY, SIX, SPENT, six_accounts
from keyrelay.cli.main import cli
from keyrelay.config import PoolSettings, Settings
from keyrelay.core.model import KeyState
from keyrelay.core.policy import CheckerPolicy
from keyrelay.runtime.process import Runtime
from keyrelay.stores.base import key_id_for
from keyrelay.stores.memory import MemoryStore
from keyrelay.stores.sqlite import SQLiteStore


def settings(base_url: str, store_url: str = "memory://", enabled: bool = True) -> Settings:
    checker = CheckerPolicy(enabled=enabled, probes=("billing",), interval=0.05, max_rate=0)
    return Settings(store_url=store_url, pools=(PoolSettings("main", base_url=base_url, default=True, checker=checker),))


async def test_the_runtime_runs_the_checker_when_a_pool_enables_it(upstream: BillingUpstream) -> None:
    six_accounts(upstream)
    store = MemoryStore()
    await store.add_keys("main", list(SIX), 0.0)
    runtime = Runtime(settings(upstream.base_url), store, clock=Clock())
    await runtime.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if runtime.default_pool.eligible_count() == 4:
                break
    finally:
        await runtime.stop()

    got = {r.secret: r.state for r in await store.load()}
    assert (got[EXPIRED], got[SPENT], got[HEALTHY]) == (KeyState.INVALID, KeyState.EXHAUSTED, KeyState.ACTIVE)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "keyrelay-checker"]


async def test_the_runtime_starts_no_checker_when_none_is_enabled(upstream: BillingUpstream) -> None:
    six_accounts(upstream)
    store = MemoryStore()
    await store.add_keys("main", list(SIX), 0.0)
    runtime = Runtime(settings(upstream.base_url, enabled=False), store)
    await runtime.start()
    try:
        await asyncio.sleep(0.2)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "keyrelay-checker"]
    finally:
        await runtime.stop()
    assert upstream.requests == []


def _config(tmp_path: Path, base_url: str) -> Path:
    conf = tmp_path / "keyrelay.toml"
    conf.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "kr.db"}"\n'
        f'[[pools]]\nname = "main"\nbase_url = "{base_url}"\n'
        '[pools.checker]\nprobes = ["billing"]\n'
    )
    return conf


async def _seed(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'kr.db'}")
    await store.open()
    await store.add_keys("main", list(SIX), 0.0)
    await store.close()


def test_keyrelay_check_runs_one_sweep_and_prints_what_changed(tmp_path: Path) -> None:
    up = BillingUpstream()
    six_accounts(up)
    up.accounts[EXPIRED].access_until = 1.0  # long expired, whatever the wall clock says
    up.accounts[SPENT].access_until = 0.0
    up.accounts[HEALTHY].access_until = 4_000_000_000.0  # 2096
    asyncio.run(_seed(tmp_path))
    with up.in_thread() as base:
        conf = _config(tmp_path, base)
        dry = CliRunner().invoke(cli, ["check", "--config", str(conf), "--dry-run"])
        real = CliRunner().invoke(cli, ["check", "--config", str(conf)])
        keys = CliRunner().invoke(cli, ["keys", "list", "--config", str(conf), "--json"])
        events = CliRunner().invoke(cli, ["events", "--config", str(conf), "--json"])

    assert dry.exit_code == 0, dry.output
    assert "2 would change" in dry.output and "nothing was written" in dry.output
    assert real.exit_code == 0, real.output
    assert "active → invalid" in real.output and "active → exhausted" in real.output
    assert "pool main: probed 6 keys; 2 changed, 2 unknown" in real.output
    assert "sk-expired" not in real.output  # keys only ever masked
    listed = {k["id"]: k for k in json.loads(keys.output)}
    assert listed[key_id_for("main", EXPIRED)]["state"] == "invalid"
    assert listed[key_id_for("main", HEALTHY)]["balance"] is not None
    checker_events = [e for e in json.loads(events.output) if e["actor"] == "checker"]
    assert {(e["from"], e["to"]) for e in checker_events} >= {("active", "invalid"), ("active", "exhausted")}


def test_keyrelay_check_json_and_probe_override(tmp_path: Path) -> None:
    up = BillingUpstream()
    up.accounts.update({s: Account() for s in SIX})
    up.accounts[HEALTHY].valid = False
    asyncio.run(_seed(tmp_path))
    with up.in_thread() as base:
        conf = _config(tmp_path, base)
        result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--probe", "models", "--json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 6 and {r["probe"] for r in rows} == {"models"}
    bad = next(r for r in rows if r["key_id"] == key_id_for("main", HEALTHY))
    assert (bad["before"], bad["after"], bad["result"], bad["status"]) == ("active", "invalid", "invalid", 401)


def test_keyrelay_check_refuses_a_probe_the_pool_cannot_run(tmp_path: Path) -> None:
    conf = _config(tmp_path, "http://127.0.0.1:9/v1")

    result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--probe", "balance"])

    assert result.exit_code == 2
    assert "balance_api" in result.output
