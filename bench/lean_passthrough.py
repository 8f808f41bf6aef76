"""The lean reference: what a pass-through proxy costs in Python without a framework.

asyncio ``Protocol`` + ``httptools`` on both sides (uvloop when installed), no coroutine per
request: a client request is parsed by callbacks, checked (``Authorization: Bearer TOKEN``),
given one of 100 keys round-robin, and written to an idle keep-alive upstream connection; the
answer is relayed by the upstream protocol's own callbacks, body bytes (SSE events included)
as they arrive. ``bench_proxy.py`` runs it beside the bare aiohttp pass-through, so its report
says how close keyrelay is to what Python can do.

    python bench/lean_passthrough.py PORT UPSTREAM_BASE_URL [TOKEN]
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from urllib.parse import urlsplit

import httptools

KEYS = [f"Bearer sk-lean-{i:03d}-abcdefghijklmnopqrstuvwxyz".encode() for i in range(100)]
DROP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"server", b"date"}
HOP = {b"authorization", b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
       b"accept-encoding", b"expect"}
UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n"
                b'{"error":{"message":"bad token","code":"bad_token"}}')


class Upstream(asyncio.Protocol):
    """One keep-alive upstream connection; relays one answer at a time to its client."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.head: list[bytes] = []
        self.reason = b""
        self.length = -1
        self.chunked = False
        self.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.client is not None:
            self._fail()

    def on_message_begin(self) -> None:
        self.head, self.reason, self.length = [], b"", -1

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low not in DROP:
            self.head += (name, b": ", value, b"\r\n")
        elif low == b"content-length":
            self.length = int(value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return
        self.chunked = self.length < 0
        framing = b"Transfer-Encoding: chunked\r\n" if self.chunked else b"Content-Length: %d\r\n" % self.length
        client = self.client
        if client is not None and client.transport is not None:
            client.transport.write(b"HTTP/1.1 %d %b\r\n%b%b\r\n" % (status, self.reason, b"".join(self.head), framing))

    def on_body(self, body: bytes) -> None:
        client = self.client
        if client is not None and client.transport is not None:
            client.transport.write(b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self.reusable = self.parser.should_keep_alive()  # valid only in here (issue 16)
        client, self.client = self.client, None
        if self.chunked and client is not None and client.transport is not None:
            client.transport.write(b"0\r\n\r\n")
        if self.reusable and self.transport is not None:
            self.proxy.idle.append(self)
        elif self.transport is not None:
            self.transport.close()
        if client is not None:
            client.done()

    def _fail(self) -> None:
        client, self.client = self.client, None
        if self.transport is not None:
            self.transport.close()
        if client is not None and client.transport is not None:
            client.transport.close()


class Proxy:
    def __init__(self, upstream: str, token: bytes) -> None:
        u = urlsplit(upstream)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.prefix = u.path.rstrip("/").encode()
        self.hostline = b"Host: %b\r\n" % u.netloc.encode()
        self.token = b"Bearer " + token
        self.idle: deque[Upstream] = deque()
        self.next_key = 0

    def forward(self, client: Client, method: bytes, path: bytes, headers: list[bytes], body: bytes) -> None:
        key = KEYS[self.next_key]
        self.next_key = (self.next_key + 1) % len(KEYS)
        req = b"%b %b HTTP/1.1\r\n%b%bAuthorization: %b\r\nAccept-Encoding: identity\r\nContent-Length: %d\r\n\r\n%b" % (
            method, path, self.hostline, b"".join(headers), key, len(body), body)
        while self.idle:
            up = self.idle.pop()
            if up.transport is not None and not up.transport.is_closing():
                up.client = client
                up.transport.write(req)
                return
        asyncio.get_running_loop().create_task(self._connect(client, req))

    async def _connect(self, client: Client, req: bytes) -> None:
        try:
            _, up = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), self.host, self.port)
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        up.client = client
        assert up.transport is not None
        up.transport.write(req)


class Client(asyncio.Protocol):
    """One client connection: requests are parsed here and answered in order, one at a time."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[bytes] = []
        self.auth = b""
        self.body: list[bytes] = []
        self.queue: deque[tuple[bytes, bytes, bytes, list[bytes], bytes]] = deque()
        self.busy = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.auth, self.body = b"", [], b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low == b"authorization":
            self.auth = value
        elif low not in HOP:
            self.headers += (name, b": ", value, b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        if not self.parser.should_keep_alive():
            self.close_after = True
        self.queue.append((method, self.url, self.auth, self.headers, b"".join(self.body)))
        if not self.busy:
            self.next()

    def next(self) -> None:
        while self.queue and self.transport is not None:
            method, url, auth, headers, body = self.queue.popleft()
            if auth != self.proxy.token:
                self.transport.write(UNAUTHORIZED)
                continue
            path = url[3:] if url.startswith(b"/v1") else url
            self.busy = True
            self.proxy.forward(self, method, self.proxy.prefix + path, headers, body)
            return
        if self.close_after and self.transport is not None and not self.queue:
            self.transport.close()

    def done(self) -> None:
        self.busy = False
        self.next()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    token = (sys.argv[3] if len(sys.argv) > 3 else "kr-bench-token-0123456789").encode()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    proxy = Proxy(upstream, token)
    server = loop.run_until_complete(loop.create_server(lambda: Client(proxy), "127.0.0.1", port, backlog=4096))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
