"""The live event feed (``GET /admin/api/v1/events/stream``): one poller per process reads the
events the store gained since it last looked (every worker's and gateway's, since they all write
there) and hands them to every open stream. It runs only while someone listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from keyrelay.core.model import Event
from keyrelay.stores.base import Store
from keyrelay.stores.usage import EventQuery

__all__ = ["POLL_SECONDS", "EventFeed"]

log = logging.getLogger("keyrelay.admin")

POLL_SECONDS = 0.5
_QUEUE = 1000  # events a slow listener may fall behind by; beyond, it misses some


class EventFeed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: set[asyncio.Queue[Event | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def listen(self) -> asyncio.Queue[Event | None]:
        """A queue of the events to come (``None`` when the gateway shuts down)."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUE)
        if self._closed:
            q.put_nowait(None)
            return q
        if self._task is None or self._task.done():
            newest = await self.store.query_events(EventQuery(limit=1))
            self._task = asyncio.create_task(self._poll(newest[0].seq if newest else 0), name="keyrelay-admin-feed")
        self._listeners.add(q)
        return q

    def leave(self, q: asyncio.Queue[Event | None]) -> None:
        self._listeners.discard(q)

    async def _poll(self, last: int) -> None:
        failing = False
        while self._listeners:
            await asyncio.sleep(POLL_SECONDS)
            try:
                events = await self.store.query_events(EventQuery(after=last, limit=500))
            except Exception as exc:  # noqa: BLE001 - the feed outlives a store outage
                if not failing:
                    log.warning("admin event feed: reading events failed (%s); retrying", type(exc).__name__)
                failing = True
                continue
            failing = False
            for ev in events:
                last = max(last, ev.seq)
                for q in self._listeners:
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(ev)

    def close(self) -> None:
        """At shutdown: end every stream."""
        self._closed = True
        for q in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
            if q.full():  # make room for the end marker
                q.get_nowait()
                q.put_nowait(None)
        self._listeners.clear()
        if self._task is not None:
            self._task.cancel()
