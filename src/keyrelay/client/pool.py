"""Library mode's pool: keys from a store, chosen in process, with one background loop.

Design (the same rules as the gateway, without a gateway):

- The hot path — choosing a key, counting an outcome, deciding a transition — only touches the
  in-memory :class:`~keyrelay.runtime.pool.KeyPool` under its lock. No event loop is started per
  request and no call waits for the store.
- The pool owns ONE daemon thread running ONE asyncio loop (:class:`Background`) that owns the
  store: it opens it, applies the store's change feed every 0.5 s (so keys retired by a gateway
  or another process stop being used here, and the other way round), flushes batched counters
  every second and writes transitions.
- A transition decided on the hot path is handed to that loop with
  ``asyncio.run_coroutine_threadsafe``: sync callers do not wait (the write is tracked, and
  :meth:`Pool.close` waits for it); async callers await it through ``asyncio.wrap_future``.
  Memory is updated before the write, so no new request goes to a retired key meanwhile.
- ``close()`` waits for pending writes, flushes counters and closes the store. A pool that is
  never closed is closed when it is garbage-collected or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from types import TracebackType
from typing import Self

from keyrelay.client.background import Background
from keyrelay.client.lease import KeyLease
from keyrelay.config import PoolSettings, ServerSettings, Settings
from keyrelay.core.masking import validate_secret
from keyrelay.core.model import KeyRecord, Outcome, Transition, Verdict
from keyrelay.core.policy import CoolingPolicy, RetryPolicy
from keyrelay.core.selection import STRATEGIES
from keyrelay.providers import DIALECTS, Dialect, default_base_url
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.process import Runtime

__all__ = ["Pool"]

#: How long close() waits for pending writes, and for the final flush.
_CLOSE_TIMEOUT = 10.0


def _shutdown(runtime: Runtime, background: Background) -> None:
    """Close a pool's runtime and loop (also run by the finalizer: must not refer to the Pool)."""
    if not background.running:
        return
    try:
        background.drain(_CLOSE_TIMEOUT)
        background.call(runtime.stop(), _CLOSE_TIMEOUT)
    finally:
        background.stop()


