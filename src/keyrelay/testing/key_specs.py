"""How a fake upstream key behaves and what the fake records: the vocabulary tests use to set
up :class:`keyrelay.testing.fake_upstream.FakeUpstream` and to check what reached it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Behavior", "Call", "KeySpec", "go_duration"]


class Behavior(str, enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    QUOTA = "quota"
    CREDIT_EXHAUSTED = "credit_exhausted"
    RATE_LIMITED = "rate_limited"
    #: Gemini's OpenAI-compatible endpoint: 429 RESOURCE_EXHAUSTED, per-minute quota, RetryInfo
    GEMINI_RATE_LIMITED = "gemini_rate_limited"
    SERVER_ERROR = "server_error"
    FLAKY = "flaky"
    SLOW = "slow"
    HANG = "hang"
    STREAM_ERROR = "stream_error"
    STREAM_CUT = "stream_cut"
    REGION_BLOCKED = "region_blocked"
    #: the provider is overloaded (OpenAI 503, Anthropic 529, Gemini 503 UNAVAILABLE, Azure's
    #: "experiencing high demand" 429): not the key's fault
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class KeySpec:
    behavior: Behavior = Behavior.OK
    #: RATE_LIMITED: the wait sent as ``retry-after``, ``retry-after-ms``, ``x-ratelimit-reset-requests``
    #: (GEMINI_RATE_LIMITED: as ``RetryInfo.retryDelay``, default 26 s)
    retry_after: float | None = None
    #: RATE_LIMITED, GEMINI_RATE_LIMITED: answer 429 only for this many seconds after the first 429, then OK
    rate_limit_for: float | None = None
    #: FLAKY: probability of a 500/502/503
    flaky_rate: float = 0.5
    #: SLOW: seconds before answering
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Call:
    """One request received. ``key`` is the bearer value; ``body`` the raw JSON body (multipart: empty)."""

    key: str | None
    method: str
    path: str
    headers: dict[str, str]
    at: float
    stream: bool = False
    body: bytes = b""


def go_duration(seconds: float) -> str:
    """Seconds as Go's ``time.Duration.String()`` writes them: ``12ms``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    secs = f"{s:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{secs}"
    return f"{int(m)}m{secs}" if m else secs
