"""The answers keyrelay gives itself when the upstream's own would mislead the client, shared by
every driver of the relay flow (``runtime/flow.py``), so the gateway and library mode say the same.

- No eligible key: ``503 no_key_available``; ``Retry-After`` when a cooling key frees up by
  itself, ``x-should-retry: false`` when none will (an SDK's retries cannot help then).
- The correlated-failure guard refused to retire the keys (``core/correlation.py``): the
  upstream rejected most of the pool at once, which is the upstream's or the gateway's trouble,
  not the client's credentials. Passing on the upstream's ``401 invalid_api_key`` would make an
  SDK say "your API key is wrong", so the client gets ``502 upstream_keys_rejected`` with the
  upstream's reason in the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson

from keyrelay.core.headers import VISIBLE, visible_name
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.redaction import MIN_FRAGMENT
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers.base import Dialect
from keyrelay.runtime import redactor
from keyrelay.runtime.pool import KeyPool

__all__ = ["KEYS_REJECTED_STATUS", "answer_headers", "keys_rejected", "local_error", "local_location", "no_key"]

KEYS_REJECTED_STATUS = 502
#: outcomes that blame the key — answered as the upstream's fault while the guard holds them back
_BLAMING = frozenset({Outcome.INVALID_KEY, Outcome.QUOTA_EXHAUSTED})


def local_error(status: int, message: str, type_: str, code: str | None, dialect: Dialect | None = None) -> bytes:
    """An error keyrelay answers itself, in the pool's dialect's envelope (Anthropic's, Google's),
    or OpenAI's (``{"error": {"message", "type", "param", "code"}}``) when there is no pool."""
    if dialect is not None:
        return dialect.local_error(status, message, type_, code)
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def no_key(exc: NoKeyAvailable, dialect: Dialect | None = None) -> tuple[int, bytes, dict[str, str]]:
    """The 503 for a request that found no eligible key: status, body (in ``dialect``'s envelope), headers."""
    headers = {"content-type": "application/json"}
    if exc.retry_after is None:
        headers["x-should-retry"] = "false"  # no key frees up by itself
    else:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return 503, local_error(503, str(exc), "server_error", "no_key_available", dialect), headers


def keys_rejected(pool: KeyPool, verdict: Verdict | None) -> bytes | None:
    """The body of a ``502 upstream_keys_rejected`` when the last attempt's failure blamed its key
    while the pool's correlated-failure guard holds; ``None`` otherwise (an error path only)."""
    if verdict is None or verdict.outcome not in _BLAMING or not pool.guard.tripped(pool.clock()):
        return None
    said = verdict.message or verdict.reason or verdict.outcome.value
    status = f"HTTP {verdict.status}" if verdict.status else "an error"
    message = (
        f"the upstream rejected the keys of pool {pool.name!r} all at once (it answered {status}: {said}); "
        "keyrelay suspects the upstream or the gateway's network, not the keys, and keeps them in rotation. "
        "Your keyrelay token is fine; retry later"
    )
    return local_error(KEYS_REJECTED_STATUS, message, "upstream_error", "upstream_keys_rejected", pool.dialect)


def answer_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """The upstream's answer headers a caller may see, by lower-case name: hop-by-hop,
    debugging-only and credential headers dropped (``core/headers.py``), every value kept
    redacted of the pools' keys (``WWW-Authenticate`` may name the key; a value seen clean
    before costs a dict lookup)."""
    out = {}
    known = VISIBLE.get
    r = redactor.current()
    clean, seen = r.value, r.memo
    for k, v in upstream.items():
        name = known(k)
        if name is None:
            name = visible_name(k)
        if name:
            out[name] = v if len(v) < MIN_FRAGMENT or v in seen else clean(v)
    return out


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return scheme.lower() + "://" + rest.partition("/")[0].partition("?")[0].lower()


def local_location(location: str, url: str) -> str | None:
    """Where an upstream's redirect may send the caller: a path on the same upstream, as a
    relative reference; ``None`` for another host. A caller that followed it there would carry
    credentials to a stranger — in library mode a pool key, since the SDK's follow-up request
    comes back through the transport, which adds one (and a gateway caller, its keyrelay token)."""
    if location.startswith("/") and not location.startswith("//"):
        return location
    if "://" in location and _origin(location) == _origin(url):
        rest = location.partition("://")[2]
        return "/" + rest.partition("/")[2] if "/" in rest else "/"
    return None
