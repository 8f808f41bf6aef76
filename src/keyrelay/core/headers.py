"""Which upstream answer headers a client may see, and how their values are cleaned: written
once for the gateway (``keyrelay.server.http``) and library mode (``keyrelay.client.flow``).

Credentials echoed back and what only an upstream's own debugging needs (hosts, routes, traces,
the key or account it saw) are dropped; every other value goes through the redactor of the
pools' actual keys (``WWW-Authenticate`` may name the key). The name decision is memoised per
name as sent, so a response's dozen usual headers cost a dict lookup each.

Pure: the caller passes the :class:`~keyrelay.core.redaction.Redactor`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from keyrelay.core.redaction import Redactor

__all__ = ["DEBUG_PREFIXES", "DEBUG_RESPONSE", "clean_raw", "is_debug", "name_test"]

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


def is_debug(lower_name: str) -> bool:
    """Is this (lower-cased) response header name a credential or debugging-only one?"""
    return lower_name in DEBUG_RESPONSE or lower_name.startswith(DEBUG_PREFIXES)


def name_test(drop: Callable[[str], bool]) -> tuple[dict[str, bool], Callable[[str], bool]]:
    """A memoised "keep this name?" (keyed by the name as sent, bounded): the memo, for a fast
    ``get``, and the function that fills it."""
    memo: dict[str, bool] = {}

    def keep(name: str) -> bool:
        if len(memo) >= 4096:
            memo.clear()
        k = memo[name] = not drop(name.lower())
        return k

    return memo, keep


_RAW_MEMO, _raw_keep = name_test(is_debug)


def _value(r: Redactor, v: bytes) -> bytes:
    s = v.decode("latin-1")
    clean = s if s in r.memo else r.value(s)
    return v if clean is s else clean.encode("latin-1", "replace")


def clean_raw(raw: Iterable[tuple[bytes, bytes]], r: Redactor) -> list[tuple[bytes, bytes]] | None:
    """Raw (bytes) header pairs with debugging ones dropped and the rest redacted by ``r``;
    ``None`` when nothing changes (the usual case: the caller keeps its headers as they are)."""
    pairs = list(raw)
    known = _RAW_MEMO.get
    out: list[tuple[bytes, bytes]] | None = None
    for i, (k, v) in enumerate(pairs):
        name = k.decode("latin-1")
        keep = known(name)
        if keep is None:
            keep = _raw_keep(name)
        clean = _value(r, v) if keep and r else v
        if out is None:
            if keep and clean is v:
                continue
            out = pairs[:i]
        if keep:
            out.append((k, clean))
    return out
