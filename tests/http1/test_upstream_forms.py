"""The lean upstream client's other sides: the connection limit, proxies (CONNECT), TLS, and
the callback form (``UpstreamClient.send``)."""

from __future__ import annotations

import asyncio

import pytest

from keyrelay.http1.errors import UpstreamError
from keyrelay.http1.upstream import UpstreamClient

from .conftest import OK, scripted, serve


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
    u = await scripted(upstream, serve(OK, chunked))
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
