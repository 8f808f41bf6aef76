"""SQL of :class:`keyrelay.stores.sqlite.SQLiteStore` for usage buckets and event queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from keyrelay.core.model import COUNTER_FIELDS, Counters
from keyrelay.stores.sqlite_schema import EVENT_COLUMNS
from keyrelay.stores.usage import RETENTION, STEPS, EventQuery, bucket_start

__all__ = ["events_sql", "write_usage"]

_COLS = ", ".join(COUNTER_FIELDS)
_UPSERT = (
    f"INSERT INTO usage(scope, step, t, {_COLS}) VALUES (?, ?, ?, {', '.join('?' * len(COUNTER_FIELDS))}) "
    f"ON CONFLICT(scope, step, t) DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in COUNTER_FIELDS)}"
)


def write_usage(at: float, rows: Mapping[str, Counters], conn: sqlite3.Connection) -> None:
    """Add ``rows`` to the buckets of ``at`` and drop buckets past their retention (in the caller's write)."""
    for step in STEPS:
        t = bucket_start(at, step)
        conn.executemany(_UPSERT, ((scope, step, t, *c.values()) for scope, c in rows.items()))
        # ``t`` bare, so that the index on (step, t) finds the old buckets (``t + step <= …`` scanned them all)
        conn.execute("DELETE FROM usage WHERE step = ? AND t <= ?", (step, at - RETENTION[step] - step))


def events_sql(q: EventQuery) -> tuple[str, list[object]]:
    where: list[str] = []
    args: list[object] = []
    for column, op, value in (
        ("key_id", "=", q.key_id), ("pool", "=", q.pool), ("at", ">=", q.since), ("at", "<", q.until),
        ("seq", "<", q.before or None), ("seq", ">", q.after or None),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    order = "ASC" if q.after else "DESC"
    sql = f"SELECT {EVENT_COLUMNS}, seq FROM events {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq {order} LIMIT ?"
    return sql, [*args, q.limit]
