"""Usage over time, kept in the store: requests, outcomes and tokens per pool and per key, in
minute buckets (kept :data:`RETENTION` ``[MINUTE]``) and hour buckets (kept longer).

The gateway writes them where it flushes its counters (:meth:`keyrelay.runtime.Runtime.flush`),
so every worker and every gateway sharing a store adds to the same buckets. A bucket is named by
its scope (``pool:<name>`` or ``key:<id>``), its step (60 or 3600 seconds) and its start time;
buckets older than their retention are pruned as new ones are written (SQLite, memory) or
expire (Redis), so the store never holds more than a bounded number of them per scope.

Also :class:`EventQuery`, the filters of :meth:`Store.query_events`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

from keyrelay.core.model import COUNTER_FIELDS, Counters, Event

__all__ = [
    "HOUR",
    "MINUTE",
    "RETENTION",
    "STEPS",
    "EventQuery",
    "add_key_sums_by_parts",
    "bucket_start",
    "key_scope",
    "key_usage_rows",
    "matches",
    "page_of",
    "pool_scope",
    "usage_rows",
]

MINUTE = 60
HOUR = 3600
STEPS = (MINUTE, HOUR)
#: how long buckets of each step are kept (seconds): 6 hours of minutes, 8 days of hours
RETENTION: dict[int, float] = {MINUTE: 6 * 3600.0, HOUR: 8 * 86400.0}
_VALUES = attrgetter(*COUNTER_FIELDS)  # Counters.values() without the call


class _CountingStore(Protocol):
    async def add_counters(self, deltas: Mapping[str, Counters]) -> None: ...
    async def add_usage(self, at: float, rows: Mapping[str, Counters]) -> None: ...


def bucket_start(at: float, step: int) -> float:
    return float(int(at // step) * step)


def pool_scope(pool: str) -> str:
    return f"pool:{pool}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


async def add_key_sums_by_parts(store: _CountingStore, at: float, sums: Mapping[str, Sequence[int]]) -> None:
    """``Store.add_key_sums`` for a store with no quicker way: its counters, then its usage rows."""
    deltas = {kid: Counters(*row) for kid, row in sums.items()}
    await store.add_counters(deltas)
    await store.add_usage(at, key_usage_rows(deltas))


def key_usage_rows(deltas: Mapping[str, Counters]) -> dict[str, Counters]:
    """The rows of the keys' counters (key id → counters): one per key."""
    return {f"key:{kid}": c for kid, c in deltas.items()}


def usage_rows(pool: str, deltas: Mapping[str, Counters]) -> dict[str, Counters]:
    """The rows one flush of a pool's counters adds: one per key and the pool's sum."""
    rows = key_usage_rows(deltas)
    # summed column by column in C (a flush of 100,000 keys sums that many)
    rows[pool_scope(pool)] = Counters(*map(sum, zip(*map(_VALUES, deltas.values())))) if deltas else Counters()
    return rows


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events :meth:`Store.query_events` returns.

    ``before``: only events numbered below it (paging back, newest first); ``after``: only events
    numbered above it (following the feed, oldest first); both 0: the newest, newest first.
    ``since``/``until``: by time ``at`` (inclusive/exclusive)."""

    key_id: str | None = None
    pool: str | None = None
    since: float | None = None
    until: float | None = None
    before: int = 0
    after: int = 0
    limit: int = 100


def matches(q: EventQuery, e: Event) -> bool:
    return (
        (q.key_id is None or e.key_id == q.key_id)
        and (q.pool is None or e.pool == q.pool)
        and (q.since is None or e.at >= q.since)
        and (q.until is None or e.at < q.until)
        and (not q.before or e.seq < q.before)
        and (not q.after or e.seq > q.after)
    )


def page_of(q: EventQuery, events: Sequence[Event]) -> list[Event]:
    """The page of ``q`` out of events in store order (oldest first)."""
    out: list[Event] = []
    for e in events if q.after else reversed(events):
        if matches(q, e):
            out.append(e)
            if len(out) >= q.limit:
                break
    return out
