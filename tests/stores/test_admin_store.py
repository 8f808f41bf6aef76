"""What every store keeps for the admin API: admin tokens, events by query, usage buckets over
time; and the SQLite/Redis upgrade to layout version 3 (admin tokens, usage)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from keyrelay.core.model import Counters, KeyState, Transition
from keyrelay.stores.base import Store, hash_token
from keyrelay.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from keyrelay.stores.usage import HOUR, MINUTE, RETENTION, EventQuery, key_scope, pool_scope, usage_rows

NOW = 1_800_000_000.0  # a whole hour: bucket arithmetic stays readable


# -- admin tokens -------------------------------------------------------------------------------


async def test_an_admin_token_keeps_its_flag_through_find_list_and_revoke(store: Store) -> None:
    admin = await store.create_token("ops", [], hash_token("kr-admin"), NOW, admin=True)
    client = await store.create_token("app", ["openai"], hash_token("kr-client"), NOW + 1)
    assert admin.admin and not client.admin
    found = await store.find_token(hash_token("kr-admin"))
    assert found is not None and found.admin and found.name == "ops"
    found_client = await store.find_token(hash_token("kr-client"))
    assert found_client is not None and not found_client.admin
    assert [(t.name, t.admin) for t in await store.list_tokens()] == [("ops", True), ("app", False)]
    assert await store.revoke_token("ops", NOW + 2)
    assert await store.find_token(hash_token("kr-admin")) is None
    listed = {t.name: t for t in await store.list_tokens()}
    assert listed["ops"].admin and listed["ops"].revoked


async def test_added_keys_record_who_added_them(store: Store) -> None:
    res = await store.add_keys("openai", ["sk-actor-test-0001"], NOW, actor="ops")
    (ev,) = await store.events(res.added[0].id)
    assert (ev.actor, ev.to_state) == ("ops", "active")


# -- events by query ----------------------------------------------------------------------------


async def _history(store: Store) -> tuple[str, str]:
    a, _b = (await store.add_keys("openai", ["sk-query-aaaa-0001", "sk-query-bbbb-0002"], NOW)).added
    (c,) = (await store.add_keys("other", ["sk-query-cccc-0003"], NOW + 1)).added
    for i in range(3):
        rec = await store.get(a.id)
        assert rec is not None
        to = KeyState.DISABLED if rec.state is KeyState.ACTIVE else KeyState.ACTIVE
        await store.apply(Transition(a.id, "openai", rec.version, rec.state, to, f"step {i}", NOW + 10 + i, actor="ops"))
    return a.id, c.id


async def test_events_page_back_newest_first_by_number(store: Store) -> None:
    await _history(store)
    first = await store.query_events(EventQuery(limit=2))
    assert [e.reason for e in first] == ["step 2", "step 1"]
    rest = await store.query_events(EventQuery(before=first[-1].seq, limit=100))
    assert [e.reason for e in rest] == ["step 0", "added", "added", "added"]
    assert all(e.seq < first[-1].seq for e in rest)


async def test_events_filter_by_key_pool_and_time(store: Store) -> None:
    a, c = await _history(store)
    assert [e.reason for e in await store.query_events(EventQuery(key_id=a))] == ["step 2", "step 1", "step 0", "added"]
    assert [e.key_id for e in await store.query_events(EventQuery(pool="other"))] == [c]
    timed = await store.query_events(EventQuery(since=NOW + 10, until=NOW + 12))
    assert [e.reason for e in timed] == ["step 1", "step 0"]


async def test_events_after_a_number_come_oldest_first(store: Store) -> None:
    await _history(store)
    (newest_added,) = await store.query_events(EventQuery(pool="other"))
    after = await store.query_events(EventQuery(after=newest_added.seq, limit=2))
    assert [e.reason for e in after] == ["step 0", "step 1"]


# -- usage buckets ------------------------------------------------------------------------------


async def test_usage_adds_up_in_minute_and_hour_buckets(store: Store) -> None:
    rows = usage_rows("openai", {"k1": Counters(requests=2, successes=1, rate_limited=1, prompt_tokens=10),
                                 "k2": Counters(requests=1, successes=1, completion_tokens=5)})
    await store.add_usage(NOW + 5, rows)
    await store.add_usage(NOW + 50, rows)  # same minute
    await store.add_usage(NOW + 65, rows)  # next minute, same hour
    minutes = await store.usage(pool_scope("openai"), MINUTE, NOW - 600, NOW + 600)
    assert [(t, c.requests, c.rate_limited, c.prompt_tokens, c.completion_tokens) for t, c in minutes] == [
        (NOW, 6, 2, 20, 10), (NOW + 60, 3, 1, 10, 5),
    ]
    hours = await store.usage(key_scope("k1"), HOUR, NOW - HOUR, NOW + HOUR)
    assert [(t, c.requests, c.successes) for t, c in hours] == [(NOW, 6, 3)]
    assert await store.usage(key_scope("nobody"), MINUTE, NOW - 600, NOW + 600) == []


async def test_old_usage_buckets_are_pruned(store: Store) -> None:
    rows = usage_rows("openai", {"k1": Counters(requests=1)})
    await store.add_usage(NOW, rows)
    later = NOW + RETENTION[MINUTE] + 2 * MINUTE
    await store.add_usage(later, rows)
    minutes = await store.usage(pool_scope("openai"), MINUTE, NOW - HOUR, later + MINUTE)
    if isinstance(store, SQLiteStore) or type(store).__name__ == "MemoryStore":
        assert [t for t, _ in minutes] == [later - later % MINUTE]
    hours = await store.usage(pool_scope("openai"), HOUR, NOW - HOUR, later + HOUR)
    assert sum(c.requests for _, c in hours) == 2  # hour buckets are kept longer


async def test_a_keys_hours_hold_its_minutes_before_and_after_they_are_pruned(store: Store) -> None:
    """A key's hour buckets count every minute of the hour, read while its minutes are kept and
    after they are gone (SQLite sums a key's minutes into its hours a whole hour at a time)."""
    rows = usage_rows("openai", {"k1": Counters(requests=2, successes=1, rate_limited=1, prompt_tokens=10)})
    for at in (NOW + 5, NOW + 65, NOW + 1805, NOW + HOUR + 10):
        await store.add_usage(at, rows)
    expect = [(NOW, 6, 3, 30), (NOW + HOUR, 2, 1, 10)]

    def seen(found: list[tuple[float, Counters]]) -> list[tuple[float, int, int, int]]:
        return [(t, c.requests, c.successes, c.prompt_tokens) for t, c in found if c.requests]

    assert seen(await store.usage(key_scope("k1"), HOUR, NOW - HOUR, NOW + 3 * HOUR)) == expect
    assert seen(await store.usage(key_scope("k1"), HOUR, NOW + HOUR, NOW + 3 * HOUR)) == expect[1:]
    later = NOW + RETENTION[MINUTE] + 3 * HOUR  # every minute above is past its retention, and pruned
    await store.add_usage(later, usage_rows("openai", {"k2": Counters(requests=1)}))
    assert seen(await store.usage(key_scope("k1"), HOUR, NOW - HOUR, later + HOUR)) == expect
    if isinstance(store, SQLiteStore) or type(store).__name__ == "MemoryStore":  # Redis: expired by its own clock
        assert await store.usage(key_scope("k1"), MINUTE, NOW - HOUR, NOW + 2 * HOUR) == []
    assert seen(await store.usage(pool_scope("openai"), HOUR, NOW - HOUR, NOW + 3 * HOUR)) == expect
    await store.add_usage(later + 60, rows)  # the fold happens once: nothing counted twice
    assert seen(await store.usage(key_scope("k1"), HOUR, NOW - HOUR, NOW + 3 * HOUR)) == expect


# -- the upgrade from layout 1 ------------------------------------------------------------------


async def test_a_version_1_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('schema_version', 1), ('cursor', 0);
        CREATE TABLE tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, pools TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL NOT NULL DEFAULT 0);
        """
    )
    h = hash_token("kr-old")
    conn.execute("INSERT INTO tokens VALUES (?, 'old', '[\"openai\"]', ?, 1.0, 0)", ("t" + h[:10], h))
    conn.commit()
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        old = await store.find_token(hash_token("kr-old"))
        assert old is not None and old.name == "old" and not old.admin
        await store.create_token("ops", [], hash_token("kr-admin"), NOW, admin=True)
        await store.add_usage(NOW, {"pool:openai": Counters(requests=1)})
        assert [c.requests for _, c in await store.usage("pool:openai", MINUTE, NOW, NOW + 60)] == [1]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_layout_1_redis_store_is_upgraded_and_its_tokens_stay_client_tokens(new_redis_url) -> None:
    import json

    import redis.asyncio as aioredis

    from keyrelay.stores.redis import RedisStore

    url = new_redis_url()
    store = RedisStore(url)
    n = store.names
    raw = aioredis.from_url(url.split("?")[0], decode_responses=True)
    h = hash_token("kr-old-redis")
    tid = "t" + h[:10]
    try:
        await raw.set(n.schema, 1)
        await raw.hset(n.tokens, tid, json.dumps([1, tid, "old", ["openai"], h, 1.0]))  # a layout-1 token
        await raw.hset(n.token_names, "old", tid)
        await store.open()
        assert int(await raw.get(n.schema)) == 3
        old = await store.find_token(h)
        assert old is not None and old.name == "old" and not old.admin
        assert [(t.name, t.admin) for t in await store.list_tokens()] == [("old", False)]
    finally:
        await store.close()
        await raw.aclose()
