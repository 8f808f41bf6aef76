"""What only the SQLite store promises: a file shared by processes, durable, versioned."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio

from keyrelay.core.model import Counters, KeyState, Transition
from keyrelay.stores.base import hash_token
from keyrelay.stores.sqlite import SCHEMA_VERSION, SQLiteStore

NOW = 1_700_000_000.0


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keyrelay.db"


@pytest_asyncio.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(url_of(db))
    await s.open()
    yield s
    await s.close()


@pytest_asyncio.fixture
async def other(db: Path, store: SQLiteStore) -> AsyncIterator[SQLiteStore]:
    """A second instance on the same file, as another process would have."""
    s = SQLiteStore(url_of(db))
    await s.open()
    yield s
    await s.close()


def cooling(key_id: str, version: int, at: float = NOW + 1) -> Transition:
    return Transition(key_id, "openai", version, KeyState.ACTIVE, KeyState.COOLING, "rate limited", at, at + 60)


async def test_everything_persists_across_close_and_reopen(db: Path) -> None:
    first = SQLiteStore(url_of(db))
    await first.open()
    (rec,) = (await first.add_keys("openai", ["sk-persist"], NOW)).added
    await first.apply(cooling(rec.id, 1))
    await first.add_counters({rec.id: Counters(requests=3, successes=2)})
    await first.set_balance(rec.id, 4.25, "USD")
    await first.create_token("ci", ["openai"], hash_token("kr-1"), NOW)
    before = (await first.load(), await first.events(), await first.changes(0), await first.list_tokens())
    await first.close()

    again = SQLiteStore(url_of(db))
    await again.open()
    try:
        after = (await again.load(), await again.events(), await again.changes(0), await again.list_tokens())
    finally:
        await again.close()
    assert after == before
    (loaded,) = after[0]
    assert (loaded.secret, loaded.state, loaded.counters.requests, loaded.balance) == (
        "sk-persist", KeyState.COOLING, 3, 4.25
    )


async def test_the_database_is_in_wal_mode(store: SQLiteStore, db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == SCHEMA_VERSION


async def test_two_instances_see_each_others_changes(store: SQLiteStore, other: SQLiteStore) -> None:
    (rec,) = (await store.add_keys("openai", ["sk-shared"], NOW)).added

    seen = await other.changes(0)
    assert seen.records == (rec,)

    new = await other.apply(cooling(rec.id, 1))
    changed = await store.changes(seen.cursor)
    assert changed.records == (new,) and changed.cursor > seen.cursor

    await store.remove(rec.id, NOW + 2)
    gone = await other.changes(changed.cursor)
    assert gone.removed == (rec.id,) and gone.records == ()


async def test_racing_applies_with_the_same_version_have_exactly_one_winner(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    added = (await store.add_keys("openai", [f"sk-race-{i}" for i in range(30)], NOW)).added

    for rec in added:
        a, b = await asyncio.gather(
            store.apply(cooling(rec.id, 1, NOW + 1)),
            other.apply(Transition(rec.id, "openai", 1, KeyState.ACTIVE, KeyState.INVALID, "401", NOW + 1)),
        )
        assert (a is None) != (b is None)
        stored = await other.get(rec.id)
        assert stored == (a or b) and stored is not None and stored.version == 2
        assert len(await store.events(rec.id)) == 2


async def test_a_hundred_thousand_keys_import_in_one_call(store: SQLiteStore) -> None:
    secrets = [f"sk-bulk-{i:06d}" for i in range(100_000)]
    started = time.perf_counter()

    result = await store.add_keys("bulk", secrets, NOW)
    loaded = await store.load("bulk")

    assert time.perf_counter() - started < 10
    assert len(result.added) == 100_000 and result.duplicates == ()
    assert {r.secret for r in loaded} == set(secrets)
    assert len(await store.events(limit=0)) == 100_000
    again = await store.add_keys("bulk", [*secrets[:1000], "sk-bulk-new"], NOW)
    assert len(again.duplicates) == 1000 and [r.secret for r in again.added] == ["sk-bulk-new"]


async def test_a_newer_schema_is_refused_with_a_clear_error(db: Path) -> None:
    s = SQLiteStore(url_of(db))
    await s.open()
    await s.close()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (SCHEMA_VERSION + 1,))

    newer = SQLiteStore(url_of(db))
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade keyrelay"):
        await newer.open()
    with pytest.raises(RuntimeError, match="not open"):
        await newer.load()


async def test_a_missing_directory_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "keyrelay.db"

    with pytest.raises(FileNotFoundError, match=str(missing.parent)):
        await SQLiteStore(url_of(missing)).open()
    assert not missing.parent.exists()


async def test_urls_are_read_like_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteStore("sqlite:///data/k.db").path == "data/k.db"
    assert SQLiteStore("sqlite:////var/lib/k.db").path == "/var/lib/k.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite://k.db", "postgres:///k.db", "sqlite:///k.db?mode=ro"):
        with pytest.raises(ValueError):
            SQLiteStore(bad)

    relative = SQLiteStore("sqlite:///relative.db")
    await relative.open()
    await relative.close()
    assert (tmp_path / "relative.db").exists()


async def test_a_closed_store_refuses_calls_and_closing_twice_is_harmless(db: Path) -> None:
    s = SQLiteStore(url_of(db))
    await s.open()
    await s.close()
    await s.close()

    with pytest.raises(RuntimeError, match="not open"):
        await s.load()


_WRITER = """
import asyncio, sys
from keyrelay.core.model import KeyState, Transition
from keyrelay.stores.sqlite import SQLiteStore

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    await store.open()
    i = 0
    while True:
        (rec,) = (await store.add_keys("openai", [f"sk-durable-{i:06d}"], float(i))).added
        print("added", rec.id, flush=True)
        t = Transition(rec.id, "openai", 1, KeyState.ACTIVE, KeyState.COOLING, "rate limited", i + 0.5, i + 60.0)
        new = await store.apply(t)
        assert new is not None
        print("cooled", rec.id, flush=True)
        i += 1

