"""Keys at rest: SQLite and Redis hold keys encrypted (AES-GCM), found by a keyed hash; a store
from the previous version (plaintext) is upgraded in place and keeps no plaintext page; the
secret can be rotated without losing a key, even when interrupted."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import redis

from keyrelay.core.masking import mask
from keyrelay.core.model import Event, KeyState, Transition
from keyrelay.stores.crypto import KeyCipher, SecretMismatch, SecretSource, new_secret, write_key_file
from keyrelay.stores.redis import RedisStore
from keyrelay.stores.sqlite import SQLiteStore

from .conftest import REDIS_URL
from .v1_layout import write_v1_redis, write_v1_sqlite

NOW = 1_700_000_000.0
#: canaries of the shapes providers hand out: OpenAI, prefixless hex (Azure), Gemini, with - and _
CANARIES = [
    "sk-proj-CANARYa1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
    "9f86d081884c7d659a2feaa0c55ad015",
    "AIzaSyCANARY_0123456789-abcdefghijklmn",
    "ms-canary_key-with-dashes_and_underscores-0042",
]


def fragments(secret: str, n: int = 8) -> set[bytes]:
    """Every ``n``-character piece of ``secret`` that reaches past its public prefix (the
    ``sk-proj-`` that :func:`mask` shows and every such key shares)."""
    public = len(mask(secret).split("…")[0])
    return {secret[i:i + n].encode() for i in range(len(secret) - n + 1) if i + n > public}


def leaked(blob: bytes, secrets: list[str]) -> list[str]:
    """The secrets of which some 8-character fragment is in ``blob``."""
    return [s for s in secrets if any(f in blob for f in fragments(s))]


def sqlite_files(db: Path) -> bytes:
    """The database and its WAL / shared-memory / journal files, as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")) if not p.name.endswith(".key"))


def redis_values(prefix: str) -> bytes:
    """Every value of every Redis key under ``prefix``, as bytes."""
    out = []
    with redis.Redis.from_url(REDIS_URL) as client:
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = client.type(name)
            if kind == b"string":
                out.append(client.get(name) or b"")
            elif kind == b"hash":
                out += [b"%s=%s" % kv for kv in client.hgetall(name).items()]
            elif kind == b"list":
                out += client.lrange(name, 0, -1)
            elif kind == b"zset":
                out += client.zrange(name, 0, -1)
            out.append(name)
    return b"\n".join(out)


async def opened_sqlite(db: Path, secret: SecretSource | None = None) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{db}", secret)
    await store.open()
    return store


# -- SQLite -----------------------------------------------------------------------------------


