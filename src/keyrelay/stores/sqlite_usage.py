"""SQL of :class:`keyrelay.stores.sqlite.SQLiteStore` for usage buckets and event queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from keyrelay.core.model import COUNTER_FIELDS, Counters
from keyrelay.stores.sqlite_schema import EVENT_COLUMNS
from keyrelay.stores.usage import RETENTION, STEPS, EventQuery, bucket_start

__all__ = ["bucket_times", "buckets_sql", "events_sql", "write_usage"]

_COLS = ", ".join(COUNTER_FIELDS)
_UPSERT = (
    f"INSERT INTO usage(step, t, scope, {_COLS}) VALUES (?, ?, ?, {', '.join('?' * len(COUNTER_FIELDS))}) "
    f"ON CONFLICT(step, t, scope) DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in COUNTER_FIELDS)}"
)


def buckets_sql(step: int, times: Sequence[float]) -> str:
    """The rows of one scope at the bucket starts ``times`` (the table is keyed by time first:
    a range of ``t`` would walk every scope's rows, the starts themselves are point lookups)."""
    return f"SELECT t, {_COLS} FROM usage WHERE step = {int(step)} AND t IN ({', '.join('?' * len(times))}) AND scope = ? ORDER BY t"


def bucket_times(conn: sqlite3.Connection, step: int, since: float, until: float) -> list[float]:
    """The bucket starts in [since, until) that may hold rows: clamped to the oldest and newest
    bucket of ``step`` in the store (retention keeps at most a few hundred of them)."""
    first, last = conn.execute("SELECT min(t), max(t) FROM usage WHERE step = ?", (step,)).fetchone()
    if first is None:
        return []
    t = max(bucket_start(since, step), first)
    if t < since:
        t += step
    out: list[float] = []
    while t < until and t <= last:
        out.append(t)
        t += step
    return out


def write_usage(at: float, rows: Mapping[str, Counters], conn: sqlite3.Connection) -> None:
    """Add ``rows`` to the buckets of ``at`` and drop buckets past their retention (in the caller's write)."""
    for step in STEPS:
        t = bucket_start(at, step)
        conn.executemany(_UPSERT, ((step, t, scope, *c.values()) for scope, c in rows.items()))
        # ``t`` bare, so that the key's front (step, t) finds the old buckets (``t + step <= …`` scanned them all)
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
