"""How many of a pool's busy keys get their counter rows written now (``runtime/process.py``'s
counter flush): the keys that have waited longest first, about ``rate`` rows a second on
average, and none waiting longer than ``max_lag`` seconds.

A key's row costs the store ~20 µs of CPU (its counters and its usage minute). Written every
second, a pool of 100,000 busy keys would spend a core's tenth on them; paced, it spends what
``rate`` allows, spread evenly over the seconds (no lump of tens of thousands of rows at once),
and a key's counters lag behind by up to ``max_lag`` seconds. A few hundred busy keys are
written every second as before.

The flush keeps the keys' sums in a dict ordered by when each key first became busy (oldest
first); the pacer keeps, beside it, *cohorts*: how many keys became busy at each flush. Pure:
time is passed in.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """One pool's pace of key rows."""

    __slots__ = ("_budget", "_cohorts", "_last", "burst", "max_lag", "rate")

    def __init__(self, rate: float, max_lag: float, now: float, burst: float = 2.0) -> None:
        self.rate = rate
        self.max_lag = max_lag
        self.burst = burst  #: seconds of rows that may be saved up while few keys are busy
        self._budget = rate * burst  # the first flush may write a burst's worth at once
        self._last = now
        self._cohorts: deque[list[float]] = deque()  # [when they became busy, how many keys] oldest first

    @property
    def waiting(self) -> int:
        """Busy keys whose rows are not written yet."""
        return int(sum(n for _, n in self._cohorts))

    def arrived(self, n: int, now: float) -> None:
        """``n`` keys became busy (their sums were added at the end of the flush's dict)."""
        if n > 0:
            self._cohorts.append([now, float(n)])

    def take(self, now: float, *, every: bool = False) -> tuple[int, float]:
        """How many of the oldest busy keys to write now (``every``: all of them), and since
        when the oldest of those has waited (their rows cover that time; ``now`` if none)."""
        self._budget = min(self._budget + max(0.0, now - self._last) * self.rate, self.rate * self.burst)
        self._last = now
        cohorts = self._cohorts
        overdue = 0.0  # keys waiting for max_lag already: written whatever the budget says
        for since, n in cohorts:
            if since > now - self.max_lag:
                break
            overdue += n
        waiting = self.waiting
        n = waiting if every else int(min(max(self._budget, overdue), waiting))
        return n, (cohorts[0][0] if cohorts and n else now)

    def spent(self, n: int) -> None:
        """``n`` rows were written (or are being)."""
        self._budget -= n

    def left(self, n: int, now: float) -> None:
        """``n`` busy keys still wait after a flush: the oldest cohorts beyond them were
        written; keys beyond those counted (summed in after a failed flush) join as of ``now``."""
        cohorts = self._cohorts
        extra = self.waiting - n
        while extra > 0 and cohorts:
            if cohorts[0][1] <= extra:
                extra -= int(cohorts.popleft()[1])
            else:
                cohorts[0][1] -= extra
                extra = 0
        if extra < 0:
            self.arrived(-extra, now)
