"""A lean HTTP/1.1 client for upstream APIs: keep-alive pools per origin over asyncio protocols,
answers parsed by ``httptools`` (llhttp) in the protocol's own callbacks.

- Framing: Content-Length, chunked, or read until the upstream closes; 1xx answers are
  skipped; ``Connection: close`` (or HTTP/1.0) closes the connection after the answer.
  Keep-alive is decided inside the parser's ``on_message_complete`` (``should_keep_alive()``
  read after ``feed_data()`` is always false).
- A body cut short (the upstream closes before Content-Length bytes or the last chunk) raises
  :class:`~keyrelay.http1.errors.UpstreamClosed`; bytes that are not HTTP raise
  :class:`~keyrelay.http1.errors.UpstreamProtocolError`. Both are ``OSError``\\ s.
- A connect timeout (TCP, proxy tunnel, TLS handshake) and a read timeout: the upstream may be
  silent that long at most while an answer is awaited and read, checked by one ticker per
  client (no timer per request or per chunk: arriving bytes just note the time); none while
  reading is paused because the caller is slow to take what arrived.
- TLS for ``https`` origins (the default SSL context unless one is given); ``HTTPS_PROXY`` /
  ``HTTP_PROXY`` / ``NO_PROXY`` from the environment: https through a CONNECT tunnel, http in
  absolute form (``http://`` proxies only).
- A request reuses an idle connection of its origin (the last one released first); one that
  the upstream closed while idle, unseen, is retried once on a fresh connection if not a byte
  of an answer came. ``limit`` bounds open connections, all origins together.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
import urllib.request
from collections import deque
from functools import partial
from typing import cast

import httptools

from keyrelay.http1.errors import ConnectTimeout, ProxyError, UpstreamClosed, UpstreamError, UpstreamProtocolError
from keyrelay.http1.origin import HeaderInput, Origin, Tunnel, serialize
from keyrelay.http1.response import Sink, UpstreamResponse

__all__ = ["Sink", "UpstreamClient", "UpstreamResponse"]



class _Conn(asyncio.Protocol):
    """One upstream connection; parses the answer to the request in flight into ``resp``."""

    __slots__ = ("client", "closed", "origin", "parser", "resp", "transport")

    def __init__(self, client: UpstreamClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.resp: UpstreamResponse | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        resp.seen(len(data))
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadDone):
                resp.fail(UpstreamError(f"reading the answer failed: {exc.__context__!r}"))
                self.close()
        except httptools.HttpParserError as exc:
            resp.fail(UpstreamProtocolError(f"invalid HTTP from the upstream: {exc}"))
            self.close()
        after = resp.after_read
        if after is not None:
            resp.after_read = None
            after()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.client.lost(self)
        resp, self.resp = self.resp, None
        if resp is not None and not resp.done:
            if resp.head_done and resp.until_close:
                resp.finish(False)
            else:
                what = "in the middle of the body" if resp.head_done else "before an answer"
                resp.fail(UpstreamClosed(f"the upstream closed the connection {what}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- parser callbacks (each answer to ``resp``) --

    def on_status(self, reason: bytes) -> None:
        if self.resp is not None:
            self.resp.reason_bytes += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: the real answer follows
            resp.raw_headers, resp.reason_bytes, resp.interim = [], b"", True
            return
        resp.head(status)
        if resp.no_body:
            self.resp = None
            resp.finish(False)
            raise _HeadDone  # a HEAD's answer has no body whatever its Content-Length; llhttp cannot be told

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp.body(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        if resp.interim:
            resp.interim = False
            return
        self.resp = None
        resp.finish(self.parser.should_keep_alive())  # only valid in here

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()


class _HeadDone(Exception):
    """Stops the parser after the head of an answer to HEAD (that connection is not reused)."""


class UpstreamClient:
    """Keep-alive connections to upstream origins. One per event loop."""

    def __init__(
        self, *, connect_timeout: float = 10.0, read_timeout: float = 300.0, limit: int = 1000,
        idle_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None, trust_env: bool = True,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limit = limit
        self.idle_timeout = idle_timeout
        self._ssl = ssl_context
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._origins: dict[str, Origin] = {}
        self._idle: dict[str, dict[_Conn, float]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        #: answers awaited; one ticker looks for silent upstreams every ``tick`` seconds (a read
        #: timeout fires between ``read_timeout`` and ``read_timeout + tick`` after the last byte)
        self._live: set[UpstreamResponse] = set()
        self.tick = max(0.05, min(1.0, read_timeout / 10))
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this client works on, kept: ``asyncio.get_running_loop()`` asks the kernel
        for the process id each call (CPython 3.11), twice a request on the hot path."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _origin(self, url: str) -> tuple[Origin, bytes]:
        i = url.find("://")
        j = url.find("/", i + 3)
        prefix, target = (url, "/") if j < 0 else (url[:j], url[j:])
        origin = self._origins.get(prefix)
        if origin is None:
            scheme = url[:i].lower()
            if i < 0 or scheme not in ("http", "https") or not prefix[i + 3 :]:
                raise ValueError(f"not an http(s) URL: {url[:80]!r}")
            origin = Origin(scheme, prefix[i + 3 :], self._proxies)
            if len(self._origins) < 1024:
                self._origins[prefix] = origin
        return origin, (url.encode() if origin.absolute else target.encode())

    async def request(
        self, method: str | bytes, url: str, headers: HeaderInput = (), body: bytes = b"",
        *, read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for its answer's head; the body is read from the answer.
        Every answer must be :meth:`~UpstreamResponse.release`\\ d (or used as a context manager)."""
        if self._closed:
            raise UpstreamError("the client is closed")
        m = method.encode() if isinstance(method, str) else method
        origin, target = self._origin(url)
        data = serialize(m, target, origin, headers, body)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = self._reuse(origin, loop.time())
            reused = conn is not None
            if conn is None:
                conn, reused = await self._acquire(origin)
            resp = self._start(conn, m, data, timeout, loop)
            try:
                await resp.wait_head()
            except UpstreamClosed:
                if reused and attempt == 0 and resp.received == 0:  # closed while idle, unseen: once more
                    continue
                raise
            return resp
        raise AssertionError("unreachable")

    def send(
        self, method: str | bytes, url: str, headers: HeaderInput, body: bytes, sink: Sink,
        *, more: HeaderInput = (), read_timeout: float | None = None, connect_timeout: float | None = None,
    ) -> None:
        """The callback form of :meth:`request`: the answer goes to ``sink`` as it arrives, and
        with an idle connection at hand there is no coroutine or future at all. Errors, the
        connection's included, go to ``sink.on_error``; ``on_end`` (or the caller, later) must
        :meth:`~UpstreamResponse.release` the answer. ``more``: headers sent after ``headers``."""
        m = method.encode() if isinstance(method, str) else method
        origin, target = self._origin(url)
        data = serialize(m, target, origin, headers, body, more)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        loop = self._running_loop()
        if self._closed:
            sink.on_error(None, UpstreamError("the client is closed"))
            return
        conn = self._reuse(origin, loop.time())
        if conn is None:
            loop.create_task(self._send_fresh(origin, m, data, sink, timeout, connect_timeout))
            return
        resp = self._start(conn, m, data, timeout, loop)
        resp.sink = sink
        resp.retry = partial(self._resend, origin, m, data, sink, timeout, connect_timeout)

    def _resend(self, origin: Origin, method: bytes, data: bytes, sink: Sink, timeout: float,
                connect_timeout: float | None) -> None:
        """:meth:`send` again on a fresh connection (the idle one it took was stale)."""
        asyncio.get_running_loop().create_task(self._send_fresh(origin, method, data, sink, timeout, connect_timeout))

    def _start(self, conn: _Conn, method: bytes, data: bytes, timeout: float,
               loop: asyncio.AbstractEventLoop) -> UpstreamResponse:
        resp = UpstreamResponse(conn, method == b"HEAD", timeout, loop, self._live)
        if self._ticker is None:
            self._ticker = loop.call_at(loop.time() + self.tick, self._tick)
        conn.resp = resp
        assert conn.transport is not None
        conn.transport.write(data)
        return resp

    async def _send_fresh(self, origin: Origin, method: bytes, data: bytes, sink: Sink, timeout: float,
                          connect_timeout: float | None) -> None:
        try:
            conn, _ = await self._acquire(origin, connect_timeout)
        except Exception as exc:  # noqa: BLE001 - every failure to connect is the sink's to handle
            sink.on_error(None, exc)
            return
        self._start(conn, method, data, timeout, asyncio.get_running_loop()).sink = sink

    def _tick(self) -> None:
        self._ticker = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for resp in [r for r in self._live if r.expired(now)]:
            resp.time_out()
        if self._live:
            self._ticker = loop.call_at(now + self.tick, self._tick)

    def _reuse(self, origin: Origin, now: float) -> _Conn | None:
        idle = self._idle.get(origin.key)
        while idle:
            conn, since = idle.popitem()  # the last released: the warmest
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - since > self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    async def _acquire(self, origin: Origin, connect_timeout: float | None = None) -> tuple[_Conn, bool]:
        """A connection for ``origin`` (reused?) within ``limit``: an idle one of another origin
        is closed to make room, else the first connection released or closed is waited for."""
        loop = asyncio.get_running_loop()
        while self._open >= self.limit:
            conn = self._reuse(origin, loop.time())
            if conn is not None:
                return conn, True
            self._close_one_idle()  # makes room when its transport reports the end
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter
        return await self._connect(origin, self.connect_timeout if connect_timeout is None else connect_timeout), False

    async def _connect(self, origin: Origin, timeout: float) -> _Conn:
        self._open += 1
        try:
            async with asyncio.timeout(timeout):
                return await self._open_connection(origin)
        except TimeoutError:
            self._gone()
            raise ConnectTimeout(f"no connection to {origin.key} within {timeout:g} s") from None
        except UpstreamError:
            self._gone()
            raise
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            self._gone()
            raise UpstreamError(f"cannot connect to {origin.key}: {exc}") from exc
        except BaseException:
            self._gone()
            raise

    async def _open_connection(self, origin: Origin) -> _Conn:
        loop = asyncio.get_running_loop()
        if origin.proxy is None or origin.absolute:
            host, port = origin.proxy if origin.proxy is not None else (origin.host, origin.port)
            tls = self.ssl_context if origin.tls else None
            _, conn = await loop.create_connection(
                lambda: _Conn(self, origin), host, port, ssl=tls, server_hostname=origin.host if tls else None
            )
            return conn
        tunnel = Tunnel(loop)
        transport, _ = await loop.create_connection(lambda: tunnel, *origin.proxy)
        try:
            authority = b"%s:%d" % (origin.host.encode("idna"), origin.port)
            transport.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority, authority, origin.proxy_auth))
            status = await tunnel.answered
            if status != 200:
                raise ProxyError(f"the proxy refused the tunnel to {origin.key}: HTTP {status}")
            conn = _Conn(self, origin)
            tls_transport = await loop.start_tls(transport, conn, self.ssl_context, server_hostname=origin.host)
            assert tls_transport is not None
            conn.connection_made(tls_transport)
            return conn
        except BaseException:
            transport.close()
            raise

    def release(self, conn: _Conn, keep: bool) -> None:
        """An answer is over: its connection goes back to the pool (``keep``) or is closed."""
        if keep and not self._closed and not conn.closed and conn.transport is not None:
            conn.resp = None
            self._idle.setdefault(conn.origin.key, {})[conn] = self._running_loop().time()
            if self._waiters:
                self._wake()
        else:
            conn.close()

    def lost(self, conn: _Conn) -> None:
        idle = self._idle.get(conn.origin.key)
        if idle is not None:
            idle.pop(conn, None)
        self._gone()

    def _gone(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _close_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                conn, _ = idle.popitem()
                conn.close()
                return

    async def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for idle in self._idle.values():
            for conn in list(idle):
                conn.close()
            idle.clear()
        await asyncio.sleep(0)  # let the transports report their end
