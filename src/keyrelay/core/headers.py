"""Which upstream answer headers a caller may see: written once, for every driver of the relay
flow (``runtime/flow.py`` redacts the values it keeps).

Dropped: hop-by-hop headers and those a driver computes again (length, encoding: the body the
caller gets is the one keyrelay read), cookies, and what only an upstream's own debugging needs
or a credential echoed back (hosts, routes, traces, the key or account it saw). The decision is
memoised per name as sent, so a response's dozen usual headers cost a dict lookup each.

Pure.
"""

from __future__ import annotations

__all__ = ["DEBUG_PREFIXES", "DEBUG_RESPONSE", "HOP_BY_HOP", "is_debug", "visible_name"]

#: credentials echoed back, and what only an upstream's own debugging needs
DEBUG_RESPONSE = frozenset(
    {
        "authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "proxy-authorization",
        "via",
        "x-powered-by",
        "x-real-ip",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "x-envoy-upstream-service-time",
        "x-served-by",
    }
)
#: name prefixes of debugging-only response headers
DEBUG_PREFIXES = ("x-debug", "x-envoy-", "x-upstream", "x-backend", "x-forwarded-", "x-amz-", "x-cache", "x-key")
#: hop-by-hop, recomputed by the driver, or no business of the caller's
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "set-cookie",
        "server", "date", "proxy-authenticate", "upgrade", "alt-svc",
    }
)


def is_debug(lower_name: str) -> bool:
    """Is this (lower-cased) response header name a credential or debugging-only one?"""
    return lower_name in DEBUG_RESPONSE or lower_name.startswith(DEBUG_PREFIXES)


#: a name as sent → its lower-case form when a caller may see it, "" when not (bounded)
VISIBLE: dict[str, str] = {}


def visible_name(name: str) -> str:
    """``name`` lower-cased when a caller may see the header, ``""`` when not (memoised: look
    in :data:`VISIBLE` first)."""
    if len(VISIBLE) >= 4096:
        VISIBLE.clear()
    lk = name.lower()
    out = VISIBLE[name] = "" if lk in HOP_BY_HOP or is_debug(lk) else lk
    return out
