"""Event queries and usage buckets of :class:`keyrelay.stores.redis.RedisStore` (a mixin, to keep
that module short). Layout: :mod:`keyrelay.stores.redis_keys`; the ``usage`` script:
:mod:`keyrelay.stores.redis_scripts`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from keyrelay.core.model import COUNTER_FIELDS, Counters, Event
from keyrelay.stores.redis_base import BATCH, RedisParts, chunks, flat
from keyrelay.stores.redis_health import edge
from keyrelay.stores.redis_keys import event_of
from keyrelay.stores.usage import RETENTION, STEPS, EventQuery, bucket_start, matches

__all__ = ["UsageMixin"]

_EVENT_CHUNK = 2_000  # events per LRANGE when querying


class UsageMixin(RedisParts):
    # -- events by query, usage over time ---------------------------------------------------
    @edge
    async def query_events(self, query: EventQuery) -> list[Event]:
        """Read the (capped) list from its end in chunks until the page is full."""
        q = query
        name = self.names.events if q.key_id is None else self.names.key_events(q.key_id)
        out: dict[int, Event] = {}
        end = -1
        while True:
            lines = cast(list[str], await self._r.lrange(name, end - _EVENT_CHUNK + 1, end))
            older = False
            for e in map(event_of, reversed(lines)):
                if q.after and e.seq <= q.after:
                    older = True
                    break
                if matches(q, e):
                    out[e.seq] = e
            if older or len(lines) < _EVENT_CHUNK or (not q.after and len(out) >= q.limit):
                break
            end -= _EVENT_CHUNK
        found = sorted(out.values(), key=lambda e: e.seq, reverse=not q.after)
        return found[: q.limit]

    @edge
    async def add_usage(self, at: float, rows: Mapping[str, Counters]) -> None:
        n = self.names
        items = [(scope, [(f, v) for f, v in c.as_dict().items() if v]) for scope, c in rows.items()]
        items = [(scope, pairs) for scope, pairs in items if pairs]
        if not items:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for step in STEPS:
                t = bucket_start(at, step)
                expire = int(t + step + RETENTION[step])
                for batch in chunks(items, BATCH):
                    keys = [n.usage(scope, step, t) for scope, _ in batch]
                    args = flat([expire, len(pairs), *flat(pairs)] for _, pairs in batch)
                    await self._run("usage", keys, args, client=pipe)
            self._guard(await pipe.execute())

    @edge
    async def usage(self, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
        starts: list[float] = []
        t = bucket_start(since, step) + (step if since % step else 0)
        while t < until and len(starts) < 10_000:
            starts.append(t)
            t += step
        async with self._r.pipeline(transaction=False) as pipe:
            for t in starts:
                pipe.hgetall(self.names.usage(scope, step, t))
            found = await pipe.execute()
        return [
            (t, Counters(**{f: int(v) for f, v in h.items() if f in COUNTER_FIELDS}))
            for t, h in zip(starts, found) if h
        ]

