"""Library mode: key rotation inside the official SDKs, no gateway needed.

    import keyrelay
    from openai import OpenAI

    pool = keyrelay.Pool.open("sqlite:///keys.db", "openai")
    client = OpenAI(api_key="unused", max_retries=0, http_client=keyrelay.httpx_client(pool))

- :class:`Pool` — the keys (``Pool.open(store_url)`` or ``Pool.from_keys([...])``), one
  background loop that owns the store, and rotation by hand (``pool.lease()``).
- :func:`httpx_client` / :func:`async_httpx_client` — ``httpx2`` clients (openai ≥ 3);
  :func:`legacy_httpx_client` / :func:`legacy_async_httpx_client` — ``httpx`` clients
  (openai 1.x / 2.x). Their transport runs the gateway's retry loop for every request.

See ``docs/library.md``.
"""

from __future__ import annotations

from keyrelay.client.factories import async_httpx_client, httpx_client, legacy_async_httpx_client, legacy_httpx_client
from keyrelay.client.lease import KeyLease, verdict_of
from keyrelay.client.pool import Pool
from keyrelay.core.policy import CoolingPolicy, RetryPolicy
from keyrelay.exceptions import NoKeyAvailable

__all__ = [
    "CoolingPolicy",
    "KeyLease",
    "NoKeyAvailable",
    "Pool",
    "RetryPolicy",
    "async_httpx_client",
    "httpx_client",
    "legacy_async_httpx_client",
    "legacy_httpx_client",
    "verdict_of",
]