asyncio.run(main())
"""


def _run_writer_and_kill_it(db: Path, tmp_path: Path, after_acks: int) -> list[tuple[str, str]]:
    """Start the writer, SIGKILL it once it printed ``after_acks`` acks; every ack it printed."""
    acks: list[tuple[str, str]] = []
    with (tmp_path / "writer.err").open("w") as err, subprocess.Popen(
        [sys.executable, "-c", _WRITER, url_of(db)], stdout=subprocess.PIPE, stderr=err, text=True
    ) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            while len(acks) < after_acks:
                line = proc.stdout.readline()
                assert line, f"writer died early: {(tmp_path / 'writer.err').read_text()}"
                kind, kid = line.split()
                acks.append((kind, kid))
            assert proc.poll() is None  # still writing when killed
            os.kill(proc.pid, signal.SIGKILL)
            # Acks printed before the kill are still in the pipe: they count too.
            acks += [(kind, kid) for kind, kid in (line.split() for line in proc.stdout if line.endswith("\n"))]
        finally:
            watchdog.cancel()
        assert proc.wait() == -signal.SIGKILL
    return acks


async def test_every_acknowledged_write_survives_kill_9(db: Path, tmp_path: Path) -> None:
    acks = await asyncio.to_thread(_run_writer_and_kill_it, db, tmp_path, 300)

    reopened = SQLiteStore(url_of(db))
    await reopened.open()
    try:
        records = {r.id: r for r in await reopened.load()}
        events = await reopened.events(limit=0)
    finally:
        await reopened.close()
    assert len(acks) >= 300
    logged = {(e.key_id, e.to_state) for e in events}
    for kind, kid in acks:
        assert kid in records
        if kind == "added":
            assert (kid, "active") in logged
        else:
            assert records[kid].state is KeyState.COOLING and records[kid].version == 2
            assert (kid, "cooling") in logged
