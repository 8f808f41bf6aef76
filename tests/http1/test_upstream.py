"""The lean upstream client against scripted upstreams on raw sockets (127.0.0.1): framing,
1xx, keep-alive and ``Connection: close``, bodies cut short, timeouts, stale connections."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from keyrelay.http1.errors import ConnectTimeout, ReadTimeout, UpstreamClosed, UpstreamError, UpstreamProtocolError
from keyrelay.http1.upstream import UpstreamClient

from .conftest import OK, scripted, serve


async def test_content_length_answers_reuse_one_connection(upstream, client):
    u = await scripted(upstream, serve(OK, OK, OK))
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
    u = await scripted(upstream, serve(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close=True))
    async with await client.request("GET", u.url + "/") as resp:
        assert await resp.read() == b"all of it"
    async with await client.request("GET", u.url + "/") as resp:  # a fresh connection
        assert await resp.read() == b"all of it"
    assert u.connections == 2


async def test_1xx_answers_are_skipped(upstream, client):
    u = await scripted(upstream, serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK))
    async with await client.request("POST", u.url + "/", {}, b"{}") as resp:
        assert resp.status == 200 and "link" not in resp.headers
        assert await resp.read() == b'{"ok":true}'


async def test_connection_close_is_honoured(upstream, client):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    u = await scripted(upstream, serve(closing))
    for _ in range(2):
        async with await client.request("GET", u.url + "/") as resp:
            assert await resp.read() == b"hi"
    assert u.connections == 2


async def test_http10_answers_are_not_kept(upstream, client):
    u = await scripted(upstream, serve(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
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
    u = await scripted(upstream, serve(answer, close=True))
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
    u = await scripted(upstream, serve(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
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
    u = await scripted(upstream, serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", OK))
    resp = await client.request("GET", u.url + "/")
    resp.release()  # not read whole: the connection cannot carry another answer
    async with await client.request("GET", u.url + "/") as resp:
        assert resp.status == 200
    assert u.connections == 2


async def test_head_answers_have_no_body(upstream, client):
    u = await scripted(upstream, serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"))
    async with await client.request("HEAD", u.url + "/") as resp:
        assert resp.status == 200 and await resp.read() == b""


async def test_header_injection_is_refused(upstream, client):
    with pytest.raises(ValueError):
        await client.request("GET", "http://127.0.0.1:9/", {"X-Evil": "a\r\nHost: elsewhere"})


def _gzip_answer(body: bytes, *, chunked: bool) -> bytes:
    import gzip

    z = gzip.compress(body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    if not chunked:
        return head + b"Content-Length: %d\r\n\r\n" % len(z) + z
    half = len(z) // 2
    parts = [z[:half], z[half:]]
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_gzip_body_sent_despite_identity_is_read_decoded(upstream, client, chunked):
    """We ask for ``Accept-Encoding: identity``; an upstream (or a proxy before it) that
    compresses anyway must not hand the caller bytes its cleaned headers no longer describe."""
    body = b'{"ok":true,"text":"' + b"hello " * 200 + b'"}'
    u = await scripted(upstream, serve(_gzip_answer(body, chunked=chunked), OK))
    async with await client.request("POST", u.url + "/v1/x", {}, b"{}") as resp:
        assert resp.status == 200 and await resp.read() == body
    async with await client.request("POST", u.url + "/v1/x", {}, b"{}") as resp:  # the connection lives on
        assert await resp.read() == b'{"ok":true}'
    assert u.connections == 1


async def test_a_compressed_body_that_does_not_decode_is_an_upstream_error(upstream, client):
    bad = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
    u = await scripted(upstream, serve(bad))
    async with await client.request("POST", u.url + "/v1/x", {}, b"{}") as resp:
        with pytest.raises(UpstreamProtocolError):
            await resp.read()
