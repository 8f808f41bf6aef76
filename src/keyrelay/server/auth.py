"""Who is calling: the gateway's client tokens.

A client presents a keyrelay token the way its SDK presents an API key (the dialect reads it:
``Authorization: Bearer``, ``x-api-key``, ``api-key``, ``x-goog-api-key``, Gemini's ``?key=``;
see ``providers/``). :class:`Tokens` says which :class:`Caller` it belongs to: tokens from the
settings file, and tokens in the store (``keyrelay tokens create``), compared by keyed hash and
remembered briefly so a busy client costs a dict lookup, not a hash and a store query. Admin
tokens are not client tokens (``server/admin/auth.py`` checks those).

The clock is injected (monotonic by default); what the store said is forgotten at every store
sync (:meth:`Tokens.expire`, hooked to the runtime's sync), so a revoked token stops working
within one sync interval.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Mapping

from keyrelay.config import TokenSettings
from keyrelay.exceptions import StoreUnavailable
from keyrelay.stores import Store, TokenRecord, hash_token

__all__ = ["Caller", "Tokens", "bearer_token"]

#: how long an answer about a token is trusted (seconds): a token found, one not found, a config token
_FOUND_FOR, _MISSING_FOR, _CONFIG_FOR = 30.0, 1.0, 3600.0
_MEMORY = 10_000  # tokens remembered at most, per kind


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer …`` header (else ``x-api-key``'s), or ``""``:
    what the gateway's own routes (``/readyz``, ``/metrics``) accept."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key", "")


class Caller:
    """Who presented a keyrelay token: its name and the pools it may use."""

    __slots__ = ("name", "pools")

    def __init__(self, name: str, pools: tuple[str, ...]) -> None:
        self.name = name
        self.pools = pools

    def may_use(self, pool: str) -> bool:
        return "*" in self.pools or pool in self.pools


class Tokens:
    """The client tokens of a gateway: the settings file's and the store's."""

    def __init__(self, store: Store, configured: Iterable[TokenSettings], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._configured = {t.token_hash: Caller(t.name, t.pools) for t in configured}
        #: the store's answers by token hash: (caller or None, trusted until)
        self._answers: dict[str, tuple[Caller | None, float]] = {}
        #: tokens accepted lately, by their raw value: spares the hash on the hot path. Held in
        #: memory only (as the request that brought the token was), emptied at every sync.
        self._recent: dict[str, tuple[Caller, float]] = {}

    def expire(self) -> None:
        """Ask the store again about every token (called at each store sync)."""
        self._answers = {h: (c, 0.0) for h, (c, _) in self._answers.items()}
        self._recent.clear()

    def recognise(self, token: str) -> Caller | None:
        """The caller of a token accepted lately, without hashing or asking the store; ``None``
        when it was not (then :meth:`authenticate` decides)."""
        hit = self._recent.get(token)
        if hit is not None and hit[1] > self.clock():
            return hit[0]
        return None

    def known(self, token: str) -> Caller | None:
        """The caller of ``token`` if it is held in memory (a settings token, or one the store
        confirmed lately), without asking the store; ``None`` otherwise."""
        if not token:
            return None
        h = hash_token(token)
        caller = self._configured.get(h)
        if caller is None:
            hit = self._answers.get(h)
            caller = hit[0] if hit is not None else None
        return caller

    async def authenticate(self, token: str) -> Caller | None:
        """The caller a token belongs to, or ``None``. Tokens are compared by hash."""
        if not token:
            return None
        h = hash_token(token)
        now = self.clock()
        caller = self._configured.get(h)
        if caller is not None:
            self._remember(token, caller, now + _CONFIG_FOR)
            return caller
        hit = self._answers.get(h)
        if hit is not None and hit[1] > now:
            if hit[0] is not None:
                self._remember(token, hit[0], hit[1])
            return hit[0]
        try:
            rec: TokenRecord | None = await self.store.find_token(h)
        except StoreUnavailable:
            if hit is None:
                raise
            return hit[0]  # the store is down: its last answer (expire() only dates it)
        found = None
        if rec is not None and not rec.admin and hmac.compare_digest(rec.token_hash, h):  # admin: not a client
            found = Caller(rec.name, rec.pools)
        if len(self._answers) > _MEMORY:
            self._answers.clear()
        self._answers[h] = (found, now + (_FOUND_FOR if found else _MISSING_FOR))
        if found is not None:
            self._remember(token, found, now + _FOUND_FOR)
        return found

    def _remember(self, token: str, caller: Caller, until: float) -> None:
        if len(self._recent) >= _MEMORY:
            self._recent.clear()
        self._recent[token] = (caller, until)
