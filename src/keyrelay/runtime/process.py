"""The running pools of one process: loads them from the store, keeps them in sync with what
other processes (the CLI, other gateways) change, and flushes batched counters.

Used by the gateway and by library mode alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from keyrelay.config import Settings
from keyrelay.core.model import KeyRecord
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.telemetry import Telemetry
from keyrelay.stores import Store, TokenRecord, hash_token, open_store
from keyrelay.stores.base import Watchable
from keyrelay.stores.usage import usage_rows

__all__ = ["Client", "Runtime"]

log = logging.getLogger("keyrelay.runtime.process")


class Client:
    """An authenticated caller: a token's name and the pools it may use."""

    __slots__ = ("name", "pools")

    def __init__(self, name: str, pools: tuple[str, ...]) -> None:
        self.name = name
        self.pools = pools

    def may_use(self, pool: str) -> bool:
        return "*" in self.pools or pool in self.pools


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
        self._config_tokens = {t.token_hash: Client(t.name, t.pools) for t in settings.tokens}
        self._token_cache: dict[str, tuple[Client | None, float]] = {}
        #: tokens accepted lately, by their raw value: spares the hash on the hot path. Held in
        #: memory only (as the request that brought the token was), emptied at every sync.
        self._recent: dict[str, tuple[Client, float]] = {}
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
        self._token_cache = {h: (c, 0.0) for h, (c, _) in self._token_cache.items()}  # ask the store again
        self._recent.clear()

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

    # -- clients -------------------------------------------------------------------------
    def recognise(self, token: str) -> Client | None:
        """The client of a token accepted lately, without hashing or asking the store; ``None``
        when it was not (then :meth:`authenticate` decides)."""
        hit = self._recent.get(token)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def known(self, token: str) -> Client | None:
        """The client of ``token`` if this process holds it in memory (a config token, or one the
        store confirmed lately), without asking the store; ``None`` otherwise."""
        if not token:
            return None
        h = hash_token(token)
        client = self._config_tokens.get(h)
        if client is None:
            hit = self._token_cache.get(h)
            client = hit[0] if hit is not None else None
        return client

    async def authenticate(self, token: str) -> Client | None:
        """The client a bearer token belongs to, or ``None``. Tokens are compared by hash."""
        if not token:
            return None
        h = hash_token(token)
        now = time.monotonic()
        client = self._config_tokens.get(h)
        if client is not None:
            self._remember(token, client, now + 3600.0)
            return client
        hit = self._token_cache.get(h)
        if hit is not None and hit[1] > now:
            if hit[0] is not None:
                self._remember(token, hit[0], hit[1])
            return hit[0]
        try:
            rec: TokenRecord | None = await self.store.find_token(h)
        except StoreUnavailable:
            if hit is None:
                raise
            return hit[0]  # the store is down: its last answer (sync() only expires the cache)
        found = None
        if rec is not None and not rec.admin and hmac.compare_digest(rec.token_hash, h):  # admin: not a client
            found = Client(rec.name, rec.pools)
        if len(self._token_cache) > 10_000:
            self._token_cache.clear()
        self._token_cache[h] = (found, now + (30.0 if found else 1.0))
        if found is not None:
            self._remember(token, found, now + 30.0)
        return found

    def _remember(self, token: str, client: Client, until: float) -> None:
        if len(self._recent) >= 10_000:
            self._recent.clear()
        self._recent[token] = (client, until)

    def records(self) -> list[KeyRecord]:
        return [r for p in self.pools.values() for r in p.records()]
