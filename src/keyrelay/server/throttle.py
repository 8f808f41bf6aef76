"""Token guessing, throttled per client address: a small in-memory token bucket of failures.

Each refused token costs its source address one unit of a bucket that holds ``burst`` units
and refills at ``rate`` units a second. A source whose bucket is empty is *throttled*: its
requests whose token is not already known to this process get 429 (OpenAI's shape, with
``Retry-After``) without hashing the token or asking the store, and one warning line says so
(once per episode). Valid tokens are never slowed: a token accepted lately is recognised
before the throttle is looked at (``Runtime.recognise``), and a throttled source's token is
still checked against the tokens held in memory (``Runtime.known``).

Bounded: at most :data:`MAX_SOURCES` addresses are tracked (then the table starts over).
Behind a reverse proxy every client shares its address: raise ``auth_failure_burst`` there,
or set it to 0 to turn throttling off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["MAX_SOURCES", "AuthThrottle"]

log = logging.getLogger("keyrelay.server")

MAX_SOURCES = 100_000


class AuthThrottle:
    """Failed authentications per source address."""

    __slots__ = ("_buckets", "burst", "clock", "rate")

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.clock = clock
        #: source → (units left, when they were counted, throttled since (0: not throttled))
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def _level(self, source: str, now: float) -> tuple[float, float]:
        b = self._buckets.get(source)
        if b is None:
            return self.burst, 0.0
        units = min(self.burst, b[0] + (now - b[1]) * self.rate)
        return units, b[2]

    def blocked(self, source: str) -> float | None:
        """Seconds until ``source`` may try an unknown token again, or ``None`` when it may now."""
        if not self.burst or source not in self._buckets:
            return None
        units, _ = self._level(source, self.clock())
        if units >= 1.0:
            return None
        return (1.0 - units) / self.rate if self.rate > 0 else 60.0

    def failed(self, source: str) -> None:
        """``source`` sent a token that was refused."""
        if not self.burst:
            return
        now = self.clock()
        units, since = self._level(source, now)
        units -= 1.0
        if units < 1.0 and not since:
            since = now
            log.warning(
                "token guessing throttled client=%s: %d unknown tokens in a row; its unknown tokens get 429 "
                "until it slows to %g a second", source, int(self.burst), self.rate,
            )
        elif units >= self.burst - 1.0:
            since = 0.0
        if len(self._buckets) >= MAX_SOURCES and source not in self._buckets:
            self._buckets.clear()
        self._buckets[source] = (max(units, -self.burst), now, since)

    def throttled(self) -> int:
        """How many sources are throttled now."""
        now = self.clock()
        return sum(1 for s in self._buckets if self._level(s, now)[0] < 1.0)
