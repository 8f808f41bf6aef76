"""The lean upstream client against scripted upstreams on raw sockets (127.0.0.1): framing,
1xx, keep-alive and ``Connection: close``, bodies cut short, timeouts, the pool."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from keyrelay.http1.errors import ConnectTimeout, ReadTimeout, UpstreamClosed, UpstreamError, UpstreamProtocolError
from keyrelay.http1.upstream import UpstreamClient

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Upstream:
    """A raw upstream: each connection runs ``script(reader, writer, connection number)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _run(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(r, w, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        req = head + await r.readexactly(length)
        self.requests.append(req)
        return req


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Script], Awaitable[Upstream]]]:
    made: list[Upstream] = []

    async def make(script: Script) -> Upstream:
        u = Upstream(script)
        await u.start()
        made.append(u)
        return u

    yield make
    for u in made:
        assert u.server is not None
        u.server.close()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout=2.0, read_timeout=2.0, trust_env=False)
    yield c
    await c.close()


def _serve(*answers: bytes, close: bool = False) -> Callable[[Upstream], Script]:
    """A script answering the requests of one connection with ``answers`` in turn."""

    def bind(u: Upstream) -> Script:
        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
            for a in answers:
                await u.read_request(r)
                w.write(a)
                await w.drain()
            if not close:
                await r.read()  # hold the connection open until the client goes

        return script

    return bind


async def _with(upstream, bind: Callable[[Upstream], Script]) -> Upstream:  # type: ignore[no-untyped-def]
    holder: list[Upstream] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await bind(holder[0])(r, w, n)

    u = await upstream(script)
    holder.append(u)
    return u


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


async def test_content_length_answers_reuse_one_connection(upstream, client):
    u = await _with(upstream, _serve(OK, OK, OK))
    for _ in range(3):
        async with await client.request("POST", u.url + "/v1/x", {"Authorization": "Bearer k"}, b"{}") as resp:
            assert resp.status == 200 and resp.reason == "OK"
            assert resp.headers.get("content-type") == "application/json"
            assert await resp.read() == b'{"ok":true}'
    assert u.connections == 1
    first = u.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer k\r\n" in first and b"\r\nContent-Length: 2\r\n\r\n{}" in first


async def test_chunked_answers_arrive_chunk_by_chunk(upstream, client):
    sent = asyncio.Event()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await u.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
        w.write(b"7\r\ndata: 1\r\n")
        await w.drain()
        await sent.wait()
        w.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await w.drain()
        await u.read_request(r)  # the next request comes on the same connection
        w.write(OK)
        await w.drain()
        await r.read()

    u = await upstream(script)
    resp = await client.request("POST", u.url + "/s", [(b"Accept", b"text/event-stream")], b"{}")
    assert await resp.next_chunk() == b"data: 1"  # before the rest was even sent
    sent.set()
    assert await resp.next_chunk() == b"data: 2"
    assert await resp.next_chunk() == b""
    resp.release()
    async with await client.request("GET", u.url + "/again") as again:  # the connection went back to the pool
        assert await again.read() == b'{"ok":true}'
    assert u.connections == 1


async def test_a_body_until_close_ends_with_the_connection(upstream, client):
    u = await _with(upstream, _serve(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close=True))
    async with await client.request("GET", u.url + "/") as resp:
        assert await resp.read() == b"all of it"
    async with await client.request("GET", u.url + "/") as resp:  # a fresh connection
        assert await resp.read() == b"all of it"
    assert u.connections == 2


async def test_1xx_answers_are_skipped(upstream, client):
    u = await _with(upstream, _serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK))
    async with await client.request("POST", u.url + "/", {}, b"{}") as resp:
        assert resp.status == 200 and "link" not in resp.headers
        assert await resp.read() == b'{"ok":true}'


async def test_connection_close_is_honoured(upstream, client):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    u = await _with(upstream, _serve(closing))
    for _ in range(2):
        async with await client.request("GET", u.url + "/") as resp:
            assert await resp.read() == b"hi"
    assert u.connections == 2


