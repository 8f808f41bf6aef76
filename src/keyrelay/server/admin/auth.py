"""Who calls the admin API: an admin token (``Authorization: Bearer``) or a signed session cookie.

The session cookie holds ``<token id>.<expiry>.<signature>``, the signature an HMAC-SHA256 keyed
by the admin token's stored hash: any worker or gateway sharing the store can check it without
shared memory, it expires, and revoking the token ends its sessions. The CSRF value is another
HMAC of the cookie under the same key, so it needs no storage either; every non-GET request made
with the cookie must send it in ``X-CSRF-Token``. Signing out clears the cookie in the browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from aiohttp import web

from keyrelay.runtime.process import Runtime
from keyrelay.server.admin.routing import ApiError
from keyrelay.server.auth import Tokens
from keyrelay.stores import TokenRecord, hash_token

__all__ = ["COOKIE", "SESSION_SECONDS", "Auth"]

COOKIE = "keyrelay_admin"
SESSION_SECONDS = 12 * 3600
_CACHE_SECONDS = 2.0  # how long a token lookup is trusted (a revocation takes effect after this)


def _mac(key: str, msg: str) -> str:
    digest = hmac.new(key.encode(), msg.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Auth:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tokens = Tokens(runtime.store, runtime.settings.tokens)  # client tokens: told apart (403)
        runtime.on_sync.append(self.tokens.expire)
        self._by_hash: dict[str, tuple[TokenRecord | None, float]] = {}
        self._by_id: tuple[dict[str, TokenRecord], float] = ({}, 0.0)

    # -- lookups (briefly cached) --------------------------------------------------------------
    async def _token(self, token_hash: str) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._by_hash.get(token_hash)
        if hit is not None and hit[1] > now:
            return hit[0]
        rec = await self.runtime.store.find_token(token_hash)
        if len(self._by_hash) > 1000:
            self._by_hash.clear()
        self._by_hash[token_hash] = (rec, now + _CACHE_SECONDS)
        return rec

    async def _token_by_id(self, token_id: str) -> TokenRecord | None:
        live, until = self._by_id
        if until <= time.monotonic():
            live = {t.id: t for t in await self.runtime.store.list_tokens() if not t.revoked and t.admin}
            self._by_id = (live, time.monotonic() + _CACHE_SECONDS)
        return live.get(token_id)

    def forget(self) -> None:
        """Drop cached lookups (after a token was created or revoked here)."""
        self._by_hash.clear()
        self._by_id = ({}, 0.0)

    # -- sign-in -------------------------------------------------------------------------------
    async def admin_of(self, token: str) -> TokenRecord:
        """The admin token ``token`` is, or an :class:`ApiError` (401 unknown, 403 a client token)."""
        h = hash_token(token)
        rec = await self._token(h)
        if rec is not None and rec.admin and hmac.compare_digest(rec.token_hash, h):
            return rec
        if (rec is not None and not rec.admin) or await self.tokens.authenticate(token) is not None:
            raise ApiError(403, "admin_only", "this is a client token; the admin API needs an admin token "
                           "('keyrelay tokens create NAME --admin')")
        raise ApiError(401, "admin_auth_required", "unknown or revoked admin token")

    def session_for(self, rec: TokenRecord, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        body = f"{rec.id}.{expires}"
        return f"{body}.{_mac(rec.token_hash, 'session.' + body)}"

    @staticmethod
    def csrf_for(rec: TokenRecord, session: str) -> str:
        return _mac(rec.token_hash, "csrf." + session)[:32]

    async def check_session(self, value: str) -> TokenRecord | None:
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= time.time():
            return None
        rec = await self._token_by_id(parts[0])
        if rec is None or not hmac.compare_digest(_mac(rec.token_hash, f"session.{parts[0]}.{parts[1]}"), parts[2]):
            return None
        return rec

    # -- every request -------------------------------------------------------------------------
    async def caller(self, request: web.BaseRequest, write: bool) -> tuple[TokenRecord, str]:
        """The admin behind ``request`` and the CSRF value of its session ("" with a bearer token)."""
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return await self.admin_of(auth[7:].strip()), ""
        cookie = request.cookies.get(COOKIE)
        if cookie:
            rec = await self.check_session(cookie)
            if rec is not None:
                csrf = self.csrf_for(rec, cookie)
                if write and not hmac.compare_digest(request.headers.get("X-CSRF-Token", ""), csrf):
                    raise ApiError(403, "csrf_failed", "missing or wrong X-CSRF-Token header (sign in again for a new one)")
                return rec, csrf
        raise ApiError(401, "admin_auth_required", "sign in: send 'Authorization: Bearer <admin token>' or the session cookie")


def cookie_header(value: str, request: web.BaseRequest, max_age: int = SESSION_SECONDS) -> str:
    """The Set-Cookie value: HttpOnly, SameSite=Strict, Path=/admin; Secure behind HTTPS."""
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    return (
        f"{COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    )
