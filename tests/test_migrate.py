"""``keyrelay migrate``: a store copied into another keeps every key, event and token."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from redis.exceptions import ConnectionError as RedisConnectionError

from keyrelay.cli.migrate import migrate as migrate_command
from keyrelay.core.model import Counters, Event, KeyRecord, KeyState, Transition
from keyrelay.migrate import MigrationMismatch, migrate
from keyrelay.stores import open_store
from keyrelay.stores.base import Store, TokenRecord, hash_token
from keyrelay.stores.memory import MemoryStore
from keyrelay.stores.redis import RedisStore
from keyrelay.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.123456
REDIS_URL = os.environ.get("KEYRELAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis store URL with a fresh prefix, deleted afterwards (fails under CI=true without Redis)."""
    prefix = f"krtest-{uuid.uuid4().hex[:12]}"
    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0) as client:
        try:
            client.ping()
        except (RedisConnectionError, OSError) as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but no Redis answers at {REDIS_URL}: {exc}")
            pytest.skip(f"no Redis at {REDIS_URL}")
        try:
            yield f"{REDIS_URL}?prefix={prefix}"
        finally:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'dst.db'}"


async def opened(store: Store) -> Store:
    await store.open()
    return store


def to(rec: KeyRecord, state: KeyState, at: float, until: float = 0.0, reason: str = "why") -> Transition:
    return Transition(rec.id, rec.pool, rec.version, rec.state, state, reason, at, until, "traffic", "http 429")


async def fill(store: Store) -> None:
    """A store with a bit of everything: two pools, every kind of state, counters, a balance,
    probe events, a removed key, live and revoked tokens."""
    a, b, c, d = (await store.add_keys("openai", ["sk-a", "sk-b", "sk-c", "sk-d"], NOW, weight=2.5, label="team")).added
    (z,) = (await store.add_keys("azure", ["az-1"], NOW + 1, base_url="https://res-1.openai.azure.com")).added
    cooled = await store.apply(to(a, KeyState.COOLING, NOW + 2, NOW + 62.5, "rate limited"))
    assert cooled is not None
    assert await store.apply(to(cooled, KeyState.COOLING, NOW + 3, NOW + 300.25, "rate limited")) is not None
    assert await store.apply(to(b, KeyState.INVALID, NOW + 4, NOW + 86_400, "invalid key")) is not None
    assert await store.apply(to(z, KeyState.EXHAUSTED, NOW + 5, NOW + 21_600, "quota exhausted")) is not None
    await store.add_counters({a.id: Counters(requests=7, successes=5, rate_limited=2, prompt_tokens=1234)})
    await store.add_counters({z.id: Counters(requests=1, quota_exhausted=1)})
    await store.set_balance(c.id, 12.75, "USD")
    await store.record_event(Event(c.id, "openai", NOW + 6, "probe", "active", "active", "probe ok", "balance 12.75"))
    await store.remove(d.id, NOW + 7, actor="alice")
    await store.create_token("ci", ["openai"], hash_token("kr-ci"), NOW)
    await store.create_token("old", ["*"], hash_token("kr-old"), NOW + 1)
    await store.revoke_token("old", NOW + 2)
    await store.create_token("old", ["azure"], hash_token("kr-old-2"), NOW + 3)


async def everything(store: Store) -> tuple[list[KeyRecord], list[Event], list[TokenRecord]]:
    return (
        sorted(await store.load(), key=lambda r: r.id),
        await store.events(limit=0),
        await store.list_tokens(),
    )