async def test_http10_answers_are_not_kept(upstream, client):
    u = await _with(upstream, _serve(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
    for _ in range(2):
        async with await client.request("GET", u.url + "/") as resp:
            assert await resp.read() == b"hi"
    assert u.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_cut_short_is_a_network_error(upstream, client, answer):
    u = await _with(upstream, _serve(answer, close=True))
    resp = await client.request("GET", u.url + "/")
    with pytest.raises(UpstreamClosed) as err:
        await resp.read()
    assert isinstance(err.value, OSError) and "middle of the body" in str(err.value)
    resp.release()


async def test_a_close_before_any_answer_is_a_network_error(upstream, client):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await r.readuntil(b"\r\n\r\n")

    u = await upstream(script)
    with pytest.raises(UpstreamClosed, match="before an answer"):
        await client.request("GET", u.url + "/")


async def test_garbage_from_the_upstream_is_a_protocol_error(upstream, client):
    u = await _with(upstream, _serve(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(UpstreamProtocolError):
        await client.request("GET", u.url + "/")


async def test_a_silent_upstream_times_out_per_read(upstream):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
        for _ in range(5):  # a byte every 0.2 s: slow but never silent for 0.5 s
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)  # then silent

    u = await upstream(script)
    c = UpstreamClient(read_timeout=0.5, trust_env=False)
    try:
        started = time.monotonic()
        resp = await c.request("GET", u.url + "/")
        with pytest.raises(ReadTimeout) as err:
            await resp.read()
        took = time.monotonic() - started
        assert 1.3 < took < 2.5  # 1 s of trickle, then 0.5 s of silence
        assert isinstance(err.value, TimeoutError) and isinstance(err.value, OSError)
        resp.release()
    finally:
        await c.close()


async def test_a_silent_upstream_times_out_before_the_head(upstream):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await r.read()

    u = await upstream(script)
    c = UpstreamClient(read_timeout=0.3, trust_env=False)
    try:
        with pytest.raises(ReadTimeout):
            await c.request("GET", u.url + "/")
    finally:
        await c.close()


async def test_connect_errors_are_network_errors():
    c = UpstreamClient(connect_timeout=0.3, trust_env=False)
    full = socket.socket()
    fillers: list[socket.socket] = []
    try:
        with pytest.raises(UpstreamError, match="cannot connect"):
            await c.request("GET", "http://127.0.0.1:1/")  # refused
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # never accepts: once its queue is full, new SYNs are dropped
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(full.getsockname())
            fillers.append(s)
        started = time.monotonic()
        with pytest.raises(ConnectTimeout):
            await c.request("GET", f"http://127.0.0.1:{full.getsockname()[1]}/")
        assert time.monotonic() - started < 1.0
    finally:
        await c.close()
        for s in (full, *fillers):
            s.close()


async def test_a_stale_idle_connection_is_retried_once(upstream, client):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await u.read_request(r)
        w.write(OK)
        await w.drain()
        if n == 1:
            await asyncio.sleep(0.05)
            return  # closes the kept-alive connection while the client holds it idle
        await r.read()

    u = await upstream(script)
    async with await client.request("GET", u.url + "/") as resp:
        await resp.read()
    await asyncio.sleep(0.2)
    async with await client.request("GET", u.url + "/") as resp:
        assert await resp.read() == b'{"ok":true}'
    assert u.connections == 2


async def test_an_unread_body_closes_its_connection(upstream, client):
    u = await _with(upstream, _serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", OK))
    resp = await client.request("GET", u.url + "/")
    resp.release()  # not read whole: the connection cannot carry another answer
    async with await client.request("GET", u.url + "/") as resp:
        assert resp.status == 200
    assert u.connections == 2


async def test_head_answers_have_no_body(upstream, client):
    u = await _with(upstream, _serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"))
    async with await client.request("HEAD", u.url + "/") as resp:
        assert resp.status == 200 and await resp.read() == b""


async def test_header_injection_is_refused(upstream, client):
    with pytest.raises(ValueError):
        await client.request("GET", "http://127.0.0.1:9/", {"X-Evil": "a\r\nHost: elsewhere"})


async def test_the_limit_bounds_open_connections(upstream):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            await u.read_request(r)
            await asyncio.sleep(0.1)
            w.write(OK)
            await w.drain()

    u = await upstream(script)
    c = UpstreamClient(limit=2, trust_env=False)

    async def one() -> bytes:
        async with await c.request("GET", u.url + "/") as resp:
            return await resp.read()

    try:
        got = await asyncio.gather(*(one() for _ in range(6)))
        assert got == [b'{"ok":true}'] * 6 and u.connections == 2
    finally:
        await c.close()


async def test_https_through_a_connect_proxy(monkeypatch):
    """The CONNECT tunnel is asked for the origin's host:port; a refusal is a ProxyError."""
    seen: list[bytes] = []

    async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw@127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = UpstreamClient(connect_timeout=2.0)
    try:
        from keyrelay.http1.errors import ProxyError

        with pytest.raises(ProxyError, match="403"):
            await c.request("POST", "https://api.openai.com/v1/chat/completions", {}, b"{}")
        assert seen[0].startswith(b"CONNECT api.openai.com:443 HTTP/1.1\r\n")
        assert b"Proxy-Authorization: Basic dXNlcjpwdw==" in seen[0]
    finally:
        await c.close()
        server.close()


def _self_signed(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


async def test_https_origins_speak_tls_and_check_the_certificate(tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await r.readuntil(b"\r\n\r\n"))
                w.write(OK)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=cert)
    c = UpstreamClient(ssl_context=trusting, trust_env=False)
    strict = UpstreamClient(trust_env=False)  # the system's CAs: a self-signed certificate is refused
    try:
        for _ in range(2):
            async with await c.request("GET", f"https://localhost:{port}/v1/models") as resp:
                assert await resp.read() == b'{"ok":true}'
        assert len(seen) == 2 and seen[0].startswith(b"GET /v1/models HTTP/1.1\r\nHost: localhost:")
        with pytest.raises(UpstreamError, match="certificate"):
            await strict.request("GET", f"https://localhost:{port}/")
    finally:
        await c.close()
        await strict.close()
        server.close()


class Collect:
    """A sink that records what the callback form delivers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.over = asyncio.Event()

    def on_head(self, resp) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("head", resp.status))

    def on_data(self, resp, data: bytes) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("data", data))

    def on_end(self, resp) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("end", None))
        resp.release()
        self.over.set()

    def on_error(self, resp, exc: BaseException) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("error", type(exc).__name__))
        if resp is not None:
            resp.release()
        self.over.set()


async def test_the_callback_form_delivers_head_data_and_end_and_reuses(upstream, client):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    u = await _with(upstream, _serve(OK, chunked))
    for _ in range(2):
        sink = Collect()
        client.send("POST", u.url + "/v1/x", [(b"Authorization", b"Bearer k")], b"{}", sink)
        await asyncio.wait_for(sink.over.wait(), 2)
        assert sink.events[0] == ("head", 200) and sink.events[-1] == ("end", None)
    assert b"".join(d for k, d in sink.events if k == "data") == b"abcde"  # type: ignore[misc]
    assert u.connections == 1


async def test_the_callback_form_reports_errors_and_retries_a_stale_connection(upstream, client):
    sink = Collect()
    client.send("GET", "http://127.0.0.1:1/", {}, b"", sink)  # refused
    await asyncio.wait_for(sink.over.wait(), 2)
    assert sink.events == [("error", "UpstreamError")]

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await u.read_request(r)
        w.write(OK)
        await w.drain()
        if n == 1:
            return  # closes the kept-alive connection
        await r.read()

    u = await upstream(script)
    for _ in range(2):
        sink = Collect()
        client.send("GET", u.url + "/", {}, b"", sink)
        await asyncio.wait_for(sink.over.wait(), 2)
        assert sink.events[-1] == ("end", None)
        await asyncio.sleep(0.1)
    assert u.connections == 2


async def test_the_callback_form_times_out(upstream):
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await r.read()

    u = await upstream(script)
    c = UpstreamClient(read_timeout=0.3, trust_env=False)
    try:
        sink = Collect()
        c.send("GET", u.url + "/", {}, b"", sink)
        await asyncio.wait_for(sink.over.wait(), 2)
        assert sink.events == [("error", "ReadTimeout")]
    finally:
        await c.close()
