"""An upstream answer as it arrives: its head, then its body, read whole or chunk by chunk."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from keyrelay.http1.errors import ReadTimeout, UpstreamClosed, UpstreamProtocolError
from keyrelay.http1.headers import Headers, RawHeaders


class _Client(Protocol):
    def release(self, conn: Any, keep: bool) -> None: ...


class _Conn(Protocol):
    """What an answer needs of its connection (``upstream._Conn``)."""

    resp: UpstreamResponse | None

    @property
    def client(self) -> _Client: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...

__all__ = ["Sink", "UpstreamResponse"]

_COMPRESSED = frozenset((b"gzip", b"x-gzip", b"deflate"))
_GZIP_OR_ZLIB = 47  # zlib's wbits: a gzip or a zlib header, told apart by the decoder

#: body bytes held unread before the upstream connection stops being read (the caller is slow)
HIGH_WATER = 262144


class Sink(Protocol):
    """Where the callback form delivers an answer (in the connection's callbacks: no raising)."""

    def on_head(self, resp: UpstreamResponse) -> None: ...
    def on_data(self, resp: UpstreamResponse, data: bytes) -> None: ...
    def on_end(self, resp: UpstreamResponse) -> None: ...
    def on_error(self, resp: UpstreamResponse | None, exc: BaseException) -> None: ...


class UpstreamResponse:
    """``status``, ``reason``, ``headers`` (case-insensitive, decoded when first looked at),
    ``await read()`` (the whole body), ``await next_chunk()`` (what arrived since; ``b""`` at the
    end), and :meth:`release` (the connection back to the pool if the body came whole and the
    upstream keeps it alive, else closed). ``async with`` releases on exit."""

    __slots__ = (
        "_chunks", "_conn", "_decoder", "_error", "_headers", "_keep", "_last", "_live", "_loop", "_paused", "_timeout",
        "_waiter", "after_read", "buffered", "done", "head_done", "interim", "no_body", "raw_headers", "reason_bytes",
        "received", "retry", "sink", "status",
    )

    def __init__(self, conn: _Conn, no_body: bool, timeout: float, loop: asyncio.AbstractEventLoop,
                 live: set[UpstreamResponse]) -> None:
        self._conn: _Conn | None = conn
        self._loop = loop
        self.no_body = no_body
        self.status = 0
        self.reason_bytes = b""
        self.raw_headers: RawHeaders = []
        self._headers: Headers | None = None
        self._chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0
        self.head_done = False
        self.done = False
        self.interim = False
        self._keep = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._timeout = timeout
        self._last = loop.time()
        self._live = live  #: the answers awaited, which the client's ticker checks for read timeouts
        live.add(self)
        #: the callback form (``UpstreamClient.send``): events go to it instead of being buffered
        self.sink: Sink | None = None
        #: a gzip/deflate body is decoded as it comes (we ask for ``identity``; some answer
        #: compressed anyway), so the caller reads what the headers, once cleaned, describe
        self._decoder: zlib._Decompress | None = None
        #: the callback form on a reused connection: sends again on a fresh one if this one was stale
        self.retry: Callable[[], object] | None = None
        #: called once the read of the upstream under way is parsed (a sink flushing what it gathered)
        self.after_read: Callable[[], None] | None = None

    @property
    def reason(self) -> str:
        return self.reason_bytes.decode("latin-1")

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers

    @property
    def until_close(self) -> bool:
        """Is the body delimited by the connection's end (no Content-Length, not chunked)?"""
        for name, value in self.raw_headers:
            low = name.lower()
            if low == b"content-length":
                return False
            if low == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked"):
                return False
        return True

    # -- the caller's side --

    async def wait_head(self) -> None:
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None and not self._chunks and not self.done:
            raise self._error

    async def read(self) -> bytes:
        """The whole body (what :meth:`next_chunk` has not taken yet)."""
        while not self.done:
            self._resume()
            await self._wait()
        if self._error is not None:
            raise self._error
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        return data

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self._resume()
        return data

    def set_read_timeout(self, seconds: float) -> None:
        """From now on the upstream may be silent ``seconds`` at most (0: no limit)."""
        self._timeout = seconds
        self._last = self._loop.time()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        self._live.discard(self)
        if conn is not None:
            keep = self.done and self._keep and self._error is None
            if not keep:
                conn.resp = None
            conn.client.release(conn, keep)

    close = release

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason}>"

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._last = self._loop.time()
            if self._conn is not None:
                self._conn.resume_reading()

    # -- the connection's side --

    def seen(self, n: int) -> None:
        self.received += n
        self._last = self._loop.time()

    def head(self, status: int) -> None:
        self.status = status
        self.head_done = True
        for name, value in self.raw_headers:
            if len(name) == 16 and name.lower() == b"content-encoding" and value.strip().lower() in _COMPRESSED:
                self._decoder = zlib.decompressobj(_GZIP_OR_ZLIB)
        if self.sink is not None:
            self.sink.on_head(self)
        else:
            self._wake()

    def body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self.fail(UpstreamProtocolError("the upstream's compressed body does not decode"))
                return
            if not data:
                return
        if self.sink is not None:
            self.sink.on_data(self, data)
            return
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause_reading()
        self._wake()

    def finish(self, keep: bool) -> None:
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            if not decoder.eof:
                self.fail(UpstreamProtocolError("the upstream's compressed body ended early"))
                return
            tail = decoder.flush()
            if tail:
                self.body(tail)
        self.head_done = self.done = True
        self._keep = keep and not self.no_body
        self._live.discard(self)
        if self.sink is not None:
            self.sink.on_end(self)
        else:
            self._wake()

    def fail(self, exc: BaseException) -> None:
        if self.done:
            return
        self._error = exc
        self.done = True
        self._live.discard(self)
        if self.sink is None:
            self._wake()
        elif self.retry is not None and self.received == 0 and isinstance(exc, UpstreamClosed):
            retry, self.retry = self.retry, None  # a kept-alive connection the upstream had closed: once more
            self.release()
            retry()
        else:
            self.sink.on_error(self, exc)

    def pause(self) -> None:
        """The callback form: stop reading the upstream (the client is slow); no read timeout meanwhile."""
        if not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause_reading()

    def resume(self) -> None:
        self._resume()

    def expired(self, now: float) -> bool:
        """Has the upstream been silent longer than the read timeout? (Not while the caller is slow.)"""
        if self._paused:  # reading stopped because the caller is slow, not the upstream
            self._last = now
            return False
        return self._timeout > 0 and now - self._last >= self._timeout

    def time_out(self) -> None:
        self.fail(ReadTimeout(f"the upstream sent nothing for {self._timeout:g} s"))
        conn = self._conn
        if conn is not None:
            conn.resp = None
            conn.close()
