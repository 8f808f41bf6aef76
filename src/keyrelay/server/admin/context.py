"""The admin API's shared state in one gateway process: the runtime it acts on, sign-in, the
counters snapshot the key lists sort by, and the live event feed."""

from __future__ import annotations

import asyncio
import time

from keyrelay.core.model import Counters
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.process import Runtime
from keyrelay.server.admin.auth import Auth
from keyrelay.server.admin.feed import EventFeed
from keyrelay.server.admin.routing import ApiError

__all__ = ["Ctx"]

#: how old the counters shown in key lists may be (they are read from the store, which holds the
#: sums of every worker and gateway; one key's own page reads them fresh)
COUNTERS_MAX_AGE = 5.0


class Ctx:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.auth = Auth(runtime)
        self.feed = EventFeed(runtime.store)
        self._counters: dict[str, Counters] = {}
        self._counters_at = -1e9
        self._refresh: asyncio.Task[None] | None = None

    def pool(self, name: str) -> KeyPool:
        pool = self.runtime.pools.get(name)
        if pool is None:
            raise ApiError(404, "pool_not_found", f"no such pool (pools: {', '.join(self.runtime.pools)})")
        return pool

    async def counters(self) -> dict[str, Counters]:
        """Every key's counters as last read from the store: waits for the first read, then
        refreshes in the background when older than :data:`COUNTERS_MAX_AGE`."""
        if time.monotonic() - self._counters_at > COUNTERS_MAX_AGE and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._read_counters())
        if self._counters_at < 0 and self._refresh is not None:
            await asyncio.shield(self._refresh)
        return self._counters

    async def _read_counters(self) -> None:
        try:
            records = await self.runtime.store.load()
        except Exception:  # noqa: BLE001 - the store logs its outages; the last snapshot stays
            self._counters_at = time.monotonic()
            return
        self._counters = {r.id: r.counters for r in records}
        self._counters_at = time.monotonic()

    async def close(self) -> None:
        self.feed.close()
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
