"""The storage protocol: domain-shaped operations every backend implements alike.

Backends: ``memory://`` (tests), ``sqlite:///path`` (the embedded default), ``redis://``.
One contract test-suite (``tests/stores/test_contract.py``) runs against each of them.

A store may also offer ``watch`` (:class:`Watchable`): instant notice of other processes'
changes (Redis pub/sub). Without it, other processes' changes arrive at the next poll of
:meth:`Store.changes`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from keyrelay.core.model import Counters, Event, KeyRecord, Transition
from keyrelay.stores.usage import EventQuery

__all__ = ["COALESCE_WINDOW", "AddResult", "Changes", "Store", "TokenRecord", "Watchable", "coalesces", "hash_token", "key_id_for", "refuse_import"]


#: Seconds within which repeated ``cooling → cooling`` transitions of one key (a burst of 429s
#: to requests in flight, each pushing the deadline a little further) make one event: the last
#: such event is rewritten with the later transition's time and evidence (its deadline, later,
#: is the record's) instead of a new event being added.
COALESCE_WINDOW = 5.0


def coalesces(t: Transition, last: tuple[float, str, str] | None) -> bool:
    """Does ``t`` fold into the key's last event ``(at, from_state, to_state)``?"""
    if last is None or t.from_state.value != "cooling" or t.to_state.value != "cooling":
        return False
    at, frm, to = last
    return frm == "cooling" and to == "cooling" and 0 <= t.at - at <= COALESCE_WINDOW


def key_id_for(pool: str, secret: str) -> str:
    """A short stable id for a key: a hash, never the secret itself."""
    return "k" + hashlib.sha256(f"{pool}\0{secret}".encode()).hexdigest()[:11]


def hash_token(token: str) -> str:
    """Client tokens are stored as this hash only."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AddResult:
    added: tuple[KeyRecord, ...] = ()
    duplicates: tuple[str, ...] = ()  # ids of keys already in the pool


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    pools: tuple[str, ...]
    token_hash: str = field(repr=False)
    created_at: float
    revoked_at: float = 0.0
    #: an admin token opens the admin API (``/admin/api/v1``) and nothing else: never a proxy route
    admin: bool = False

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a cursor: the records (whole) and the ids removed."""

    cursor: int
    records: tuple[KeyRecord, ...] = ()
    removed: tuple[str, ...] = ()


