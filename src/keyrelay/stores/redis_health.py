"""How :class:`keyrelay.stores.redis.RedisStore` meets a server that stops answering: every call
goes through :func:`edge`, which maps redis-py's failures to the store's exceptions, and one
:class:`Health` per store tracks outages across calls (and the store's ``watch()``).

- **Errors.** Connection failures and timeouts become :class:`StoreUnavailable` naming only
  ``host:port`` (never the password), refused credentials a :class:`StoreError`.
- **Outages.** One log line (logger ``keyrelay.store``) when the server stops answering and one
  when it is back, however many calls fail meanwhile. While it is down, calls fail at once,
  except one attempt per backoff step (``BACKOFF``: 0.1 s doubling to 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from keyrelay.exceptions import StoreError, StoreUnavailable

__all__ = ["BACKOFF", "Health", "edge", "watch"]

log = logging.getLogger("keyrelay.store")

BACKOFF = (0.1, 5.0)  # first and longest wait between reconnects (calls and watch() while down)


class Health:
    """Whether the server answers. ``gen`` changes with every change of ``down``, so the late
    answer of a call started before the last change changes nothing (no flapping)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.down = False
        self.gen = 0
        self._delay = BACKOFF[0]
        self._retry_at = 0.0

    def admit(self) -> int:
        """The generation to report back with; raises while waiting out the backoff."""
        if self.down:
            now = time.monotonic()
            if now < self._retry_at:
                raise StoreUnavailable(f"redis unreachable at {self.where}")
            self._retry_at = now + self._delay  # this call is the attempt of this step
        return self.gen

    def failed(self, gen: int, exc: BaseException) -> None:
        if gen != self.gen:
            return
        if self.down:
            self._delay = min(self._delay * 2, BACKOFF[1])
        else:
            self.down, self.gen, self._delay = True, self.gen + 1, BACKOFF[0]
            log.error(
                "redis store at %s lost (%s): serving from memory, queuing state changes and counters; "
                "reconnecting with backoff", self.where, type(exc).__name__,
            )
        self._retry_at = time.monotonic() + self._delay

    def ok(self, gen: int) -> None:
        if self.down and gen == self.gen:
            self.down, self.gen = False, self.gen + 1
            log.warning("redis store at %s is back: writing what was queued", self.where)


class _Edged(Protocol):
    """What :func:`edge` reads of the store whose methods it wraps."""

    @property
    def where(self) -> str: ...

    @property
    def _redis(self) -> object: ...  # None until open()

    @property
    def _health(self) -> Health: ...


_S = TypeVar("_S", bound=_Edged)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def edge(
    fn: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]:
    """Map redis-py's connection failures to the store's exceptions, once, at the edge."""

    @functools.wraps(fn)
    async def call(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        health = self._health if self._redis is not None else None  # open() itself is not tracked
        gen = health.admit() if health is not None else 0
        try:
            result = await fn(self, *args, **kwargs)
        except AuthenticationError as exc:
            raise StoreError(f"redis at {self.where} refused the credentials") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if health is not None:
                health.failed(gen, exc)
            raise StoreUnavailable(f"redis unreachable at {self.where}") from exc
        if health is not None:
            health.ok(gen)
        return result

    return call


async def watch(client: Any, channel: str, origin: str, health: Health, on_change: Callable[[], None]) -> None:
    """Call ``on_change()`` whenever another process publishes a change on ``channel``, until
    cancelled (messages starting with our own ``origin`` are ours, skipped).

    On a lost connection it reconnects with backoff (``health`` logs one line when lost and one
    when back) and calls ``on_change()`` after every (re)subscription, since messages published
    meanwhile are gone."""
    own = origin + " "
    delay = BACKOFF[0]
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            health.ok(health.gen)
            delay = BACKOFF[0]
            on_change()
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None and msg.get("type") == "message" and not str(msg["data"]).startswith(own):
                    on_change()
        except (RedisError, OSError) as exc:
            if not health.down:  # while down, the calls' own attempts set their backoff
                health.failed(health.gen, exc)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF[1])