async def test_sqlite_keeps_keys_encrypted_in_private_files_with_a_0600_key_file(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    store = await opened_sqlite(db)
    try:
        added = (await store.add_keys("openai", CANARIES, NOW)).added
        await store.apply(Transition(added[0].id, "openai", 1, KeyState.ACTIVE, KeyState.COOLING, "rate limited",
                                     NOW + 1, NOW + 60))
        assert sorted(r.secret for r in await store.load()) == sorted(CANARIES)
        assert store.created_key_file == f"{db}.key"
        blob = sqlite_files(db)
        assert leaked(blob, CANARIES) == []
        for p in tmp_path.glob("k.db*"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert {p.name for p in tmp_path.glob("k.db*")} >= {"k.db", "k.db-wal", "k.db-shm", "k.db.key"}
    finally:
        await store.close()
    again = await opened_sqlite(db)
    try:
        assert again.created_key_file is None  # the file is created once, then read
        assert sorted(r.secret for r in await again.load()) == sorted(CANARIES)
        dup = await again.add_keys("openai", [CANARIES[1], "brand-new-key-000000000000"], NOW)
        assert [r.secret for r in dup.added] == ["brand-new-key-000000000000"] and len(dup.duplicates) == 1
    finally:
        await again.close()


async def test_a_secret_from_the_environment_is_used_and_no_key_file_is_made(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    secret = SecretSource(new_secret())
    store = await opened_sqlite(db, secret)
    try:
        await store.add_keys("openai", CANARIES, NOW)
    finally:
        await store.close()
    assert not (tmp_path / "k.db.key").exists()
    again = await opened_sqlite(db, secret)
    try:
        assert sorted(r.secret for r in await again.load()) == sorted(CANARIES)
    finally:
        await again.close()


async def test_the_wrong_secret_is_refused_at_open_naming_no_key(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    store = await opened_sqlite(db, SecretSource(new_secret()))
    await store.add_keys("openai", CANARIES, NOW)
    await store.close()

    other = SQLiteStore(f"sqlite:///{db}", SecretSource(new_secret()))
    with pytest.raises(SecretMismatch, match="encrypted with another secret") as caught:
        await other.open()
    assert leaked(str(caught.value).encode(), CANARIES) == []


async def test_a_version_1_file_is_upgraded_and_no_plaintext_stays_in_any_file(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    # v1 stored probe messages unredacted: the upgrade redacts them with the key itself
    ids = write_v1_sqlite(db, "openai", CANARIES, NOW, detail="")
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for kid, secret in zip(ids, CANARIES):
            conn.execute("UPDATE events SET detail = ? WHERE key_id = ? AND reason = 'probe ok'",
                         (f"upstream said: key {secret} is fine", kid))
    os.chmod(db, 0o644)
    assert leaked(sqlite_files(db), CANARIES) == CANARIES  # the old version's file, as found

    store = await opened_sqlite(db)
    try:
        assert {r.id: r.secret for r in await store.load()} == dict(zip(ids, CANARIES))
        events = await store.events(limit=0)
        assert len(events) == 2 * len(CANARIES)
        assert leaked("\n".join(e.detail for e in events).encode(), CANARIES) == []
        blob = sqlite_files(db)
        assert leaked(blob, CANARIES) == [], "plaintext left in the database, its WAL or its shm"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finally:
        await store.close()
    assert leaked(sqlite_files(db), CANARIES) == []


async def test_rotating_the_secret_re_encrypts_every_key_and_leaves_no_old_ciphertext(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    store = await opened_sqlite(db)
    try:
        await store.add_keys("openai", CANARIES, NOW)
        with closing(sqlite3.connect(db)) as conn:
            old_sealed = [row[0] for row in conn.execute("SELECT secret FROM keys")]
        new = KeyCipher(new_secret())

        assert await store.rotate_secret(new) == len(CANARIES)

        assert sorted(r.secret for r in await store.load()) == sorted(CANARIES)
        blob = sqlite_files(db)
        assert not any(s.encode() in blob for s in old_sealed)
    finally:
        await store.close()


async def test_a_rotation_cut_short_after_the_store_committed_is_finished_at_open(tmp_path: Path) -> None:
    """The crash window of `keys rotate-secret`: the store holds the new secret, the key file
    still the old one, and ``<key file>.new`` the new one."""
    db, key_file = tmp_path / "k.db", tmp_path / "k.db.key"
    store = await opened_sqlite(db)
    await store.add_keys("openai", CANARIES, NOW)
    value = new_secret()
    assert write_key_file(f"{key_file}.new", value)
    await store.rotate_secret(KeyCipher(value))
    await store.close()  # "crash": the rename never happened

    again = await opened_sqlite(db)
    try:
        assert sorted(r.secret for r in await again.load()) == sorted(CANARIES)
        assert key_file.read_text().strip() == value and not Path(f"{key_file}.new").exists()
    finally:
        await again.close()


async def test_a_rotation_cut_short_before_the_store_committed_keeps_the_old_secret(tmp_path: Path) -> None:
    db, key_file = tmp_path / "k.db", tmp_path / "k.db.key"
    store = await opened_sqlite(db)
    await store.add_keys("openai", CANARIES, NOW)
    await store.close()
    old = key_file.read_text()
    assert write_key_file(f"{key_file}.new", new_secret())  # then the process died

    again = await opened_sqlite(db)
    try:
        assert sorted(r.secret for r in await again.load()) == sorted(CANARIES)
        assert key_file.read_text() == old and not Path(f"{key_file}.new").exists()
    finally:
        await again.close()


# -- Redis ------------------------------------------------------------------------------------


async def test_redis_holds_no_plaintext_key_and_finds_duplicates_by_keyed_hash(
    new_redis_url: Callable[[], str],
) -> None:
    url = new_redis_url()
    secret = SecretSource(new_secret())
    store = RedisStore(url, secret)
    await store.open()
    try:
        added = (await store.add_keys("openai", CANARIES, NOW)).added
        await store.record_event(Event(added[0].id, "openai", NOW, "probe", "active", "active", "probe ok", "fine"))
        assert leaked(redis_values(store.names.prefix), CANARIES) == []
        again = await store.add_keys("openai", CANARIES[:2], NOW)
        assert again.added == () and len(again.duplicates) == 2
        assert await store.remove(added[0].id, NOW)
        readded = await store.add_keys("openai", CANARIES[:1], NOW)
        assert [r.secret for r in readded.added] == CANARIES[:1]  # its keyed hash left with it
    finally:
        await store.close()
    other = RedisStore(url, SecretSource(new_secret()))
    with pytest.raises(SecretMismatch):
        await other.open()


async def test_a_version_1_redis_layout_is_encrypted_in_place(new_redis_url: Callable[[], str]) -> None:
    url = new_redis_url()
    prefix = url.rsplit("prefix=", 1)[1]
    with redis.Redis.from_url(REDIS_URL) as client:
        ids = write_v1_redis(client, prefix, "openai", CANARIES, NOW, detail="echo: {}")
        for kid, secret in zip(ids, CANARIES):  # v1 stored probe messages unredacted
            for name in (f"{prefix}:events", f"{prefix}:events:{kid}"):
                lines = client.lrange(name, 0, -1)
                for i, line in enumerate(lines):
                    if kid.encode() in line and b"echo: {}" in line:
                        client.lset(name, i, line.replace(b"echo: {}", f"echo: {secret}".encode()))
    assert leaked(redis_values(prefix), CANARIES) == CANARIES

    store = RedisStore(url, SecretSource(new_secret()))
    await store.open()
    try:
        assert {r.id: r.secret for r in await store.load()} == dict(zip(ids, CANARIES))
        assert leaked(redis_values(prefix), CANARIES) == []
        assert len(await store.events(limit=0)) == 2 * len(CANARIES)
        assert len((await store.add_keys("openai", CANARIES, NOW)).duplicates) == len(CANARIES)
    finally:
        await store.close()


async def test_redis_rotation_re_encrypts_every_key(new_redis_url: Callable[[], str]) -> None:
    url = new_redis_url()
    store = RedisStore(url, SecretSource(new_secret()))
    await store.open()
    value = new_secret()
    try:
        await store.add_keys("openai", CANARIES, NOW)
        assert await store.rotate_secret(KeyCipher(value)) == len(CANARIES)
        assert len((await store.add_keys("openai", CANARIES, NOW)).duplicates) == len(CANARIES)
    finally:
        await store.close()
    again = RedisStore(url, SecretSource(value))
    await again.open()
    try:
        assert sorted(r.secret for r in await again.load()) == sorted(CANARIES)
        assert leaked(redis_values(again.names.prefix), CANARIES) == []
    finally:
        await again.close()
