"""The in-memory pool: the keys of one pool, which of them may take traffic, and leases.

This is what the hot path consults to choose a key — no store round-trip. It is pure: the
caller passes ``now`` and ``rng``, and feeds it records (from the store, or from transitions
it decided itself).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from keyrelay.core.model import KeyRecord, KeyState
from keyrelay.core.selection import Rng, Strategy, make_strategy

__all__ = ["Lease", "PoolState"]


@dataclass(frozen=True, slots=True)
class Lease:
    """One key lent to one attempt. ``version`` is the key's version when it was lent."""

    key_id: str
    pool: str
    secret: str
    version: int
    masked: str  #: the key as it may be shown
    #: the key's own upstream (an Azure resource, a reseller) instead of its pool's; ``None``: the pool's
    base_url: str | None = None

    def __repr__(self) -> str:  # never show the secret
        return f"Lease(key_id={self.key_id!r}, pool={self.pool!r}, key={self.masked!r}, version={self.version})"


class PoolState:
    """Keys of one pool with their eligibility, in-flight counts and a selection strategy."""

    def __init__(self, name: str, strategy: str = "random") -> None:
        self.name = name
        self.strategy_name = strategy
        self._strategy: Strategy = make_strategy(strategy)
        self._records: dict[str, KeyRecord] = {}
        #: each key's lease for its current version: leases are immutable, so one is lent to
        #: every request (no object made per request on the hot path)
        self._leases: dict[str, Lease] = {}
        self._inflight: dict[str, int] = {}
        self._cooling: list[tuple[float, str]] = []  # heap of (until, key id), lazily cleaned
        self._eligible: set[str] = set()
        #: grows whenever a key's secret arrives, changes or leaves (redaction rebuilds on it)
        self.secrets_version = 0

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(list(self._records.values()))

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def inflight(self, key_id: str) -> int:
        return self._inflight.get(key_id, 0)

    def eligible_count(self, now: float) -> int:
        self._promote(now)
        return len(self._eligible)

    def soonest_free(self, now: float) -> float | None:
        """When the first cooling key frees up (absolute time), or ``None`` if none is cooling."""
        self._promote(now)
        while self._cooling:
            until, kid = self._cooling[0]
            rec = self._records.get(kid)
            if rec is not None and rec.state is KeyState.COOLING and rec.until == until:
                return until
            heapq.heappop(self._cooling)
        return None

    # -- writing -------------------------------------------------------------------------
    def upsert(self, record: KeyRecord, force: bool = False) -> None:
        """Insert or replace a key's record. An older version than the one held is ignored,
        unless ``force`` (the stored record is authoritative after a write conflict)."""
        old = self._records.get(record.id)
        if not force and old is not None and old.version > record.version:
            return
        if old is None or old.secret != record.secret:
            self.secrets_version += 1
        self._records[record.id] = record
        self._leases[record.id] = Lease(
            record.id, self.name, record.secret, record.version, record.masked, record.base_url
        )
        if record.state is KeyState.ACTIVE:
            self._make_eligible(record)
        else:
            self._make_ineligible(record.id)
            if record.state is KeyState.COOLING:
                heapq.heappush(self._cooling, (record.until, record.id))

    def load(self, records: Iterable[KeyRecord]) -> None:
        for r in records:
            self.upsert(r)

    def remove(self, key_id: str) -> None:
        if self._records.pop(key_id, None) is not None:
            self.secrets_version += 1
        self._leases.pop(key_id, None)
        self._make_ineligible(key_id)

    def _make_eligible(self, record: KeyRecord) -> None:
        if record.id in self._eligible:
            self._strategy.add(record.id, record.weight)  # weight may have changed
            return
        self._eligible.add(record.id)
        self._strategy.add(record.id, record.weight)
        n = self._inflight.get(record.id, 0)
        if n:
            self._strategy.acquired(record.id, n)

    def _make_ineligible(self, key_id: str) -> None:
        if key_id in self._eligible:
            self._eligible.discard(key_id)
            self._strategy.discard(key_id)

    def _promote(self, now: float) -> None:
        """Cooling keys whose time has passed become eligible again."""
        heap = self._cooling
        while heap and heap[0][0] <= now:
            until, kid = heapq.heappop(heap)
            rec = self._records.get(kid)
            if rec is not None and rec.state is KeyState.COOLING and rec.until == until:
                self._make_eligible(rec)

    # -- leasing -------------------------------------------------------------------------
    def acquire(self, now: float, rng: Rng, exclude: Collection[str] = ()) -> Lease | None:
        """Lend an eligible key not in ``exclude``, or ``None`` when there is none."""
        if self._cooling and self._cooling[0][0] <= now:
            self._promote(now)
        kid = self._strategy.pick(rng, exclude)
        if kid is None:
            return None
        n = self._inflight.get(kid, 0) + 1
        self._inflight[kid] = n
        if self._strategy.tracks_inflight:
            self._strategy.acquired(kid, n)
        return self._leases[kid]

    def release(self, lease: Lease) -> None:
        n = self._inflight.get(lease.key_id, 0) - 1
        if n > 0:
            self._inflight[lease.key_id] = n
        else:
            self._inflight.pop(lease.key_id, None)
            n = 0
        if self._strategy.tracks_inflight and lease.key_id in self._eligible:
            self._strategy.released(lease.key_id, n)
