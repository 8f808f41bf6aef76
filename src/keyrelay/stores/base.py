"""The storage protocol: domain-shaped operations every backend implements alike.

Backends: ``memory://`` (tests), ``sqlite:///path`` (the embedded default), ``redis://``.
One contract test-suite (``tests/stores/test_contract.py``) runs against each of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from keyrelay.core.model import Counters, Event, KeyRecord, Transition

__all__ = ["Store", "AddResult", "TokenRecord", "Changes", "key_id_for", "hash_token"]


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
        self, pool: str, secrets: Sequence[str], now: float, *, weight: float = 1.0, label: str = ""
    ) -> AddResult:
        """Add keys (already validated) to a pool; keys already there are reported, not re-added.
        Each added key gets an ``added`` event."""
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

    async def changes(self, since: int) -> Changes:
        """Keys changed (added, transitioned) or removed after cursor ``since``; cursor 0 gives
        the current cursor with everything. Counter updates do not count as changes."""
        ...

    # -- client tokens -------------------------------------------------------------------
    async def create_token(self, name: str, pools: Sequence[str], token_hash: str, now: float) -> TokenRecord: ...

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, name_or_id: str, now: float) -> bool: ...

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The live (not revoked) token with this hash."""
        ...
