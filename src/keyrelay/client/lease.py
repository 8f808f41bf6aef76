"""Rotation by hand: one key lent to your own code, and the report of how it went.

    with pool.lease() as lease:                       # NoKeyAvailable when no key is eligible
        client = OpenAI(api_key=lease.key, max_retries=0)
        client.chat.completions.create(...)           # an exception is classified and re-raised

``report()`` takes whatever you have at hand: an :class:`~keyrelay.Outcome`, a
:class:`~keyrelay.Verdict`, an ``httpx`` / ``httpx2`` (or ``requests``) response, or the
exception your SDK raised (``openai.APIStatusError`` carries the response;
``openai.APIConnectionError`` and transport errors count as a network error). An exception that
says nothing about the key (a bug in your code, ``KeyboardInterrupt``) releases the key at no cost.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from keyrelay.core.masking import mask
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.providers import Dialect, Usage
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.failures import network_verdict
from keyrelay.runtime.pool import KeyPool

__all__ = ["KeyLease", "Lender", "verdict_of"]


class Lender(Protocol):
    """What a lease needs of its pool (``client/pool.py``'s :class:`~keyrelay.Pool`)."""

    @property
    def dialect(self) -> Dialect: ...
    @property
    def keypool(self) -> KeyPool: ...
    async def asettle(self) -> None: ...


def _is_response(obj: object) -> bool:
    return isinstance(getattr(obj, "status_code", None), int) and hasattr(obj, "headers")


def _body_of(response: Any) -> bytes:
    try:
        body = response.content
    except Exception:  # noqa: BLE001 — a streamed response not read yet (ResponseNotRead): judge by status
        return b""
    return body if isinstance(body, bytes) else b""


def verdict_of(result: object, dialect: Dialect, now: float) -> Verdict | None:
    """Classify what a caller reports; ``None`` when it says nothing about the key."""
    if isinstance(result, Verdict):
        return result
    if isinstance(result, Outcome):
        return Verdict(result)
    if isinstance(result, BaseException):
        response = getattr(result, "response", None)
        if response is not None and _is_response(response):
            return verdict_of(response, dialect, now)
        network = network_verdict(result)  # runtime/failures.py: one table for every library and SDK
        if network is not None:
            return network
        body = getattr(result, "body", None)  # openai.APIError raised for an error event inside a stream
        if isinstance(body, dict) and body:
            return dialect.classify_event(orjson.dumps(body if "error" in body else {"error": body}))
        return None
    if _is_response(result):
        r: Any = result
        return dialect.classify(r.status_code, r.headers, _body_of(r), now)
    raise TypeError(f"cannot report {type(result).__name__!r}: give an Outcome, a Verdict, a response or an exception")


class KeyLease:
    """One key lent by :meth:`Pool.acquire`. ``key`` is the secret, for building your own client;
    show ``masked`` or ``key_id`` instead wherever it could be seen. Report exactly once."""

    __slots__ = ("_attempts", "_lease", "_pool", "_verdict", "key", "key_id", "masked")

    def __init__(self, pool: Lender, attempts: Attempts, lease: Lease) -> None:
        self._pool = pool
        self._attempts = attempts
        self._lease = lease
        self._verdict: Verdict | None = None
        self.key = lease.secret
        self.key_id = lease.key_id
        self.masked = mask(lease.secret)

    def __repr__(self) -> str:
        state = "open" if self.open else "reported"
        return f"KeyLease(key_id={self.key_id!r}, key={self.masked!r}, {state})"

    @property
    def open(self) -> bool:
        """Not reported (nor released) yet."""
        return self._attempts.lease is self._lease

    @property
    def verdict(self) -> Verdict | None:
        """What was reported, once it was."""
        return self._verdict

    def report(self, result: object = Outcome.OK, usage: Usage | None = None) -> Verdict | None:
        """Record how the call went (default: ok) and give the key back. A state change is
        handed to the pool's background loop, not awaited. Returns the verdict (``None`` when
        ``result`` said nothing about the key and it was only released)."""
        if not self.open:
            raise RuntimeError(f"{self!r} was already reported")
        verdict = verdict_of(result, self._pool.dialect, self._pool.keypool.clock())
        if verdict is None:
            self._attempts.abandon(self._lease)
            return None
        self._verdict = verdict
        self._attempts.record(self._lease, verdict, usage)
        return verdict

    async def areport(self, result: object = Outcome.OK, usage: Usage | None = None) -> Verdict | None:
        """:meth:`report`, waiting until a state change is written to the store."""
        verdict = self.report(result, usage)
        await self._pool.asettle()
        return verdict

    def release(self) -> None:
        """Give the key back without saying anything about it."""
        if self.open:
            self._attempts.abandon(self._lease)
