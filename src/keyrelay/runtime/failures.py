"""Foreign exceptions, read once: which mean "the network failed" (another key, or a later try,
may do better) and which of those are timeouts. One table for every HTTP library and SDK
keyrelay meets — aiohttp (the gateway), httpx and httpx2 (library mode), the SDKs' own
connection errors (a :class:`~keyrelay.client.lease.KeyLease` may be told of them) — matched by
package and class name anywhere in the exception's MRO, so no library is imported to ask.
"""

from __future__ import annotations

from keyrelay.core.model import Outcome, Verdict

__all__ = ["NETWORK", "TIMEOUT", "failure_kind", "network_verdict"]

NETWORK, TIMEOUT = "network", "timeout"

#: (top-level package, class name) → kind; the first match along the MRO decides
_TABLE: dict[tuple[str, str], str] = {
    # the standard library (asyncio.TimeoutError is TimeoutError since 3.11)
    ("builtins", "TimeoutError"): TIMEOUT,
    ("builtins", "ConnectionError"): NETWORK,
    ("socket", "gaierror"): NETWORK,  # a name that does not resolve
    ("ssl", "SSLError"): NETWORK,
    # aiohttp: connection, payload (an answer broken off) and server-disconnected errors
    ("aiohttp", "ServerTimeoutError"): TIMEOUT,
    ("aiohttp", "ClientError"): NETWORK,
    # httpx / httpx2: every transport error (connect, read, write, protocol, proxy)
    ("httpx", "TimeoutException"): TIMEOUT,
    ("httpx", "TransportError"): NETWORK,
    ("httpx2", "TimeoutException"): TIMEOUT,
    ("httpx2", "TransportError"): NETWORK,
    # the SDKs wrap the above (openai and anthropic: APITimeoutError < APIConnectionError)
    ("openai", "APITimeoutError"): TIMEOUT,
    ("openai", "APIConnectionError"): NETWORK,
    ("anthropic", "APITimeoutError"): TIMEOUT,
    ("anthropic", "APIConnectionError"): NETWORK,
    # keyrelay's own upstream client (issue 16's lean layer) raises OSError subclasses
}
_KNOWN: dict[type, str | None] = {}


def failure_kind(exc: BaseException) -> str | None:
    """:data:`NETWORK`, :data:`TIMEOUT`, or ``None`` when ``exc`` is not a network failure."""
    cls = type(exc)
    kind = _KNOWN.get(cls, "?")
    if kind != "?":
        return kind
    kind = None
    for c in cls.__mro__:
        kind = _TABLE.get((c.__module__.partition(".")[0], c.__name__))
        if kind is not None:
            break
    if len(_KNOWN) < 1024:
        _KNOWN[cls] = kind
    return kind


def network_verdict(exc: BaseException) -> Verdict | None:
    """The verdict of a network failure (counted against the key's attempt), or ``None``."""
    kind = failure_kind(exc)
    if kind is None:
        return None
    return Verdict(Outcome.NETWORK_ERROR, message=type(exc).__name__, reason="network error")
