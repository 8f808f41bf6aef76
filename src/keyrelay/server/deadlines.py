"""Upstream read timeouts, checked by one coarse ticker instead of a timer per read.

aiohttp's ``sock_read`` timeout cancels and re-arms a loop timer on every chunk an upstream
sends, a cost on the gateway's hot path (figures: docs/design.md, "Hot path").
Here each attempt holds a :class:`Deadline` that the proxy pushes forward as bytes arrive
(an attribute write), and one task looks every ``tick`` seconds for attempts whose upstream
has been silent too long and cancels them. A read timeout so fires between ``timeout`` and
``timeout + tick`` after the last byte.

The cancelled attempt tells its own cancellation from any other (the client going away, a
shutdown) with :meth:`Deadline.expired`, which takes back exactly the one cancellation it
caused (``Task.uncancel``), as :func:`asyncio.timeout` does.

Rules for the proxy: arm before sending, read the upstream inside ``with deadline:`` (which
turns the deadline's own cancellation into :class:`ReadTimeout`), :meth:`~Deadline.push` when bytes arrive,
:meth:`~Deadline.pause` while it waits on anything but the upstream (the client, the store),
and :meth:`~ReadDeadlines.disarm` when the attempt is over (in a ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Self

from keyrelay.exceptions import ReadTimeout

__all__ = ["Deadline", "ReadDeadlines", "ReadTimeout"]


class Deadline:
    """One attempt's read deadline (loop time)."""

    __slots__ = ("at", "fired", "seconds", "task", "time")

    def __init__(self, seconds: float, task: asyncio.Task[object], time: Callable[[], float]) -> None:
        self.seconds = seconds
        self.task = task
        self.time = time
        self.at = time() + seconds
        self.fired = False

    def push(self) -> None:
        """Bytes arrived: the upstream has ``seconds`` again for the next ones."""
        self.at = self.time() + self.seconds

    def pause(self) -> None:
        """Waiting on something else than the upstream: no read timeout until :meth:`push`."""
        self.at = math.inf

    def __enter__(self) -> Self:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Around an upstream read: a cancellation of this deadline's own becomes a :class:`ReadTimeout`."""
        if typ is asyncio.CancelledError and self.expired():
            raise ReadTimeout from None

    def expired(self) -> bool:
        """Was the ``CancelledError`` being handled caused by this deadline alone? If it was,
        the cancellation is taken back and the caller goes on as after a read timeout."""
        if not self.fired:
            return False
        self.fired = False
        return self.task.uncancel() == 0


class ReadDeadlines:
    """The live deadlines of a gateway and the ticker that enforces them."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._live: set[Deadline] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._time: Callable[[], float] = time.monotonic  # the loop's clock, once running

    def arm(self, seconds: float) -> Deadline:
        """A deadline for the current task's next upstream read."""
        task = asyncio.current_task()
        assert task is not None, "arm() is called from a request handler"
        if self._ticker is None:
            loop = task.get_loop()
            self._time = loop.time
            self._ticker = loop.create_task(self._run(), name="keyrelay-read-deadlines")
        d = Deadline(seconds, task, self._time)
        self._live.add(d)
        return d

    def disarm(self, d: Deadline) -> None:
        self._live.discard(d)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            late = [d for d in self._live if d.at <= now]
            for d in late:
                self._live.discard(d)
                d.fired = True
                d.task.cancel()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
