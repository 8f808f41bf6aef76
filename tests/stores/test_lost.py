"""A Redis store that loses its data under a running gateway (flushed, or restarted empty) is
noticed: one error line, the gateway keeps serving from memory and writes nothing to the store
until ``keyrelay store init`` (or a migrate) re-initialises it; then it reads it again. Real
Redis; only this test's prefix is deleted (never FLUSHDB a shared server)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from keyrelay.cli.main import cli
from keyrelay.config import parse_settings
from keyrelay.core.model import Event, Outcome, Verdict
from keyrelay.exceptions import StoreLost
from keyrelay.runtime.process import Runtime
from keyrelay.stores.crypto import new_secret

from .conftest import REDIS_URL, redis_cleanup

KEYS = [f"sk-lost-{i}-{'x' * 24}" for i in range(4)]


async def run_cli(conf: Path, env: dict[str, str], *args: str) -> Result:
    """The CLI in a thread (it runs its own event loop), as a person would at the same time."""
    return await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--config", str(conf)], env=env)


def held(prefix: str) -> list[bytes]:
    with redis.Redis.from_url(REDIS_URL) as client:
        return list(client.scan_iter(match=f"{prefix}:*", count=1000))


async def test_a_flushed_store_is_noticed_once_served_from_memory_and_not_written_until_init(
    new_redis_url: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = new_redis_url()
    prefix = url.rsplit("prefix=", 1)[1]
    env = {"KEYRELAY_SECRET_KEY": new_secret()}
    doc = {"store": {"url": url}, "pools": [{"name": "openai", "base_url": "http://127.0.0.1:9/v1"}]}
    rt = Runtime(parse_settings(doc, env))
    await rt.store.open()
    try:
        await rt.store.add_keys("openai", KEYS, time.time())
        await rt.sync()
        pool = rt.pools["openai"]
        assert pool.eligible_count() == 4

        await redis_cleanup(prefix)  # the server "restarted empty" for this store
        caplog.set_level(logging.WARNING, logger="keyrelay.store")

        lease = pool.acquire()
        assert lease is not None
        limited = Verdict(Outcome.RATE_LIMITED, 429, retry_after=30.0)
        t = pool.observe(lease, limited)
        assert t is not None
        await pool.persist(t, limited, lease.version)  # queued, not written
        pool.observe(pool.acquire() or lease, Verdict.ok(200))
        for _ in range(3):
            with pytest.raises(StoreLost):
                await rt.sync()
            with pytest.raises(StoreLost):
                await rt.flush()
        with pytest.raises(StoreLost):
            await rt.store.record_event(Event(lease.key_id, "openai", time.time(), "checker", "active", "active", "x"))

        assert held(prefix) == []  # nothing written back: no half-store under the prefix
        assert len(pool.records()) == 4 and pool.eligible_count() == 3  # serving from memory
        lost_lines = [r for r in caplog.records if "lost its data" in r.getMessage()]
        assert len(lost_lines) == 1 and lost_lines[0].levelno == logging.ERROR
        assert "keyrelay store init" in lost_lines[0].getMessage()

        conf = tmp_path / "keyrelay.toml"
        conf.write_text(f'[store]\nurl = "{url}"\n[[pools]]\nname = "openai"\n')
        listed = await run_cli(conf, env, "keys", "list")
        assert listed.exit_code == 2 and "keyrelay store init" in listed.stderr  # a read does not re-create it
        assert held(prefix) == []
        init = await run_cli(conf, env, "store", "init")
        assert init.exit_code == 0, init.output
        assert "initialised (empty)" in init.stdout
        again = await run_cli(conf, env, "store", "init")
        assert "already initialised (0 keys)" in again.stdout

        with pytest.raises(StoreLost):  # the first call after re-initialisation notices it, writing nothing
            await rt.sync()
        assert held(prefix) != [] and rt.store.epoch == 1  # type: ignore[attr-defined]
        await rt.sync()  # read from the start
        await rt.flush()
        assert not any(pool.backlog for pool in rt.pools.values())  # the lost store's queue is dropped
        (added,) = (await rt.store.add_keys("openai", ["sk-after-init-" + "y" * 20], time.time())).added
        await rt.sync()
        assert added.id in {r.id for r in pool.records()} and len(pool.records()) == 5
        assert [r for r in caplog.records if "re-initialised" in r.getMessage()]
    finally:
        await rt.store.close()
