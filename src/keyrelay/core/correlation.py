"""The correlated-failure guard: when most of a pool fails at once, blame the upstream, not the keys.

An IP ban, a provider outage or a broken egress makes every key fail together (gpt-load #143
blacklisted a whole pool that way). Like Envoy's *max ejection percent*, the guard caps how
much of a pool may be taken out — retired (exhausted, invalid) or cooled — within a short
window; beyond the cap the caller treats the failure as ``upstream_fault`` and the key stays in.

The rule, per pool: let ``taken`` be the distinct keys taken out in the last ``window`` seconds
and ``live`` the keys still live (this one included). Taking one more out is refused when
``taken + 1 > share × (live + taken)`` — the share is of the keys that were live when the window
began. So with the defaults (half, 60 s) a pool of 8 may lose 4 keys in a minute, not a 5th.
Pools smaller than ``min_keys`` never trip: a 2-key pool still retires its bad key.

Once tripped, the guard refuses every take-out until ``window`` seconds pass without a refused
one; :meth:`CorrelationGuard.admit` says when an episode starts so the caller can log one
pool-level warning rather than one per key. Pure and synchronous: the caller passes ``now`` and
holds whatever lock guards the pool.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Admission", "CorrelationGuard"]


class Admission(str, enum.Enum):
    ALLOWED = "allowed"
    #: refused, and the first refusal of a correlated-failure episode (log it)
    TRIPPED = "tripped"
    #: refused, within an episode already reported
    REFUSED = "refused"

    @property
    def allowed(self) -> bool:
        return self is Admission.ALLOWED


class CorrelationGuard:
    """Counts the keys of one pool taken out recently and refuses the ones beyond the cap."""

    __slots__ = ("_taken", "_tripped_until", "_when", "min_keys", "refused", "share", "window")

    def __init__(self, share: float = 0.5, window: float = 60.0, min_keys: int = 4) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be above 0 and at most 1")
        self.share = share
        self.window = window
        self.min_keys = min_keys
        self._taken: dict[str, float] = {}  # key id → when it was (last) taken out
        self._when: deque[tuple[float, str]] = deque()
        self._tripped_until = float("-inf")
        #: take-outs refused since the guard was made (for reports and tests)
        self.refused = 0

    @property
    def disabled(self) -> bool:
        return self.share >= 1

    def tripped(self, now: float) -> bool:
        """Is the pool in a correlated-failure episode at ``now``?"""
        return now < self._tripped_until

    def taken(self, now: float) -> int:
        """Distinct keys taken out within the window ending at ``now``."""
        self._prune(now)
        return len(self._taken)

    def admit(self, key_id: str, live: int, now: float) -> Admission:
        """May ``key_id`` (one of ``live`` live keys) be taken out at ``now``? An allowed take-out
        is counted; a refused one extends the episode."""
        if self.disabled:
            return Admission.ALLOWED
        self._prune(now)
        if key_id in self._taken:  # already counted in this window (e.g. cooled twice)
            self._note(key_id, now)
            return Admission.ALLOWED
        taken = len(self._taken)
        base = live + taken
        if not self.tripped(now) and (base < self.min_keys or taken + 1 <= self.share * base):
            self._note(key_id, now)
            return Admission.ALLOWED
        first = not self.tripped(now)
        self._tripped_until = now + self.window
        self.refused += 1
        return Admission.TRIPPED if first else Admission.REFUSED

    def forget(self, key_id: str) -> None:
        """A person put ``key_id`` back into rotation: its take-out no longer counts, so a new
        failure of it within the window is judged against the cap like any other key's (while
        the pool is in an episode: kept in, not retired again at once)."""
        self._taken.pop(key_id, None)

    def _note(self, key_id: str, now: float) -> None:
        self._taken[key_id] = now
        self._when.append((now, key_id))

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        q = self._when
        while q and q[0][0] <= horizon:
            at, kid = q.popleft()
            if self._taken.get(kid) == at:
                del self._taken[kid]
