"""A store written by the previous keyrelay (schema version 1) opens with this one and is
upgraded in place: its keys load and work, new fields read as their defaults."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import redis

from keyrelay.core.model import COUNTER_FIELDS, Counters, KeyState, Transition
from keyrelay.stores.redis import RedisStore
from keyrelay.stores.redis_schema import SCHEMA_VERSION as REDIS_VERSION
from keyrelay.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from keyrelay.stores.usage import HOUR, MINUTE, key_scope, pool_scope, usage_rows

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


async def test_a_version_4_sqlite_file_keeps_its_usage_buckets(tmp_path: Path) -> None:
    """Version 5 keys the usage buckets by time first; the buckets of a version-4 file (keyed by
    scope first, with an index by age) read back the same after the upgrade."""
    db = tmp_path / "v4.db"
    hour_start = 1_800_000_000.0  # a whole hour
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    rows = usage_rows("openai", {"k1": Counters(requests=2, successes=2, prompt_tokens=7), "k2": Counters(requests=1)})
    for at in (hour_start, hour_start + 70, hour_start + 3700):
        await store.add_usage(at, rows)
    before = {(scope, step): await store.usage(scope, step, hour_start - HOUR, hour_start + 3 * HOUR)
              for scope in (pool_scope("openai"), key_scope("k1"), key_scope("k2")) for step in (MINUTE, HOUR)}
    await store.close()
    cols = ", ".join(COUNTER_FIELDS)
    with closing(sqlite3.connect(db)) as conn, conn:  # back to the version-4 layout
        conn.execute(
            "CREATE TABLE usage4 (scope TEXT NOT NULL, step INTEGER NOT NULL, t REAL NOT NULL, "
            + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTER_FIELDS)
            + ", PRIMARY KEY (scope, step, t)) WITHOUT ROWID"
        )
        conn.execute(f"INSERT INTO usage4(scope, step, t, {cols}) SELECT scope, step, t, {cols} FROM usage")
        conn.execute("DROP TABLE usage")
        conn.execute("ALTER TABLE usage4 RENAME TO usage")
        conn.execute("CREATE INDEX usage_age ON usage(step, t)")
        conn.execute("UPDATE meta SET value = 4 WHERE name = 'schema_version'")

    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        after = {(scope, step): await store.usage(scope, step, hour_start - HOUR, hour_start + 3 * HOUR) for scope, step in before}
        assert after == before
        assert [c.requests for _, c in after[(key_scope("k1"), MINUTE)]] == [2, 2, 2]
        assert [c.requests for _, c in after[(pool_scope("openai"), HOUR)]] == [6, 3]
        await store.add_usage(hour_start + 3710, rows)  # the new layout takes writes into the old buckets
        assert [c.requests for _, c in await store.usage(key_scope("k2"), HOUR, hour_start, hour_start + 2 * HOUR)] == [2, 2]
    finally:
        await store.close()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'usage_age'").fetchone() is None
