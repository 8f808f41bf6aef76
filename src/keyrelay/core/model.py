"""The domain's values: key states, outcomes, verdicts, key records, transitions and events.

Everything here is a frozen value. Nothing here does I/O, reads a clock or draws a random number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from operator import attrgetter

from keyrelay.core.masking import mask

__all__ = [
    "KEY_OUTCOMES",
    "RETRYABLE_OUTCOMES",
    "Counters",
    "Event",
    "KeyRecord",
    "KeyState",
    "Outcome",
    "Transition",
    "Verdict",
]


class KeyState(str, enum.Enum):
    """Where a key stands. See docs/design.md for the full table."""

    ACTIVE = "active"
    COOLING = "cooling"
    EXHAUSTED = "exhausted"
    INVALID = "invalid"
    DISABLED = "disabled"


class Outcome(str, enum.Enum):
    """What one upstream answer (or probe) says, classified once by a provider dialect."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    INVALID_KEY = "invalid_key"
    UPSTREAM_FAULT = "upstream_fault"
    NETWORK_ERROR = "network_error"
    CLIENT_ERROR = "client_error"
    CLIENT_GONE = "client_gone"


#: Outcomes that say something about the key itself.
KEY_OUTCOMES = frozenset(
    {Outcome.OK, Outcome.RATE_LIMITED, Outcome.QUOTA_EXHAUSTED, Outcome.INVALID_KEY}
)

#: Outcomes after which the request is tried again on another key.
RETRYABLE_OUTCOMES = frozenset(
    {
        Outcome.RATE_LIMITED,
        Outcome.QUOTA_EXHAUSTED,
        Outcome.INVALID_KEY,
        Outcome.UPSTREAM_FAULT,
        Outcome.NETWORK_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classified upstream answer.

    ``retry_after`` is in seconds (only meaningful for ``rate_limited``); ``status``, ``code``
    and ``message`` are the evidence, with ``message`` already redacted and shortened.
    """

    outcome: Outcome
    status: int = 0
    code: str | None = None
    message: str = ""
    retry_after: float | None = None
    reason: str = ""

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE_OUTCOMES

    @staticmethod
    def ok(status: int = 200) -> Verdict:
        """The verdict of a success (shared: verdicts are immutable, and successes are the hot path)."""
        v = _OK_VERDICTS.get(status)
        if v is None:
            v = _OK_VERDICTS[status] = Verdict(Outcome.OK, status)
        return v

    def describe(self) -> str:
        """A one-line reason for an event: the outcome and its evidence."""
        parts = [self.reason or self.outcome.value]
        if self.status:
            parts.append(f"http {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        return ", ".join(parts)


_OK_VERDICTS: dict[int, Verdict] = {}


@dataclass(frozen=True, slots=True)
class Counters:
    """Per-key traffic counters (pool-wide sums once persisted)."""

    requests: int = 0
    successes: int = 0
    rate_limited: int = 0
    quota_exhausted: int = 0
    invalid_key: int = 0
    upstream_fault: int = 0
    network_error: int = 0
    client_error: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def plus(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[int, ...]:
        """The counts in :data:`COUNTER_FIELDS` order."""
        values: tuple[int, ...] = _counter_values(self)
        return values

    def as_dict(self) -> dict[str, int]:
        return dict(zip(COUNTER_FIELDS, self.values(), strict=True))


COUNTER_FIELDS: tuple[str, ...] = tuple(Counters.__dataclass_fields__)
_counter_values = attrgetter(*COUNTER_FIELDS)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key and what we know about it.

    ``until`` is an absolute time (epoch seconds): the end of a cooldown for ``cooling``, the
    next recheck for ``exhausted`` / ``invalid``; 0 when it does not apply. ``version`` grows by
    one at every transition and guards against late answers and racing writers.
    """

    id: str
    pool: str
    secret: str = field(repr=False)
    state: KeyState = KeyState.ACTIVE
    reason: str = ""
    since: float = 0.0
    until: float = 0.0
    version: int = 1
    weight: float = 1.0
    label: str = ""
    added_at: float = 0.0
    counters: Counters = field(default_factory=Counters)
    balance: float | None = None
    currency: str = ""
    #: where this key is sent instead of its pool's ``base_url`` (an Azure resource endpoint, a
    #: reseller); ``None``: the pool's
    base_url: str | None = None
    #: the key as it may be shown (``sk-…AbCd``), worked out once per record
    masked: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masked", mask(self.secret))

    def eligible(self, now: float) -> bool:
        """May this key take traffic at ``now``?"""
        if self.state is KeyState.ACTIVE:
            return True
        return self.state is KeyState.COOLING and self.until <= now


@dataclass(frozen=True, slots=True)
class Transition:
    """A decided change of one key's state, to be written atomically if ``expected_version`` holds."""

    key_id: str
    pool: str
    expected_version: int
    from_state: KeyState
    to_state: KeyState
    reason: str
    at: float
    until: float = 0.0
    actor: str = "traffic"
    detail: str = ""

    def applied_to(self, record: KeyRecord) -> KeyRecord:
        """The record after this transition (the store does the same, atomically)."""
        from dataclasses import replace

        return replace(
            record,
            state=self.to_state,
            reason=self.reason,
            since=self.at if self.to_state is not record.state else record.since,
            until=self.until,
            version=record.version + 1,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a key's history."""

    key_id: str
    pool: str
    at: float
    actor: str
    from_state: str
    to_state: str
    reason: str
    detail: str = ""
    seq: int = 0
