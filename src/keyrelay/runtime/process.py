"""The running pools of one process: loads them from the store, keeps them in sync with what
other processes (the CLI, other gateways) change, and flushes batched counters. (Client tokens
are the gateway's business: ``server/auth.py``.)

Used by the gateway and by library mode alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from keyrelay.config import Settings
from keyrelay.core.model import KeyRecord
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.telemetry import Telemetry
from keyrelay.stores import Store, open_store
from keyrelay.stores.base import Watchable
from keyrelay.stores.usage import usage_rows

__all__ = ["Runtime"]

log = logging.getLogger("keyrelay.runtime.process")


#: The pace of counter writes with many busy keys (rows per second, on average); see ``_paced_flush``.
COUNTER_ROWS_PER_SECOND = 1000.0
MAX_COUNTER_LAG = 10.0


class Runtime:
    """All pools of a settings file, bound to one store."""

    def __init__(self, settings: Settings, store: Store | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store or open_store(settings.store_url, settings.secret)
        self.clock = clock
        self.pools: dict[str, KeyPool] = {p.name: KeyPool(p, self.store, clock=clock) for p in settings.pools}
        self.default_pool = self.pools[settings.default_pool.name]
        self._cursor = 0
        self._epoch = 0  # the store's re-initialisations seen (stores/redis.py: StoreLost)
        self._tasks: list[asyncio.Task[None]] = []
        #: called after every sync with the store (e.g. the gateway's tokens forget what the
        #: store said: server/auth.py)
        self.on_sync: list[Callable[[], None]] = []
        self._wake = asyncio.Event()  # set by the store's change notices: sync now
        #: counts for /metrics and events for [[alerts]] (telemetry.py); None when neither is on
        self.telemetry: Telemetry | None = None
        if settings.metrics.enabled or settings.alerts:
            self.telemetry = Telemetry()
            for pool in self.pools.values():
                pool.telemetry = self.telemetry

    # -- life cycle ----------------------------------------------------------------------
    async def start(self, background: bool = True) -> None:
        await self.store.open()
        await self.sync()
        if background:
            self._tasks = [
                asyncio.create_task(
                    self._every(self.settings.server.sync_interval, self.sync, self._wake), name="keyrelay-sync"
                ),
                asyncio.create_task(self._every(self.settings.server.flush_interval, self._paced_flush), name="keyrelay-flush"),
            ]
            if isinstance(self.store, Watchable):  # e.g. Redis pub/sub: sync at once; the poll stays as a safety net
                self._tasks.append(asyncio.create_task(self.store.watch(self._poke), name="keyrelay-watch"))
            from keyrelay.runtime.verify import Verifier  # settles holds on unrecognised auth refusals (verify.py)

            verifier = Verifier(self.pools.values(), clock=self.clock)
            self._tasks.append(asyncio.create_task(verifier.run(), name="keyrelay-verify"))
            if any(p.settings.checker.enabled for p in self.pools.values()):  # the key checker (checker.py)
                from keyrelay.runtime.checker import Checker

                checker = Checker(self.store, self.pools.values(), clock=self.clock)
                self._tasks.append(asyncio.create_task(checker.run(), name="keyrelay-checker"))
            if self.settings.alerts and self.telemetry is not None:  # [[alerts]] webhooks (alerts.py)
                from keyrelay.runtime.alerts import Alerts

                alerts = Alerts(self.settings, self.store, self.pools, self.telemetry, clock=self.clock)
                self._tasks.append(asyncio.create_task(alerts.run(), name="keyrelay-alerts"))

    def _poke(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        try:
            await self.flush()
        except StoreUnavailable:  # shutting down during an outage: say what is lost, once
            queued = sum(len(p.backlog) for p in self.pools.values())
            log.error("store unreachable at shutdown: %d queued state changes and the last counters not written", queued)
        await self.store.close()

    async def _every(self, interval: float, job: Callable[[], object], wake: asyncio.Event | None = None) -> None:
        """Run ``job`` every ``interval`` seconds (or when ``wake`` is set). A job that returns a
        number asks for that many seconds before its next run instead (never fewer than ``interval``)."""
        failing = False
        delay = interval
        while True:
            if wake is None:
                await asyncio.sleep(delay)
            else:  # every ``interval``, or at once when woken
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
            try:
                asked = await job()  # type: ignore[misc]
                delay = max(interval, asked) if isinstance(asked, float) else interval
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                # the store logs one line when lost and one when back; what failed stays queued
                if self.telemetry is not None:
                    self.telemetry.store_error(getattr(job, "__name__", "job").removeprefix("_paced_"))
            except Exception as exc:  # noqa: BLE001 - a background job must outlive one failure; say so once
                if not failing:
                    log.error("background %s failed: %s", getattr(job, "__name__", "job"), type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.warning("background %s recovered", getattr(job, "__name__", "job"))
                failing = False

    # -- store sync ----------------------------------------------------------------------
    async def sync(self) -> None:
        """Apply every change made to the store since the last call (by anyone). A store that
        was re-initialised after losing its data (its ``epoch`` grew) is read from the start."""
        epoch = getattr(self.store, "epoch", 0)
        ch = await self.store.changes(self._cursor if epoch == self._epoch else 0)
        if epoch != self._epoch:  # what was queued for the store that was lost is moot
            for stale in self.pools.values():
                stale.backlog.clear()
        self._epoch = epoch
        for rec in ch.records:
            pool = self.pools.get(rec.pool)
            if pool is not None:
                pool.upsert(rec)
        for kid in ch.removed:
            for pool in self.pools.values():
                pool.remove(kid)
        self._cursor = ch.cursor
        for hook in self.on_sync:
            hook()

    async def _paced_flush(self) -> float:
        """Flush, and ask for the next flush late enough that counter rows are written at about
        :data:`COUNTER_ROWS_PER_SECOND` at most: with many keys busy, each flush writes a row per
        key, and written every second that would cost a few per cent of a core (bench_proxy.py,
        10,000 keys). Counters then lag by up to :data:`MAX_COUNTER_LAG` seconds."""
        rows = await self.flush()
        return min(MAX_COUNTER_LAG, rows / COUNTER_ROWS_PER_SECOND)

    async def flush(self) -> int:
        """Write the batched counters of every pool, and any transitions queued while the store
        was unreachable. If the store is still down, everything stays queued (bounded). Returns
        how many counter rows were written."""
        if getattr(self.store, "epoch", 0) != self._epoch:
            await self.sync()  # a store re-initialised after losing its data: read it before writing
        for pool in self.pools.values():
            if pool.backlog:
                await pool.drain_backlog()
        rows = 0
        for pool in self.pools.values():
            deltas = pool.take_counters()
            if not deltas:
                continue
            try:
                await self.store.add_counters(deltas)
            except StoreUnavailable:
                if len(deltas) < 100_000:
                    pool.give_back_counters(deltas)
                raise
            rows += len(deltas)
            try:  # usage over time (the admin API's charts), shared by every worker and gateway
                await self.store.add_usage(self.clock(), usage_rows(pool.name, deltas))
            except StoreUnavailable:
                pass  # the counters are written; only this minute's chart misses them
        return rows

    def records(self) -> list[KeyRecord]:
        return [r for p in self.pools.values() for r in p.records()]
