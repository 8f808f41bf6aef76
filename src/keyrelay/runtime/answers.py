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

import orjson

from keyrelay.core.model import Outcome, Verdict
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers.base import Dialect
from keyrelay.runtime.pool import KeyPool

__all__ = ["KEYS_REJECTED_STATUS", "keys_rejected", "local_error", "no_key"]

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
