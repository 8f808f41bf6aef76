"""Parsing of retry hints: ``retry-after``, ``retry-after-ms``, ``x-ratelimit-reset-*``.

Durations come as seconds (``"20"``, ``"1.5"``), Go-style durations (``"6m0s"``, ``"1.2s"``,
``"20ms"``, ``"2m59.56s"``, ``"1h"``) or HTTP dates. All functions are pure: ``now`` is passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["parse_duration", "retry_after_from_headers"]

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_GO_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|us|µs|ns|m|s))+")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str, now: float | None = None) -> float | None:
    """Seconds from a duration string, or ``None`` when it cannot be read.

    An HTTP date is turned into seconds from ``now`` (never negative) when ``now`` is given.
    """
    v = value.strip()
    if not v:
        return None
    try:
        secs = float(v)
    except ValueError:
        pass
    else:
        return secs if secs >= 0 and math.isfinite(secs) else None
    if _GO_FULL.fullmatch(v):
        return sum(float(n) * _UNITS[u] for n, u in _GO_PART.findall(v))
    if now is not None:
        try:
            dt = parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError):
            return None
        if dt is None:
            return None
        if dt.tzinfo is None:  # "-0000": UTC with no word on the local zone (RFC 5322 §3.3)
            dt = dt.replace(tzinfo=UTC)
        return max(0.0, dt.timestamp() - now)
    return None


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """The wait an upstream asked for, in seconds, from the usual headers; ``None`` if none says.

    Order: ``retry-after-ms``, ``retry-after``, then the longer of
    ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (OpenAI, Groq).
    ``headers`` must answer lower-case names.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        d = parse_duration(ms)
        if d is not None:
            return d / 1000.0
    ra = headers.get("retry-after")
    if ra is not None:
        d = parse_duration(ra, now)
        if d is not None:
            return d
    resets = [
        parse_duration(headers[h])
        for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if h in headers
    ]
    found = [r for r in resets if r is not None]
    return max(found) if found else None
