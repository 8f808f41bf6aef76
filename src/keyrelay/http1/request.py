"""A request on a lean server connection: its head as parsed, its body as it arrives.

A body that came with its head (small JSON: the usual case) is whole before the handler runs;
:meth:`Request.read` then returns it at once. One still arriving is read under the server's
bounds: ``Expect: 100-continue`` is answered by the first :meth:`~Request.read` (i.e. only when
the handler accepts the request, after its token), at most ``body_timeout`` seconds without a
byte and, after that long, ``body_min_rate`` bytes a second on average (else
:class:`~keyrelay.http1.errors.BodyTooSlow`), and the bytes of all bodies still arriving under
one budget (a declared length is reserved up front, a chunked body as it grows; else
:class:`~keyrelay.http1.errors.Busy`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from keyrelay.http1.errors import BodyError, BodyTooLarge, BodyTooSlow, Busy, MalformedBody
from keyrelay.http1.headers import Headers, RawHeaders
from keyrelay.http1.limits import BodyBudget, Limits


class _Server(Protocol):
    @property
    def limits(self) -> Limits: ...
    @property
    def budget(self) -> BodyBudget: ...


class _Connection(Protocol):
    """What a request needs of its connection (``connection.Connection``)."""

    @property
    def server(self) -> _Server: ...
    def write(self, data: bytes) -> None: ...
    def reading(self, on: bool) -> None: ...

__all__ = ["Request"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request:
    """``method`` (str), ``target`` (the raw request target), ``path`` and ``query`` (raw, not
    percent-decoded), ``headers`` (case-insensitive), ``remote`` (the client's address),
    ``version`` (the minor of HTTP/1.x), ``keep_alive``, ``body`` (the bytes that came so far)."""

    __slots__ = (
        "_body", "_chunks", "_conn", "_headers", "_waiter", "aborted", "complete", "content_length", "continued",
        "error", "expect_continue", "keep_alive", "method", "on_abort", "raw_headers", "remote", "reserved", "routed", "size", "target",
        "version",
    )

    def __init__(self, conn: _Connection, remote: str) -> None:
        self._conn = conn
        self.remote = remote
        self.method = ""
        self.target = b""
        self.raw_headers: RawHeaders = []
        self._headers: Headers | None = None
        self.version = 1
        self.keep_alive = True
        self.expect_continue = False
        self.continued = False
        self.content_length = -1
        self._chunks: list[bytes] = []
        self._body: bytes | None = None
        self.size = 0
        self.reserved = 0
        self.complete = False
        self.error: BodyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: called if the client goes away before the answer ends (for handlers answering from callbacks)
        self.on_abort: Callable[[], None] | None = None
        self.aborted = False  #: the client went away before its answer ended
        #: what the server's ``route`` said of it (kept for the handler; ``None`` when not asked)
        self.routed: Any = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def query(self) -> str:
        return self.target.partition(b"?")[2].decode("latin-1")

    @property
    def body(self) -> bytes:
        if self._body is None or len(self._chunks) > 1:
            self._body = b"".join(self._chunks)
            self._chunks = [self._body]
        return self._body

    @property
    def waiting(self) -> bool:
        """Is a handler waiting in :meth:`read`?"""
        return self._waiter is not None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target[:80]!r}>"

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, at most ``limit`` bytes (else :class:`BodyTooLarge`); raises a
        :class:`~keyrelay.http1.errors.BodyError` for a body refused."""
        if self.error is not None:
            raise self.error
        if limit is not None and (self.content_length > limit or self.size > limit):
            raise BodyTooLarge(f"request body larger than the limit of {limit} bytes")
        if self.complete:
            return self.body
        conn = self._conn
        limits = conn.server.limits
        budget = conn.server.budget
        if self.content_length >= 0:
            if self.content_length > budget.cap:
                raise BodyTooLarge("request body larger than the memory for bodies in flight")
            if not budget.take(self.content_length):
                raise Busy("too many request bodies in flight; retry shortly")
            self.reserved = self.content_length
        if self.expect_continue and not self.continued:
            self.continued = True
            conn.write(_CONTINUE)
        conn.reading(True)
        loop = asyncio.get_running_loop()
        start = loop.time()
        idle, rate = limits.body_timeout, limits.body_min_rate
        until = start + idle + (self.content_length / rate if self.content_length >= 0 and rate > 0 else 0.0)
        try:
            while not self.complete:
                if self.error is not None:
                    raise self.error
                now = loop.time()
                wait = min(idle, until - now) if self.content_length >= 0 else idle
                if wait <= 0:
                    raise BodyTooSlow("request body too slow")
                waiter = self._waiter = loop.create_future()
                try:
                    async with asyncio.timeout(wait):
                        await waiter
                except TimeoutError:
                    raise BodyTooSlow("request body stalled") from None
                finally:
                    self._waiter = None
                if limit is not None and self.size > limit:
                    raise BodyTooLarge(f"request body larger than the limit of {limit} bytes")
                if self.content_length < 0:
                    if self.size > self.reserved:
                        if self.size > budget.cap:
                            raise BodyTooLarge("request body larger than the memory for bodies in flight")
                        if not budget.take(self.size - self.reserved):
                            raise Busy("too many request bodies in flight; retry shortly")
                        self.reserved = self.size
                    elapsed = loop.time() - start
                    if rate > 0 and elapsed > idle and self.size < (elapsed - idle) * rate:
                        raise BodyTooSlow("request body slower than the minimum rate")
        except BodyError as exc:
            self.error = exc
            raise
        finally:
            conn.reading(False)
        if self.error is not None:
            raise self.error
        return self.body

    # -- the connection's side --

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)
        if self._waiter is not None:
            self._wake()

    def done(self) -> None:
        self.complete = True
        if self._waiter is not None:
            self._wake()

    def fail(self, exc: BodyError) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        self._wake()

    def cut(self) -> None:
        """The client went away before the body was whole."""
        self.fail(MalformedBody("the client closed the connection before the body was whole"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
