"""A store written by the previous keyrelay (schema version 1) opens with this one and is
upgraded in place: its keys load and work, new fields read as their defaults."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import redis

from keyrelay.core.model import Counters, KeyState, Transition
from keyrelay.stores.redis import RedisStore
from keyrelay.stores.redis_schema import SCHEMA_VERSION as REDIS_VERSION
from keyrelay.stores.sqlite import SCHEMA_VERSION, SQLiteStore

from .conftest import REDIS_URL
from .v1_layout import write_v1_redis, write_v1_sqlite

NOW = 1_700_000_000.0
SECRETS = ["sk-upgrade-aaaaaaaaaaaaaaaaaaaaaaaa", "0123456789abcdef0123456789abcdef"]


async def test_a_version_1_sqlite_file_is_upgraded_and_its_keys_work(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    ids = write_v1_sqlite(db, "openai", SECRETS, NOW)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE keys SET requests = 7, successes = 6, rate_limited = 1, prompt_tokens = 90 WHERE id = ?", (ids[0],))

    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        loaded = {r.id: r for r in await store.load()}
        assert {r.secret for r in loaded.values()} == set(SECRETS)
        assert set(loaded) == set(ids) and all(r.base_url is None for r in loaded.values())
        # the counters kept (since version 4 in a table of their own)
        assert loaded[ids[0]].counters == Counters(requests=7, successes=6, rate_limited=1, prompt_tokens=90)
        assert loaded[ids[1]].counters == Counters()
        rec = loaded[ids[0]]
        moved = await store.apply(
            Transition(rec.id, rec.pool, rec.version, rec.state, KeyState.COOLING, "rate limited", NOW + 5, NOW + 60)
        )
        assert moved is not None and moved.secret == SECRETS[0] and moved.counters == loaded[ids[0]].counters
        assert len(await store.events(limit=0)) == 2 * len(SECRETS) + 1
        (added,) = (await store.add_keys("openai", ["sk-new-after-upgrade"], NOW, base_url="https://x.example")).added
        assert (await store.get(added.id)) == added
    finally:
        await store.close()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_1_redis_layout_is_upgraded_and_its_keys_work(new_redis_url: Callable[[], str]) -> None:
    url = new_redis_url()
    prefix = url.rsplit("prefix=", 1)[1]
    with redis.Redis.from_url(REDIS_URL) as client:
        ids = write_v1_redis(client, prefix, "openai", SECRETS, NOW)

    store = RedisStore(url)
    await store.open()
    try:
        loaded = {r.id: r for r in await store.load()}
        assert {r.secret for r in loaded.values()} == set(SECRETS)
        assert set(loaded) == set(ids) and all(r.base_url is None for r in loaded.values())
        rec = loaded[ids[1]]
        moved = await store.apply(
            Transition(rec.id, rec.pool, rec.version, rec.state, KeyState.INVALID, "invalid key", NOW + 5, NOW + 60)
        )
        assert moved is not None and moved.secret == SECRETS[1]
        assert len(await store.events(limit=0)) == 2 * len(SECRETS) + 1
    finally:
        await store.close()
    with redis.Redis.from_url(REDIS_URL) as client:
        assert int(client.get(f"{prefix}:schema") or 0) == REDIS_VERSION