class Pool:
    """A pool of upstream keys used in process. Build one with :meth:`open` or :meth:`from_keys`."""

    def __init__(self, runtime: Runtime, background: Background, pool_name: str) -> None:
        self._runtime = runtime
        self._background = background
        self.keypool: KeyPool = runtime.pools[pool_name]
        self.keypool.writer = self._write_later  # recording an outcome persists it, on the background loop
        self._writing: set[concurrent.futures.Future[KeyRecord | None]] = set()
        self._finalizer = weakref.finalize(self, _shutdown, runtime, background)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        store_url: str,
        pool_name: str = "openai",
        *,
        provider: str = "openai",
        base_url: str | None = None,
        strategy: str = "random",
        retry: RetryPolicy | None = None,
        cooling: CoolingPolicy | None = None,
    ) -> Pool:
        """The pool ``pool_name`` of the store at ``store_url`` (``sqlite:///keys.db``,
        ``redis://…``, ``memory://``), shared with every gateway and process using that store."""
        settings = _settings(store_url, pool_name, provider, base_url, strategy, retry, cooling)
        return cls._start(settings, ())

    @classmethod
    def from_keys(
        cls,
        keys: Sequence[str],
        pool_name: str = "openai",
        *,
        provider: str = "openai",
        base_url: str | None = None,
        strategy: str = "random",
        retry: RetryPolicy | None = None,
        cooling: CoolingPolicy | None = None,
    ) -> Pool:
        """A pool of these keys, kept in memory (state is lost when the process ends)."""
        if isinstance(keys, str):
            raise TypeError("keys must be a list of keys, not one string")
        secrets = [validate_secret(k) for k in keys]
        settings = _settings("memory://", pool_name, provider, base_url, strategy, retry, cooling)
        return cls._start(settings, secrets)

    @classmethod
    def _start(cls, settings: Settings, secrets: Sequence[str]) -> Pool:
        runtime = Runtime(settings)
        background = Background(f"keyrelay-{settings.default_pool.name}")

        async def start() -> None:
            await runtime.store.open()
            if secrets:
                await runtime.store.add_keys(settings.default_pool.name, secrets, time.time())
            await runtime.start(background=True)

        try:
            background.call(start(), _CLOSE_TIMEOUT * 3)
        except BaseException:
            background.stop()
            raise
        return cls(runtime, background, settings.default_pool.name)

    # -- what it is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.keypool.name

    @property
    def dialect(self) -> Dialect:
        return self.keypool.dialect

    @property
    def settings(self) -> PoolSettings:
        return self.keypool.settings

    @property
    def base_url(self) -> str:
        """The pool's upstream base URL (for ``OpenAI(base_url=pool.base_url, …)``)."""
        return self.keypool.settings.base_url

    @property
    def retry(self) -> RetryPolicy:
        return self.keypool.settings.retry

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __repr__(self) -> str:
        return f"Pool(name={self.name!r}, store={self._runtime.store.url!r}, keys={len(self.keypool.records())})"

    def keys(self) -> list[KeyRecord]:
        """Every key of the pool, as stored, with its counters. Waits for this process's pending
        writes and counters first (a store round-trip: not for the hot path)."""
        self.check_open()
        self._background.drain(_CLOSE_TIMEOUT)

        async def load() -> list[KeyRecord]:
            await self._runtime.flush()
            return await self._runtime.store.load(self.name)

        return self._background.call(load(), _CLOSE_TIMEOUT)

    def eligible_count(self) -> int:
        """How many keys may take traffic now."""
        return self.keypool.eligible_count()

    # -- rotation by hand ----------------------------------------------------------------
    def acquire(self, exclude: Collection[str] = ()) -> KeyLease:
        """Lend one key (not one of the ``exclude`` key ids). Raises :class:`NoKeyAvailable`."""
        self.check_open()
        attempts = Attempts(self.keypool)
        if exclude:
            attempts.tried.extend(exclude)
        lease = attempts.next()
        if lease is None:  # every key was excluded
            raise self.keypool.no_key()
        return KeyLease(self, attempts, lease)

    async def aacquire(self, exclude: Collection[str] = ()) -> KeyLease:
        """:meth:`acquire` for async code (choosing a key never waits on I/O)."""
        return self.acquire(exclude)

    @contextlib.contextmanager
    def lease(self, exclude: Collection[str] = ()) -> Iterator[KeyLease]:
        """Lend a key for a block: ok when the block ends normally, the exception's
        classification when it raises (and the exception goes on), unless you reported already."""
        lease = self.acquire(exclude)
        try:
            yield lease
        except BaseException as exc:
            if lease.open:
                lease.report(exc)
            raise
        if lease.open:
            lease.report(Outcome.OK)

    @contextlib.asynccontextmanager
    async def alease(self, exclude: Collection[str] = ()) -> AsyncIterator[KeyLease]:
        """:meth:`lease` for async code; state changes are awaited."""
        lease = self.acquire(exclude)
        try:
            yield lease
        except BaseException as exc:
            if lease.open:
                await lease.areport(exc)
            raise
        if lease.open:
            await lease.areport(Outcome.OK)

    # -- persistence: the run-time pool's writer ---------------------------------------------
    def _write_later(self, t: Transition, verdict: Verdict, lease_version: int) -> None:
        """Hand a transition to the background loop without waiting for it (any thread)."""
        fut = self._background.submit(self.keypool.persist(t, verdict, lease_version))
        self._writing.add(fut)
        fut.add_done_callback(self._writing.discard)

    async def asettle(self) -> None:
        """Wait (from any event loop) until the state changes recorded so far are written.
        Cancelling the caller does not cancel the writes."""
        while self._writing:
            await asyncio.shield(asyncio.wait([asyncio.wrap_future(f) for f in tuple(self._writing)]))

    # -- admin ---------------------------------------------------------------------------
    def add_keys(self, keys: Sequence[str], *, weight: float = 1.0, label: str = "") -> int:
        """Add keys to the pool's store (keys already there are skipped); returns how many were new."""
        self.check_open()
        secrets = [validate_secret(k) for k in keys]

        async def add() -> int:
            res = await self._runtime.store.add_keys(self.name, secrets, time.time(), weight=weight, label=label)
            await self._runtime.sync()
            return len(res.added)

        return self._background.call(add(), _CLOSE_TIMEOUT)

    def refresh(self) -> None:
        """Apply the store's changes now, instead of at the next sync tick."""
        self.check_open()
        self._background.call(self._runtime.sync(), _CLOSE_TIMEOUT)

    def flush(self) -> None:
        """Wait for pending state writes and write the batched counters now."""
        self.check_open()
        self._background.drain(_CLOSE_TIMEOUT)
        self._background.call(self._runtime.flush(), _CLOSE_TIMEOUT)

    # -- life cycle ----------------------------------------------------------------------
    def check_open(self) -> None:
        """Raise ``RuntimeError`` if the pool was closed."""
        if self.closed:
            raise RuntimeError(f"keyrelay pool {self.name!r} is closed")

    def close(self) -> None:
        """Wait for pending writes, flush counters, close the store and stop the loop. Idempotent."""
        self._finalizer()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def _settings(
    store_url: str,
    pool_name: str,
    provider: str,
    base_url: str | None,
    strategy: str,
    retry: RetryPolicy | None,
    cooling: CoolingPolicy | None,
) -> Settings:
    if provider not in DIALECTS:
        raise ValueError(f"unknown provider {provider!r} (known: {', '.join(sorted(DIALECTS))})")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    url = base_url or default_base_url(provider)
    if not url:
        raise ValueError(f"provider {provider!r} needs a base_url (its resource endpoint)")
    pool = PoolSettings(
        name=pool_name,
        provider=provider,
        base_url=url.rstrip("/"),
        strategy=strategy,
        default=True,
        retry=retry or RetryPolicy(),
        cooling=cooling or CoolingPolicy(),
    )
    return Settings(server=ServerSettings(sync_interval=0.5, flush_interval=1.0), store_url=store_url, pools=(pool,))