async def test_sqlite_to_redis_to_sqlite_keeps_everything(tmp_path: Path, redis_url: str) -> None:
    src = await opened(SQLiteStore(f"sqlite:///{tmp_path / 'src.db'}"))
    mid = await opened(RedisStore(redis_url))
    back = await opened(SQLiteStore(f"sqlite:///{tmp_path / 'back.db'}"))
    try:
        await fill(src)
        original = await everything(src)

        there = await migrate(src, mid)
        again = await migrate(mid, back)

        assert there == again
        assert (there.keys, there.events, there.tokens) == ({"openai": 3, "azure": 1}, 11, 3)
        assert await everything(mid) == original
        assert await everything(back) == original
        records, events, tokens = original
        assert [e.seq for e in events] == list(range(1, 12))  # renumbered in order: same numbers here
        assert any(t.revoked for t in tokens) and await back.find_token(hash_token("kr-ci")) == tokens[0]
        assert await back.find_token(hash_token("kr-old")) is None
        for store in (mid, back):  # imported keys are changes other processes sync
            assert sorted((await store.changes(0)).records, key=lambda r: r.id) == records
            with pytest.raises(ValueError, match="a live token named 'ci'"):
                await store.create_token("ci", ["openai"], hash_token("kr-other"), NOW)
    finally:
        for s in (src, mid, back):
            await s.close()


async def test_a_destination_holding_some_of_the_keys_is_refused_and_left_alone(any_url: str) -> None:
    src = await opened(MemoryStore())
    await fill(src)
    dst = await opened(open_store(any_url))
    try:
        (clash,) = (await dst.add_keys("openai", ["sk-c"], NOW + 50)).added
        before = await everything(dst)

        with pytest.raises(ValueError, match=clash.id):
            await migrate(src, dst)

        assert await everything(dst) == before
    finally:
        await dst.close()


class LossyStore(MemoryStore):
    """Drops the last record it is asked to import."""

    async def import_records(
        self, records: Sequence[KeyRecord], events: Sequence[Event], tokens: Sequence[TokenRecord]
    ) -> None:
        await super().import_records(records[:-1], events, tokens)


async def test_a_destination_that_does_not_match_afterwards_is_reported() -> None:
    src = MemoryStore()
    await fill(src)

    with pytest.raises(MigrationMismatch, match="pool 'azure': 0 keys, expected 1"):
        await migrate(src, LossyStore())


def test_the_cli_copies_a_store_after_confirmation(tmp_path: Path, redis_url: str) -> None:
    src_url = f"sqlite:///{tmp_path / 'src.db'}"

    async def prepare() -> None:
        src = await opened(SQLiteStore(src_url))
        await fill(src)
        await src.close()

    asyncio.run(prepare())
    runner = CliRunner()

    no = runner.invoke(migrate_command, ["--from", src_url, "--to", redis_url], input="n\n")
    assert no.exit_code == 1 and "copy 4 keys (by pool: azure 1, openai 3), 11 events and 3 tokens" in no.output
    yes = runner.invoke(migrate_command, ["--from", src_url, "--to", redis_url], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "copied 4 keys (by pool: azure 1, openai 3), 11 events and 3 tokens" in yes.output
    assert "counts verified" in yes.output

    twice = runner.invoke(migrate_command, ["--from", src_url, "--to", redis_url, "--yes"])
    assert twice.exit_code == 2 and "already in the destination" in twice.output
    same = runner.invoke(migrate_command, ["--from", src_url, "--to", src_url, "--yes"])
    assert same.exit_code == 2
    dead = runner.invoke(migrate_command, ["--from", src_url, "--to", "redis://:pw@127.0.0.1:1/0", "--yes"])
    assert dead.exit_code == 2 and "redis://:***@127.0.0.1:1/0" in dead.output and "pw@" not in dead.output


async def test_events_carrying_a_key_are_copied_without_it(any_url: str) -> None:
    """An event written by an older keyrelay (or any writer) with a key in its evidence loses
    the key on the way into the destination, whatever its shape."""
    secret = "9c0ffee0123456789abcdef0123456789"
    rec = KeyRecord("k" + "0" * 11, "azure", secret, added_at=NOW)
    leaked = Event(rec.id, "azure", NOW, "checker", "active", "invalid", f"401 for {secret}", f"code {secret[:20]}")
    dst = await opened(open_store(any_url))
    try:
        await dst.import_records([rec], [leaked], [])
        (copied,) = await dst.events(rec.id)
        assert "401 for" in copied.reason
        text = copied.reason + copied.detail
        assert not any(secret[i:i + 8] in text for i in range(len(secret) - 7))
        assert (await dst.get(rec.id)) == rec
    finally:
        await dst.close()
