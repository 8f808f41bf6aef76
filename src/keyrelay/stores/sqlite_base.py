"""What the parts of :class:`keyrelay.stores.sqlite.SQLiteStore` share: the plumbing its mixin
(:mod:`~keyrelay.stores.sqlite_tokens`) may use — defined by ``SQLiteStore`` itself — and the
helpers that run inside a transaction on the worker thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from keyrelay.stores.crypto import KeyCipher
from keyrelay.stores.sqlite_schema import EVENT_COLUMNS

__all__ = ["CHUNK", "SQLiteParts", "bump", "in_tx", "insert_events"]

CHUNK = 500  # ids per ``IN (...)`` query, under SQLite's bound-parameter limit

_T = TypeVar("_T")


def bump(conn: sqlite3.Connection, n: int = 1) -> int:
    """Advance the change cursor by ``n`` (inside the caller's write); the first new value."""
    (cursor,) = conn.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
    conn.execute("UPDATE meta SET value = ? WHERE name = 'cursor'", (cursor + n,))
    return int(cursor) + 1


def insert_events(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(f"INSERT INTO events({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def in_tx(begin: str, fn: Callable[[sqlite3.Connection], _T], conn: sqlite3.Connection) -> _T:
    conn.execute(begin)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SQLiteParts:
    """The store's plumbing, as its mixin sees it (``SQLiteStore`` defines it)."""

    @property
    def cipher(self) -> KeyCipher:
        raise NotImplementedError

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        raise NotImplementedError

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        raise NotImplementedError