@runtime_checkable
class Store(Protocol):
    """Keys, their transitions and history, counters and client tokens."""

    url: str

    async def open(self) -> None:
        """Connect and create or upgrade the schema. Idempotent."""
        ...

    async def close(self) -> None: ...

    # -- keys ----------------------------------------------------------------------------
    async def add_keys(
        self, pool: str, secrets: Sequence[str], now: float, *, weight: float = 1.0, label: str = "",
        base_url: str | None = None, actor: str = "admin",
    ) -> AddResult:
        """Add keys (already validated) to a pool; keys already there are reported, not re-added.
        Each added key gets an ``added`` event, by ``actor``. ``base_url`` (already validated):
        where these keys are sent instead of the pool's base URL."""
        ...

    async def load(self, pool: str | None = None) -> list[KeyRecord]:
        """Every key (of one pool, or all), with state and pool-wide counters."""
        ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def apply(self, transition: Transition) -> KeyRecord | None:
        """Write a transition and its event atomically if the key is still at
        ``transition.expected_version``. Returns the new record, or ``None`` on a version
        conflict or when the key no longer exists (the caller reloads and decides again, so a
        racing writer can never shorten a cooldown or revive a retired key)."""
        ...

    async def remove(self, key_id: str, now: float, actor: str = "admin") -> bool:
        """Delete a key for good (a person asked), recording a ``removed`` event."""
        ...

    async def add_counters(self, deltas: Mapping[str, Counters]) -> None:
        """Add batched counter increments (key id → delta). Unknown ids are ignored."""
        ...

    async def set_balance(self, key_id: str, balance: float | None, currency: str) -> None:
        """Record the last balance a probe read."""
        ...

    async def record_event(self, event: Event) -> None:
        """Append an event that is not a transition (e.g. a probe that changed nothing)."""
        ...

    async def events(self, key_id: str | None = None, limit: int = 200) -> list[Event]:
        """History, oldest first (the last ``limit`` events)."""
        ...

    async def query_events(self, query: EventQuery) -> list[Event]:
        """Events by key, pool and time, paged by their number (see :class:`EventQuery`)."""
        ...

    async def changes(self, since: int) -> Changes:
        """Keys changed (added, transitioned) or removed after cursor ``since``; cursor 0 gives
        the current cursor with everything. Counter updates do not count as changes."""
        ...

    # -- usage over time (stores/usage.py) ------------------------------------------------
    async def add_usage(self, at: float, rows: Mapping[str, Counters]) -> None:
        """Add each scope's counters to its minute and hour buckets of ``at``; prune old buckets."""
        ...

    async def add_key_sums(self, at: float, sums: Mapping[str, Sequence[int]]) -> None:
        """A counter flush's rows for keys, in one write: each key's counts (in
        :data:`~keyrelay.core.model.COUNTER_FIELDS` order) added to its counters (unknown ids
        ignored) and to its usage buckets of ``at`` (scope ``key:<id>``). The gateway's flush
        writes tens of thousands of these with many keys: no object per row on the way."""
        ...

    async def usage(self, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
        """The buckets of ``scope`` with ``step`` starting in ``[since, until)``, oldest first
        (only buckets that hold something)."""
        ...

    # -- locks ---------------------------------------------------------------------------
    async def try_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        """Take (or, for its owner, extend to ``now + ttl``) the named lock. True when ``owner``
        holds it afterwards: it was free, expired (``now`` at or past its expiry) or already
        ``owner``'s. One gateway at a time runs a probe sweep this way."""
        ...

    async def unlock(self, name: str, owner: str) -> None:
        """Release the lock if ``owner`` holds it; otherwise do nothing."""
        ...

    # -- client tokens -------------------------------------------------------------------
    async def create_token(
        self, name: str, pools: Sequence[str], token_hash: str, now: float, *, admin: bool = False
    ) -> TokenRecord: ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, name_or_id: str, now: float) -> bool: ...

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The live (not revoked) token with this hash."""
        ...

    # -- migration -----------------------------------------------------------------------
    async def import_records(
        self, records: Sequence[KeyRecord], events: Sequence[Event], tokens: Sequence[TokenRecord]
    ) -> None:
        """For migration only (``keyrelay migrate``): insert whole records (state, reason,
        since, until, version, weight, label, added_at, counters, balance, base_url), events (in order,
        renumbered by this store) and tokens (revoked or not) as they are. Imported keys count
        as changes. Refuses with a ``ValueError`` naming them (see :func:`refuse_import`) when
        this store already holds any of the key or token ids, or a live token of the same name;
        then nothing of the records is written."""
        ...


@runtime_checkable
class Watchable(Protocol):
    """A store that can tell this process when another one changed something."""

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` (cheap, non-blocking) soon after another process adds, changes
        or removes a key; run until cancelled, riding out lost connections. Notices may be
        lost or spurious: the caller still polls :meth:`Store.changes` now and then."""
        ...


def refuse_import(records: Iterable[KeyRecord], tokens: Iterable[TokenRecord], taken: Iterable[str]) -> None:
    """Raise the ``ValueError`` of :meth:`Store.import_records` if ``taken`` (what the store
    already holds) is not empty or the import repeats a key id, a token id or a live name."""
    clashes = list(taken)
    tokens = list(tokens)
    repeated = Counter(r.id for r in records) + Counter(t.id for t in tokens)
    repeated += Counter(f"live token {t.name!r}" for t in tokens if not t.revoked)
    clashes += sorted(k for k, n in repeated.items() if n > 1)
    if clashes:
        shown = ", ".join(clashes[:10]) + (f" and {len(clashes) - 10} more" if len(clashes) > 10 else "")
        raise ValueError(f"cannot import: {len(clashes)} already in the destination store or repeated: {shown}")
