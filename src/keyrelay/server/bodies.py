"""Request bodies still on their way: ``Expect: 100-continue``, read timeouts, and one cap on
the memory that such bodies hold, all requests together.

A body that arrived with its head (the usual case: small JSON) is read at once and never comes
here. One that is still arriving is read by :func:`read_body`:

- ``Expect: 100-continue`` is answered here, i.e. only after the token was accepted (a request
  with a bad token got its 401 without sending its body; one declaring a body over the limit
  gets 413 at once);
- the body must keep coming: ``body_timeout`` seconds at most without a byte, and once that
  much time has passed, at least ``body_min_rate`` bytes a second on average (a client
  trickling a large body at a byte a second is cut off with 408);
- the bytes held by such bodies, all requests together, stay under ``max_body_memory``: a body
  that would go beyond it gets 503 (retry shortly), one larger than the whole cap 413. A
  declared length is reserved before reading; a chunked body reserves as it grows. The
  reservation is given back when the request ends (:meth:`BodyBudget.give`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from keyrelay.exceptions import BodyTooLarge, BodyTooSlow, Busy, Closing, MalformedBody
from keyrelay.providers.base import Dialect
from keyrelay.server.http import error_response

__all__ = ["REFUSALS", "BodyBudget", "BodyTooLarge", "BodyTooSlow", "Busy", "Closing", "MalformedBody", "read_body", "refusal"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyBudget:
    """Bytes held by request bodies in flight, under one cap (one event loop: no lock)."""

    __slots__ = ("cap", "held")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.cap:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


async def read_body(
    request: web.BaseRequest, limit: int, budget: BodyBudget, idle: float, min_rate: float
) -> tuple[bytes, int]:
    """The whole body and the bytes reserved for it in ``budget`` (the caller gives them back
    when the request ends). Raises :class:`BodyTooLarge`, :class:`BodyTooSlow`, :class:`Busy`
    or :class:`MalformedBody`; reserves nothing then."""
    length = request.content_length
    if length is not None and (length > limit or length > budget.cap):
        raise BodyTooLarge
    reserved = 0
    if length is not None:
        if not budget.take(length):
            raise Busy
        reserved = length
    try:
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(_CONTINUE)
        return await _read(request, limit, budget, idle, min_rate, length, reserved), reserved
    except _Grew as grew:
        reserved = grew.reserved
        budget.give(reserved)
        raise grew.cause from None
    except BaseException:
        budget.give(reserved)
        raise


class _Grew(Exception):
    """A chunked body's reservation grew before it failed."""

    def __init__(self, reserved: int, cause: Exception) -> None:
        self.reserved = reserved
        self.cause = cause


async def _read(
    request: web.BaseRequest, limit: int, budget: BodyBudget, idle: float, min_rate: float,
    length: int | None, reserved: int,
) -> bytes:
    content = request.content
    loop = asyncio.get_running_loop()
    start = loop.time()
    # a declared length must be whole by then; an undeclared one is checked as it comes
    until = start + idle + (length / min_rate if length is not None and min_rate > 0 else 0.0)
    chunks: list[bytes] = []
    got = 0
    try:
        while True:
            now = loop.time()
            wait = min(idle, until - now) if length is not None else idle
            if wait <= 0:
                raise BodyTooSlow
            try:
                async with asyncio.timeout(wait):
                    chunk = await content.readany()
            except TimeoutError:
                raise BodyTooSlow from None
            if not chunk:
                break
            got += len(chunk)
            if got > limit:
                raise BodyTooLarge
            if length is None:
                if got > reserved:
                    if got > budget.cap:
                        raise BodyTooLarge
                    if not budget.take(got - reserved):
                        raise Busy
                    reserved = got
                elapsed = loop.time() - start
                if min_rate > 0 and elapsed > idle and got < (elapsed - idle) * min_rate:
                    raise BodyTooSlow
            chunks.append(chunk)
    except (BodyTooLarge, BodyTooSlow, Busy, Closing) as exc:
        raise _Grew(reserved, exc) from None
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - aiohttp's payload errors (bad chunked framing, cut body): the client's fault
        raise _Grew(reserved, MalformedBody(type(exc).__name__)) from None
    if length is not None and got != length:
        raise _Grew(reserved, MalformedBody("body shorter than its Content-Length"))
    return b"".join(chunks)


REFUSALS = (BodyTooLarge, BodyTooSlow, Busy, Closing, MalformedBody)


def refusal(exc: Exception, limit: int, dialect: Dialect | None = None) -> tuple[web.Response, str]:
    """The answer to a body refused (bodies.py), in the pool's dialect's shape, and its access-log outcome."""
    if isinstance(exc, BodyTooLarge):
        msg = f"request body larger than the limit of {limit} bytes"
        return error_response(413, msg, code="request_too_large", dialect=dialect), "too_large"
    if isinstance(exc, Closing):
        msg = "the gateway is shutting down; retry"
        return error_response(503, msg, "server_error", "shutting_down", dialect=dialect), "shutting_down"
    if isinstance(exc, Busy):
        msg = "too many request bodies in flight; retry shortly"
        return error_response(503, msg, "server_error", "server_busy", retry_after=1.0, dialect=dialect), "busy"
    if isinstance(exc, BodyTooSlow):
        resp = error_response(408, "request body too slow or stalled", code="request_timeout", dialect=dialect)
        return resp, "body_timeout"
    return error_response(400, f"malformed request body ({exc})", code="malformed_body", dialect=dialect), "bad_body"
