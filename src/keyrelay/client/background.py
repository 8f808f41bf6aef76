"""The one background thread of a library-mode :class:`~keyrelay.client.Pool`.

It runs one asyncio event loop, and that loop owns the store: it opens it, keeps the in-memory
pool in sync with the store's change feed, flushes batched counters and writes transitions.
Callers on any thread (sync SDK clients) or any other event loop (async SDK clients) hand it
coroutines with :meth:`Background.submit`; nothing on their hot path waits for the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Background"]

log = logging.getLogger("keyrelay.client")

_T = TypeVar("_T")


class Background:
    """A daemon thread running an asyncio loop, and the writes it has been handed."""

    def __init__(self, name: str = "keyrelay") -> None:
        self.loop = asyncio.new_event_loop()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for t in tasks:
                    t.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread.is_alive()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the loop and wait for its result (for start-up, admin calls, close)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Background.call() from the background thread would deadlock")
        return self._schedule(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coro`` on the loop without waiting. The future is tracked until done (see
        :meth:`drain`); a failure is logged, never raised into the caller's thread."""
        fut = self._schedule(coro)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._done)
        return fut

    def _schedule(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        if not self.running:
            coro.close()
            raise RuntimeError("the keyrelay pool is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _done(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            log.error("background store write failed: %s: %s", type(exc).__name__, exc)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for every submitted write; ``False`` if some were still running at ``timeout``."""
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return True
        _, not_done = concurrent.futures.wait(pending, timeout)
        return not not_done

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)
