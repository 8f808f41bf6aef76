"""SQL of :class:`keyrelay.stores.sqlite.SQLiteStore` for usage buckets and event queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import add

from keyrelay.core.model import COUNTER_FIELDS, Counters
from keyrelay.stores.sqlite_schema import ADD_COUNTERS, EVENT_COLUMNS, HOUR_OF, KEYS_FROM, KEYS_TO
from keyrelay.stores.usage import HOUR, MINUTE, RETENTION, EventQuery, bucket_start

__all__ = ["events_sql", "read_usage", "write_key_sums", "write_usage"]

_COLS = ", ".join(COUNTER_FIELDS)
_SET_SUMS = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTER_FIELDS)
_UPSERT = (
    f"INSERT INTO usage(step, t, scope, {_COLS}) VALUES (?, ?, ?, {', '.join('?' * len(COUNTER_FIELDS))}) "
    f"ON CONFLICT(step, t, scope) DO UPDATE SET {_SET_SUMS}"
)


#: a key's counts (?1: its id, then the counts) into its minute bucket ?{width + 2}
_KEY_MINUTE = (
    f"INSERT INTO usage(step, t, scope, {_COLS}) VALUES ({MINUTE}, ?{len(COUNTER_FIELDS) + 2}, '{KEYS_FROM}' || ?1, "
    f"{', '.join(f'?{i + 2}' for i in range(len(COUNTER_FIELDS)))}) ON CONFLICT(step, t, scope) DO UPDATE SET {_SET_SUMS}"
)
#: a key's minutes of the hours before ?1, summed into its hour buckets
_FOLD = (
    f"INSERT INTO usage(step, t, scope, {_COLS}) SELECT {HOUR}, {HOUR_OF} AS h, scope, "
    f"{', '.join(f'sum({c})' for c in COUNTER_FIELDS)} FROM usage "
    f"WHERE step = {MINUTE} AND t < ?1 AND scope >= '{KEYS_FROM}' AND scope < '{KEYS_TO}' GROUP BY h, scope "
    f"ON CONFLICT(step, t, scope) DO UPDATE SET {_SET_SUMS}"
)


def _is_key(scope: str) -> bool:
    return KEYS_FROM <= scope < KEYS_TO


def write_usage(at: float, rows: Mapping[str, Counters], conn: sqlite3.Connection) -> None:
    """Add ``rows`` to the buckets of ``at`` and drop buckets past their retention (in the caller's write).

    A key's hour buckets are not written with every flush: with 100,000 keys nearly every
    request is a key of its own, and an hour row per key per flush was a third of the rows a
    flush wrote. Its minutes are summed into its hour buckets a whole hour at a time, once the
    hour is past the minutes' retention (so a key's minutes live up to an hour longer); until
    then :func:`read_usage` sums them when hours are asked for. A pool's rows (one per flush)
    go to both as before."""
    minute, hour = bucket_start(at, MINUTE), bucket_start(at, HOUR)
    values = [(scope, c.values()) for scope, c in rows.items()]
    conn.executemany(_UPSERT, ((MINUTE, minute, scope, *v) for scope, v in values))
    conn.executemany(_UPSERT, ((HOUR, hour, scope, *v) for scope, v in values if not _is_key(scope)))
    # ``t`` bare, so that the key's front (step, t) finds the old buckets (``t + step <= …`` scanned them all)
    conn.execute("DELETE FROM usage WHERE step = ? AND t <= ?", (HOUR, at - RETENTION[HOUR] - HOUR))
    conn.execute(
        f"DELETE FROM usage WHERE step = {MINUTE} AND t <= ? AND NOT (scope >= '{KEYS_FROM}' AND scope < '{KEYS_TO}')",
        (at - RETENTION[MINUTE] - MINUTE,),
    )
    folded = bucket_start(at - RETENTION[MINUTE], HOUR)  # the hours before it are past the minutes' retention
    if conn.execute(f"SELECT 1 FROM usage WHERE step = {MINUTE} AND t < ? LIMIT 1", (folded,)).fetchone():
        conn.execute(_FOLD, (folded,))
        conn.execute(f"DELETE FROM usage WHERE step = {MINUTE} AND t < ?", (folded,))


def write_key_sums(at: float, rows: Sequence[Sequence[object]], conn: sqlite3.Connection) -> None:
    """Keys' counts ``(id, *counts)`` added to their counters and their minute buckets of ``at``
    (their hours are folded from the minutes: :func:`write_usage`)."""
    conn.executemany(ADD_COUNTERS, rows)
    minute = (bucket_start(at, MINUTE),)
    conn.executemany(_KEY_MINUTE, map(add, rows, repeat(minute)))


def read_usage(conn: sqlite3.Connection, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
    """The buckets of ``scope`` with ``step`` starting in [since, until), oldest first; a key's
    hours add its minutes not yet folded into them."""
    found = _rows(conn, scope, step, since, until)
    if step != HOUR or not _is_key(scope):
        return found
    sums = {t: list(c.values()) for t, c in found}
    for t, c in _rows(conn, scope, MINUTE, bucket_start(since, HOUR), until):
        h = bucket_start(t, HOUR)
        if since <= h < until:
            row = sums.setdefault(h, [0] * len(COUNTER_FIELDS))
            for i, v in enumerate(c.values()):
                row[i] += v
    return [(t, Counters(*sums[t])) for t in sorted(sums)]


def _rows(conn: sqlite3.Connection, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
    """The rows of one scope and step, looked up at each bucket start (the table is keyed by time
    first: a range of ``t`` would walk every scope's rows, the starts are point lookups)."""
    first, last = conn.execute("SELECT min(t), max(t) FROM usage WHERE step = ?", (step,)).fetchone()
    if first is None:
        return []
    t = max(bucket_start(since, step), first)
    if t < since:
        t += step
    times: list[float] = []
    while t < until and t <= last:  # the oldest and newest buckets held: a few hundred at most
        times.append(t)
        t += step
    out: list[tuple[float, Counters]] = []
    for i in range(0, len(times), 500):  # SQLite's bound parameters are limited
        part = times[i : i + 500]
        sql = f"SELECT t, {_COLS} FROM usage WHERE step = {int(step)} AND t IN ({', '.join('?' * len(part))}) AND scope = ? ORDER BY t"
        out += [(r[0], Counters(*r[1:])) for r in conn.execute(sql, (*part, scope))]
    return out


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

