"""``/healthz`` and ``/readyz``.

``/healthz`` tells anyone only that the process serves (``{"status": "ok"}``): no pool names,
no counts. ``/readyz`` tells how many keys each pool can use now, to a caller with an admin
token (every pool) or a client token (the pools that token may use), or to anyone when
``[server] readyz_public = true``; it answers 503 when a pool has no usable key. Neither
touches the upstream. Unknown tokens count towards the address's guessing throttle.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import Runtime
from keyrelay.server.auth import Caller, Tokens, bearer_token
from keyrelay.server.http import error_response
from keyrelay.server.throttle import AuthThrottle
from keyrelay.stores import hash_token


class Gate(Protocol):
    """What ``/readyz`` asks of the gateway's proxy (``server/proxy.py``): its pools, its client
    tokens and its guessing throttle."""

    runtime: Runtime
    tokens: Tokens
    throttle: AuthThrottle

    async def authenticate(
        self, request: web.BaseRequest, pool: str, token: str, started: float
    ) -> Caller | None | web.Response: ...

__all__ = ["healthz", "readyz"]

_OK = b'{"status":"ok"}'


def _method(request: web.BaseRequest, path: str) -> web.Response | None:
    if request.method in ("GET", "HEAD"):
        return None
    return error_response(405, f"use GET {path}", code="method_not_allowed", headers={"Allow": "GET, HEAD"})


def healthz(request: web.BaseRequest) -> web.Response:
    """Alive: answers without a token, and says nothing else."""
    return _method(request, "/healthz") or web.Response(body=_OK, content_type="application/json")


async def readyz(proxy: Gate, request: web.BaseRequest, started: float) -> web.Response:
    """Pools and their usable keys, for a client token (or anyone, if configured)."""
    refused = _method(request, "/readyz")
    if refused is not None:
        return refused
    runtime = proxy.runtime
    pools = list(runtime.pools)
    if not runtime.settings.server.readyz_public:
        token = bearer_token(request.headers)
        client = proxy.tokens.recognise(token)
        if client is None and await _is_admin(proxy, request, token):
            client = _ALL
        if client is None:
            found = await proxy.authenticate(request, "-", token, started)
            if isinstance(found, web.Response):
                return found
            client = found
        if client is None:
            return error_response(401, "/readyz needs a keyrelay token (or [server] readyz_public = true)",
                                  code="invalid_api_key")
        pools = [name for name in pools if client.may_use(name)]
    eligible = {name: runtime.pools[name].eligible_count() for name in pools}
    ready = all(eligible.values())
    return web.json_response({"status": "ok" if ready else "no_usable_key", "eligible_keys": eligible},
                             status=200 if ready else 503)


_ALL = Caller("admin", ("*",))  # what an admin token may see: every pool


async def _is_admin(proxy: Gate, request: web.BaseRequest, token: str) -> bool:
    """Is ``token`` an admin token (``keyrelay tokens create --admin``)? Not asked of the store
    for a throttled address, nor for bytes no token has."""
    if not token or not (token.isascii() and token.isprintable()):
        return False
    if proxy.throttle.blocked(request.remote or "-") is not None:
        return False
    try:
        rec = await proxy.runtime.store.find_token(hash_token(token))
    except StoreUnavailable:
        return False
    return rec is not None and not rec.revoked and bool(getattr(rec, "admin", False))
