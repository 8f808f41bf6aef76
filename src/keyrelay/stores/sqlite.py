"""``sqlite:///path``: the embedded default store, one file shared by every local process.

The CLI, the gateway and its worker processes may open the same file at once. WAL lets
readers run alongside the one writer; every write is a ``BEGIN IMMEDIATE`` transaction, so
the version check of :meth:`SQLiteStore.apply` and its write are one atomic step across
processes. Other processes learn of changes by polling :meth:`SQLiteStore.changes` with the
cursor kept in ``meta``: every key add, transition and removal bumps it and stamps the row
with the new value; counters and balances do not.

Keys are encrypted at rest (:mod:`keyrelay.stores.crypto`): decrypted when records are read
(load, sync), never per request. The file and its WAL / shared-memory files are created 0600,
``secure_delete`` zeroes what a write replaces, and after an upgrade from plaintext (schema 1)
or a secret rotation the WAL is checkpointed and truncated and the file VACUUMed, so no old
page holding a plaintext key (or a key under the old secret) stays in any of the files.

All database calls run on one dedicated worker thread that owns the only connection, so
the event loop never blocks on disk or on another process's lock. A call cancelled while
its transaction runs still completes (or rolls back) on the worker: never half-written.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from operator import add
from typing import TypeVar

from keyrelay.core.model import Counters, Event, KeyRecord, Transition
from keyrelay.stores.base import AddResult, Changes, coalesces, key_id_for
from keyrelay.stores.crypto import KeyCipher, KeyRing, SecretSource, key_ring, new_secret
from keyrelay.stores.evidence import scrub_event, scrub_transition
from keyrelay.stores.sqlite_base import CHUNK, bump, in_tx, insert_events
from keyrelay.stores.sqlite_files import path_of, private, scrub
from keyrelay.stores.sqlite_schema import (
    ADD_COUNTERS,
    EVENT_COLUMNS,
    KEY_COLUMNS,
    KEYS,
    SCHEMA_VERSION,
    ZERO,
    create_schema,
    record_of,
    reencrypt,
)
from keyrelay.stores.sqlite_tokens import SQLiteTokens
from keyrelay.stores.sqlite_usage import events_sql, read_usage, write_key_sums, write_usage
from keyrelay.stores.usage import EventQuery

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

_T = TypeVar("_T")


class SQLiteStore(SQLiteTokens):
    def __init__(self, url: str, secret: SecretSource | None = None) -> None:
        self.url = url
        self.path = path_of(url)
        self.secret = secret or SecretSource()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._cipher: KeyCipher | None = None
        #: the key file, when opening created it (the CLI prints its path)
        self.created_key_file: str | None = None
        #: the key file the secret comes from (None: KEYRELAY_SECRET_KEY)
        self.key_file: str | None = None

    # -- plumbing --------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None or self._conn is None:
            raise RuntimeError(f"the SQLite store {self.path!r} is not open (await store.open() first)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(partial(in_tx, "BEGIN IMMEDIATE", fn))

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:  # SELECTs seeing one snapshot
        return await self._run(partial(in_tx, "BEGIN", fn))

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise FileNotFoundError(
                    f"cannot open the SQLite store {os.path.abspath(self.path)!r}: directory {parent!r} does not exist"
                )
            ring = key_ring(self.secret, f"{self.path}.key")
            private(self.path)
        else:
            ring = KeyRing(KeyCipher(self.secret.value or new_secret()), "this process")
        # Only the worker thread ever touches the connection; isolation_level=None lets us
        # issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")  # wait up to 5 s for another process's write
            conn.execute("PRAGMA secure_delete = ON")  # a replaced or deleted row is zeroed, not left behind
            conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL syncs at checkpoints only: a committed transaction is in the WAL
            # file (the OS page cache) before COMMIT returns, so it survives a kill -9 of this
            # process; only a power loss / OS crash may roll back the last few commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            self.created_key_file = ring.file if ring.created else None
            self.key_file = ring.file
            found, self._cipher = in_tx("BEGIN IMMEDIATE", partial(create_schema, self.path, ring), conn)
            if 0 < found < 2:  # the file held plaintext keys: no page of it may stay behind
                scrub(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def cipher(self) -> KeyCipher:
        if self._cipher is None:
            raise RuntimeError(f"the SQLite store {self.path!r} is not open (await store.open() first)")
        return self._cipher

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyrelay-sqlite")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
        except BaseException:
            self._executor = None
            executor.shutdown(wait=False)
            raise

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            return
        self._executor = self._conn = None
        try:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        finally:
            executor.shutdown(wait=True)

    # -- keys ------------------------------------------------------------------------------
    async def add_keys(
        self, pool: str, secrets: Sequence[str], now: float, *, weight: float = 1.0, label: str = "",
        base_url: str | None = None,
        actor: str = "admin",
    ) -> AddResult:
        cipher = self.cipher
        ids = [key_id_for(pool, s) for s in secrets]
        lookups = [cipher.lookup(pool, s) for s in secrets]

        def write(conn: sqlite3.Connection) -> AddResult:
            present: set[str] = set()  # keyed hashes of the keys already in the pool
            unique = list(dict.fromkeys(lookups))
            for i in range(0, len(unique), CHUNK):
                chunk = unique[i:i + CHUNK]
                sql = f"SELECT lookup FROM keys WHERE lookup IN ({', '.join('?' * len(chunk))})"
                present.update(r[0] for r in conn.execute(sql, chunk))
            new = partial(
                KeyRecord, pool=pool, since=now, weight=weight, label=label, added_at=now, counters=ZERO,
                base_url=base_url,
            )
            added: list[tuple[KeyRecord, str]] = []
            dups: list[str] = []
            for kid, lookup, secret in zip(ids, lookups, secrets):
                if lookup in present:
                    dups.append(kid)
                    continue
                present.add(lookup)
                added.append((new(id=kid, secret=secret), lookup))
            if added:
                first = bump(conn, len(added))
                conn.executemany(
                    "INSERT INTO keys(id, pool, secret, lookup, state, since, weight, label, added_at, base_url, seq) "
                    "VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
                    (
                        (r.id, pool, cipher.seal(r.id, r.secret), lookup, now, weight, label, now, base_url, first + i)
                        for i, (r, lookup) in enumerate(added)
                    ),
                )
                conn.execute("DELETE FROM removed WHERE EXISTS (SELECT 1 FROM keys WHERE keys.id = removed.key_id)")
                insert_events(conn, [(r.id, pool, now, actor, "", "active", "added", "") for r, _ in added])
            return AddResult(tuple(r for r, _ in added), tuple(dups))

        return await self._write(write)

    async def load(self, pool: str | None = None) -> list[KeyRecord]:
        cipher = self.cipher

        def read(conn: sqlite3.Connection) -> list[KeyRecord]:
            if pool is None:
                rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEYS} ORDER BY keys.rowid")
            else:
                rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEYS} WHERE pool = ? ORDER BY keys.rowid", (pool,))
            return [record_of(r, cipher) for r in rows]

        return await self._run(read)

    async def get(self, key_id: str) -> KeyRecord | None:
        cipher = self.cipher

        def read(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEYS} WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else record_of(row, cipher)

        return await self._run(read)

    async def apply(self, transition: Transition) -> KeyRecord | None:
        cipher = self.cipher

        def write(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEYS} WHERE id = ?", (transition.key_id,)).fetchone()
            if row is None:
                return None
            old = record_of(row, cipher)
            if old.version != transition.expected_version:
                return None
            t = scrub_transition(transition, [old.secret])  # no key in the evidence we keep
            new = t.applied_to(old)
            conn.execute(
                "UPDATE keys SET state = ?, reason = ?, since = ?, until = ?, version = ?, seq = ? WHERE id = ?",
                (new.state.value, new.reason, new.since, new.until, new.version, bump(conn), t.key_id),
            )
            last = conn.execute(
                "SELECT seq, at, from_state, to_state FROM events WHERE key_id = ? ORDER BY seq DESC LIMIT 1", (t.key_id,)
            ).fetchone()
            if last is not None and coalesces(t, (last[1], last[2], last[3])):  # one event for a burst
                conn.execute("UPDATE events SET at = ?, actor = ?, reason = ?, detail = ? WHERE seq = ?",
                             (t.at, t.actor, t.reason, t.detail, last[0]))
            else:
                insert_events(
                    conn, [(t.key_id, t.pool, t.at, t.actor, t.from_state.value, t.to_state.value, t.reason, t.detail)]
                )
            return new

        return await self._write(write)

    async def remove(self, key_id: str, now: float, actor: str = "admin") -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT pool, state FROM keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM keys WHERE id = ?", (key_id,))
            conn.execute("DELETE FROM counters WHERE id = ?", (key_id,))
            seq = bump(conn)
            conn.execute("INSERT OR REPLACE INTO removed(key_id, pool, seq) VALUES (?, ?, ?)", (key_id, row[0], seq))
            insert_events(conn, [(key_id, row[0], now, actor, row[1], "removed", "removed by a person", "")])
            return True

        return await self._write(write)

    async def add_counters(self, deltas: Mapping[str, Counters]) -> None:
        if not deltas:
            return
        rows = [(kid, *d.values()) for kid, d in deltas.items()]
        await self._write(lambda conn: conn.executemany(ADD_COUNTERS, rows))

    async def add_key_sums(self, at: float, sums: Mapping[str, Sequence[int]]) -> None:
        if sums:
            rows = list(map(add, zip(sums), map(tuple, sums.values())))  # (id, *counts), built in C
            await self._write(partial(write_key_sums, at, rows))

    async def set_balance(self, key_id: str, balance: float | None, currency: str) -> None:
        sql = "UPDATE keys SET balance = ?, currency = ? WHERE id = ?"
        await self._write(lambda conn: conn.execute(sql, (balance, currency, key_id)))

    async def record_event(self, event: Event) -> None:
        cipher = self.cipher

        def write(conn: sqlite3.Connection) -> None:
            found = conn.execute("SELECT secret FROM keys WHERE id = ?", (event.key_id,)).fetchone()
            e = scrub_event(event, [cipher.open(event.key_id, found[0])] if found else [])
            insert_events(conn, [(e.key_id, e.pool, e.at, e.actor, e.from_state, e.to_state, e.reason, e.detail)])

        await self._write(write)

    async def events(self, key_id: str | None = None, limit: int = 200) -> list[Event]:
        where, args = ("WHERE key_id = ?", [key_id]) if key_id is not None else ("", [])
        # limit <= 0 means no limit (MemoryStore returns everything for a falsy limit).
        sql = f"SELECT {EVENT_COLUMNS}, seq FROM events {where} ORDER BY seq DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(sql, [*args, limit if limit > 0 else -1]).fetchall()
            return [Event(*r) for r in reversed(rows)]

        return await self._run(read)

    async def query_events(self, query: EventQuery) -> list[Event]:
        sql, args = events_sql(query)
        return await self._run(lambda conn: [Event(*r) for r in conn.execute(sql, args)])

    async def add_usage(self, at: float, rows: Mapping[str, Counters]) -> None:
        if rows:
            await self._write(partial(write_usage, at, rows))

    async def usage(self, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
        return await self._read(lambda conn: read_usage(conn, scope, step, since, until))

    async def changes(self, since: int) -> Changes:
        cipher = self.cipher

        def read(conn: sqlite3.Connection) -> Changes:
            (cursor,) = conn.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
            recs = conn.execute(f"SELECT {KEY_COLUMNS} FROM {KEYS} WHERE seq > ? ORDER BY seq", (since,))
            records = tuple(record_of(r, cipher) for r in recs)
            gone = tuple(r[0] for r in conn.execute("SELECT key_id FROM removed WHERE seq > ? ORDER BY seq", (since,)))
            return Changes(int(cursor), records, gone)

        return await self._read(read)

    # -- locks -----------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT owner, expires_at FROM locks WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            conn.execute("INSERT OR REPLACE INTO locks(name, owner, expires_at) VALUES (?, ?, ?)", (name, owner, now + ttl))
            return True

        return await self._write(write)

    async def unlock(self, name: str, owner: str) -> None:
        sql = "DELETE FROM locks WHERE name = ? AND owner = ?"
        await self._write(lambda conn: conn.execute(sql, (name, owner)))

    # -- keys at rest ----------------------------------------------------------------------
    async def rotate_secret(self, new: KeyCipher) -> int:
        """Re-encrypt every key under ``new`` in one write transaction (a crash midway rolls it
        back: every key stays under the old secret), then scrub the files of the old
        ciphertexts. Returns how many keys were re-encrypted."""
        count = await self._write(partial(reencrypt, self.cipher, new))
        self._cipher = new
        await self._run(scrub)
        return count
