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
from collections.abc import Awaitable, Callable
from itertools import islice

from keyrelay.config import Settings
from keyrelay.core.model import COUNTER_FIELDS, Counters, KeyRecord
from keyrelay.core.pacing import Pacer
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime import redactor
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.telemetry import Telemetry
from keyrelay.stores import Store, open_store
from keyrelay.stores.base import Watchable
from keyrelay.stores.usage import pool_scope

__all__ = ["Runtime"]

log = logging.getLogger("keyrelay.runtime.process")


#: a redaction over this many keys is rebuilt in a worker thread when keys arrive (about a
#: second of CPU at 100,000 keys, which on the loop would stall every request)
BIG_REDACTION = 20_000

#: The pace of key rows (counters and usage) with many busy keys, on average, and the longest a
#: busy key's counters wait; see ``_paced_flush`` and ``core/pacing.py``.
COUNTER_ROWS_PER_SECOND = 500.0
MAX_COUNTER_LAG = 300.0
#: keys summed, then written, per turn of the event loop in a counter flush (``_flush_counters``)
FLUSH_SLICE = 500


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
        self._writing: set[asyncio.Future[None]] = set()
        self._pacers: dict[str, Pacer] = {}  # per pool: how many key rows a flush writes (core/pacing.py)
        #: a flush asked for (shutdown, ``Pool.flush()``, a test) waits for the background one under way,
        #: which holds some of the counts while it writes them
        self._flushing = asyncio.Lock()
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
        redactor.current()  # built now, not by the first request (~1 s at 100,000 keys), and frozen with the start-up objects
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
        if self._writing:  # counter writes of a flush cancelled above
            await asyncio.gather(*self._writing, return_exceptions=True)
        try:
            await self.flush()
        except StoreUnavailable:  # shutting down during an outage: say what is lost, once
            queued = sum(len(p.backlog) for p in self.pools.values())
            log.error("store unreachable at shutdown: %d queued state changes and the last counters not written", queued)
        await self.store.close()

    async def _every(
        self, interval: float, job: Callable[[], Awaitable[object]], wake: asyncio.Event | None = None
    ) -> None:
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
                asked = await job()
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
        arriving = [r.secret for r in ch.records if r.pool in self.pools and not self.pools[r.pool].holds(r.id, r.secret)]
        ready = None
        if (arriving or ch.removed) and redactor.current().size >= BIG_REDACTION:  # rebuilt off the loop first
            ready = await asyncio.to_thread(redactor.prepare, arriving)
        for rec in ch.records:
            pool = self.pools.get(rec.pool)
            if pool is not None:
                pool.upsert(rec)
        if ready is not None:
            redactor.install(ready)  # no await since the upserts: no request saw the keys without it
        for kid in ch.removed:
            for pool in self.pools.values():
                pool.remove(kid)
        self._cursor = ch.cursor
        for hook in self.on_sync:
            hook()

    async def _paced_flush(self) -> None:
        """Every ``flush_interval``: sum what every pool counted (into /metrics and the pools'
        own usage rows, up to the second) and write the busy keys' counter and usage rows as
        each pool's :class:`~keyrelay.core.pacing.Pacer` allows: the longest-waiting first,
        about :data:`COUNTER_ROWS_PER_SECOND` a second, none later than :data:`MAX_COUNTER_LAG`."""
        await self.flush(paced=True)

    async def flush(self, *, paced: bool = False) -> int:
        """Sum the batched counters of every pool and write them (``paced``: the keys' rows only
        as the pools' pacers allow, the rest kept for later), and any transitions queued while
        the store was unreachable. If the store is still down, everything stays queued.
        Returns how many key rows were written."""
        async with self._flushing:  # one at a time: a flush returns with what came before it written
            if getattr(self.store, "epoch", 0) != self._epoch:
                await self.sync()  # a store re-initialised after losing its data: read it before writing
            for pool in self.pools.values():
                if pool.backlog:
                    await pool.drain_backlog()
            rows = 0
            at = self.clock()
            for pool in self.pools.values():
                rows += await self._flush_counters(pool, at, paced)
            return rows

    async def _flush_counters(self, pool: KeyPool, at: float, paced: bool) -> int:
        """Sum one pool's tally into its per-key sums (kept, oldest-busy first, until written),
        write the pool's usage row, and write the keys' counters and usage rows (all of them, or
        ``paced``: as many as the pacer says, the longest-waiting first; dated the middle of the
        time they cover) in slices of :data:`FLUSH_SLICE` keys, the event loop free between
        slices: a lump of tens of thousands of rows stalled every stream for tens of
        milliseconds (docs/design.md, "100,000 keys"). Each slice goes in key order (the store's
        index walked, not jumped about). What is not written (not its turn, the store is down,
        the flush is cancelled) stays in the batch."""
        tally, sums = pool.take_tally()
        pacer = self._pacers.get(pool.name)
        if pacer is None:
            pacer = self._pacers[pool.name] = Pacer(COUNTER_ROWS_PER_SECOND, MAX_COUNTER_LAG, at)
        busy = len(sums)
        total = [0] * len(COUNTER_FIELDS)
        summed = done = 0  # entries of ``tally`` summed, keys of ``order`` written
        order: list[str] = []
        try:
            while summed < len(tally):
                if summed:
                    await asyncio.sleep(0)
                pool.sum_tally(tally[summed : summed + FLUSH_SLICE], sums, total)
                summed += FLUSH_SLICE
            pacer.arrived(len(sums) - busy, at)  # new keys join the end of ``sums``, as of now
            if total[0]:
                try:  # the pool's usage over time (the admin API's charts), shared by every worker and gateway
                    await self.store.add_usage(self.clock(), {pool_scope(pool.name): Counters(*total)})
                except StoreUnavailable:
                    pass  # only this minute's chart misses them
            n, since = pacer.take(at, every=not paced)
            order = list(islice(sums, n))
            keys_at = (since + at) / 2
            for i in range(0, len(order), FLUSH_SLICE):
                if i:
                    await asyncio.sleep(0)
                part = sorted(order[i : i + FLUSH_SLICE])  # in key order: the store's index walked, not jumped about
                write = asyncio.ensure_future(self.store.add_key_sums(keys_at, {kid: sums[kid] for kid in part}))
                self._writing.add(write)  # a flush cancelled (shutting down) still writes this slice: stop() waits
                write.add_done_callback(self._writing.discard)
                try:
                    await asyncio.shield(write)
                finally:
                    failed = write.done() and (write.cancelled() or write.exception() is not None)
                    if not failed:  # written, or being written
                        done = i + len(part)
        finally:
            if summed < len(tally):  # cancelled or failed while summing: the rest is summed too
                pool.sum_tally(tally[summed:], sums, total)
            pacer.spent(done)
            for kid in order[:done]:
                del sums[kid]
            if sums:  # one entry per key at most: bounded by the pool's size, whatever the outage
                pool.keep_sums(sums)
            pacer.left(len(sums), at)  # also counts keys summed in after a failure
        return done

    def records(self) -> list[KeyRecord]:
        return [r for p in self.pools.values() for r in p.records()]
