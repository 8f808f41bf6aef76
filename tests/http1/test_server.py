"""The lean HTTP/1.1 server against a corpus of edge cases over raw sockets on 127.0.0.1:
pipelining, smuggling shapes, bad framing, oversized and malformed heads, slow, idle and
vanishing clients, ``Expect: 100-continue``, the connection cap, and the hand-over of non-pool
paths to an aiohttp server."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from keyrelay.http1.errors import BodyTooLarge
from keyrelay.http1.request import Request
from keyrelay.http1.server import LeanServer, Limits
from keyrelay.http1.writer import ResponseWriter

TOKEN = b"Bearer good"


class Running:
    def __init__(self, server: LeanServer, port: int) -> None:
        self.server = server
        self.port = port
        self.cancelled = 0
        self.seen: list[Request] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened.append(w)
        return r, w

    async def exchange(self, data: bytes, seconds: float = 3.0) -> bytes:
        """Send ``data``, read until the server closes (or ``seconds``)."""
        r, w = await self.open()
        w.write(data)
        return (await read_until_closed(r, seconds))[1]


async def read_until_closed(r: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    got = b""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            chunk = await asyncio.wait_for(r.read(65536), end - time.monotonic())
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionError:
        return True, got
    return False, got


def statuses(raw: bytes) -> list[int]:
    """The statuses of the answers in ``raw`` (their bodies are short JSON)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def handler(req: Request, w: ResponseWriter) -> None:
    """The pool route of these tests: a token, then an echo of what came."""
    running: Running = req._conn.server.running  # type: ignore[attr-defined]
    running.seen.append(req)
    if req.headers.get("authorization", "").encode() != TOKEN:
        w.send(401, [(b"Content-Type", b"application/json")], b'{"error":"bad token"}')
        return
    if req.path == "/v1/slow":
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            running.cancelled += 1
            raise
    if req.path == "/v1/boom":
        raise RuntimeError("a bug")
    try:
        body = await req.read(limit=1000 if req.path == "/v1/small" else None)
    except BodyTooLarge:
        if req.path == "/v1/raw":
            raise  # the server answers it
        w.send(413, [(b"Content-Type", b"application/json")], b'{"error":"too large, in our shape"}')
        return
    if req.path == "/v1/stream":
        w.start(200, [(b"Content-Type", b"text/event-stream")])
        for i in range(3):
            w.write(b"data: %d\n\n" % i)
            await w.drain()
        w.end()
        return
    echo = orjson.dumps({"method": req.method, "path": req.path, "query": req.query, "body": body.decode(),
                         "remote": req.remote})
    w.send(200, [(b"Content-Type", b"application/json")], echo)


async def _admin(request: web.Request) -> web.Response:
    return web.json_response({"aiohttp": request.path, "body": (await request.read()).decode()})


@pytest.fixture
async def lean() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    made: list[tuple[Running, asyncio.Server, web.AppRunner]] = []

    async def make(**limits: Any) -> Running:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _admin)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        server = LeanServer(handler, Limits(**limits), route=lambda t: t.startswith(b"/v1/"), fallback=runner.server)
        srv = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
        running = Running(server, srv.sockets[0].getsockname()[1])
        server.running = running  # type: ignore[attr-defined]
        made.append((running, srv, runner))
        return running

    yield make
    for running, srv, runner in made:
        for w in running.opened:
            w.close()
        srv.close()
        await running.server.shutdown(0.1)
        await runner.cleanup()


def post(path: str, body: bytes = b"{}", extra: str = "", token: bytes = TOKEN) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def answers(r: asyncio.StreamReader, n: int) -> list[tuple[int, bytes]]:
    """``n`` Content-Length answers: (status, body)."""
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        out.append((int(head.split(b" ")[1]), await asyncio.wait_for(r.readexactly(length), 3)))
    return out


# -- normal traffic ---------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/v1/a", b"1") + post("/v1/b?x=y", b"22") + post("/v1/c", b"333"))
    got = await answers(r, 3)
    assert [orjson.loads(b)["body"] for _, b in got] == ["1", "22", "333"]
    assert orjson.loads(got[1][1])["query"] == "x=y" and orjson.loads(got[0][1])["remote"] == "127.0.0.1"


async def test_a_chunked_body_reaches_the_handler_whole(lean):
    s = await lean()
    r, w = await s.open()
    w.write(b"POST /v1/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n")
    await asyncio.sleep(0.05)
    w.write(b"2;ext=1\r\nde\r\n0\r\n\r\n")
    [(status, body)] = await answers(r, 1)
    assert status == 200 and orjson.loads(body)["body"] == "abcde"


async def test_a_stream_is_chunked_and_the_connection_kept(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/v1/stream") + post("/v1/a", b"after"))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
    assert b"Transfer-Encoding: chunked" in head
    assert await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 3) == b"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert orjson.loads((await answers(r, 1))[0][1])["body"] == "after"


async def test_http10_and_connection_close_end_the_connection(lean):
    s = await lean()
    got = await s.exchange(b"GET /v1/a HTTP/1.0\r\nAuthorization: Bearer good\r\n\r\n")
    assert statuses(got) == [200] and b"Connection: close" in got
    got = await s.exchange(post("/v1/a", extra="Connection: close\r\n") + post("/v1/never"))
    assert statuses(got) == [200]  # nothing after a request that closes


async def test_head_answers_carry_no_body(lean):
    s = await lean()
    r, w = await s.open()
    w.write(b"HEAD /v1/a HTTP/1.1\r\nAuthorization: Bearer good\r\n\r\n" + post("/v1/b", b"x"))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head
    assert orjson.loads((await answers(r, 1))[0][1])["body"] == "x"  # the next answer follows the head at once


# -- smuggling shapes and malformed requests: 400 and a close, never a 5xx ------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n",
        b"POST /v1/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET /v1/a HTTP/1.1\nHost: x\n\n",
        b"G@T /v1/a HTTP/1.1\r\n\r\n",
        b"GET /v1/a b HTTP/1.1\r\n\r\n",
        b"GET /v1/\x01 HTTP/1.1\r\n\r\n",
        b"GET /v1/a HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    ids=["cl+te", "duplicate-cl", "bad-chunk-size", "chunk-overrun", "te-not-chunked-last", "negative-cl",
         "cl-underscore", "obs-fold-te", "space-before-colon", "bare-lf", "bad-method", "space-in-target",
         "control-in-target", "bad-version", "tls-to-plain"],
)
async def test_malformed_requests_get_400_and_a_close(lean, raw):
    s = await lean()
    got = await s.exchange(raw.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer good\r\n"))
    assert statuses(got) == [400], got
    assert (b'"malformed_request"' in got or b'"malformed_body"' in got) and b"Connection: close" in got
    assert not any(statuses(got)[0] == 200 for _ in s.seen)  # nothing half-parsed was answered as if whole


async def test_a_bad_request_after_a_good_one_is_answered_after_it(lean):
    s = await lean()
    got = await s.exchange(post("/v1/a", b"ok") + b"POST /v1/b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert statuses(got) == [200, 400]


async def test_control_characters_in_a_token_are_a_401(lean):
    s = await lean()
    got = await s.exchange(b"GET /v1/a HTTP/1.1\r\nAuthorization: Bearer a\x01b\r\n\r\n")
    assert statuses(got) == [401] and b"invalid_api_key" in got


# -- sizes --------------------------------------------------------------------------------------


async def test_endless_headers_get_431(lean):
    s = await lean(max_header_bytes=16384)
    r, w = await s.open()
    w.write(b"GET /v1/a HTTP/1.1\r\n")
    try:
        for i in range(100):
            w.write(f"X-Pad-{i}: {'a' * 4000}\r\n".encode())
            await w.drain()
    except ConnectionError:
        pass
    closed, got = await read_until_closed(r, 3)
    assert closed and statuses(got) == [431]


async def test_one_endless_header_line_gets_431(lean):
    s = await lean(max_header_bytes=16384)
    r, w = await s.open()
    w.write(b"GET /v1/a HTTP/1.1\r\nX-Long: ")
    try:
        for _ in range(20):
            w.write(b"a" * 4000)
            await w.drain()
    except ConnectionError:
        pass
    closed, got = await read_until_closed(r, 3)
    assert closed and statuses(got) == [431]


async def test_too_many_headers_or_a_long_line_get_431_and_a_long_target_414(lean):
    s = await lean(max_headers=10, max_line_size=200)
    many = "".join(f"X-{i}: {i}\r\n" for i in range(11))
    assert statuses(await s.exchange(f"GET /v1/a HTTP/1.1\r\n{many}\r\n".encode())) == [431]
    assert statuses(await s.exchange(f"GET /v1/a HTTP/1.1\r\nX-Long: {'a' * 300}\r\n\r\n".encode())) == [431]
    assert statuses(await s.exchange(f"GET /v1/{'a' * 300} HTTP/1.1\r\n\r\n".encode())) == [414]


async def test_a_body_over_the_limit_gets_413_before_it_is_sent(lean):
    s = await lean(max_body=1000)
    r, w = await s.open()
    w.write(post("/v1/a", b"x" * 5000)[:-5000])  # the head only: the answer must not wait for the body
    closed, got = await read_until_closed(r, 3)
    assert closed and statuses(got) == [413] and b"in our shape" in got  # the handler's read() raised it
    got = await s.exchange(post("/v1/raw", b"x" * 5000)[:-5000])  # a handler that does not catch it
    assert statuses(got) == [413] and b"request_too_large" in got


async def test_a_chunked_body_growing_over_the_limit_gets_413(lean):
    s = await lean(max_body=1000)
    chunks = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    got = await s.exchange(b"POST /v1/a HTTP/1.1\r\nAuthorization: Bearer good\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    assert statuses(got) == [413]


async def test_the_handlers_own_limit_answers_in_its_shape(lean):
    s = await lean()
    got = await s.exchange(post("/v1/small", b"x" * 2000, extra="Connection: close\r\n"))
    assert statuses(got) == [413] and b"in our shape" in got


async def test_bodies_in_flight_share_one_memory_cap(lean):
    s = await lean(max_body_memory=10_000)
    r1, w1 = await s.open()
    w1.write(post("/v1/a", b"x" * 8000)[:-7990])  # holds 8,000 bytes of the cap, still arriving
    await asyncio.sleep(0.2)
    got = await s.exchange(post("/v1/a", b"y" * 5000)[:-4990], 1.0)
    assert statuses(got) == [503] and b"server_busy" in got
    w1.write(b"x" * 7990)
    assert (await answers(r1, 1))[0][0] == 200


# -- slow, idle and vanishing clients -----------------------------------------------------------


async def test_half_a_head_and_silence_are_closed_at_the_header_timeout(lean):
    s = await lean(header_timeout=0.5)
    silent_r, _ = await s.open()
    half_r, half_w = await s.open()
    half_w.write(b"POST /v1/a HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert (await read_until_closed(half_r, 2))[0]
    assert (await read_until_closed(silent_r, 2))[0]
    assert 0.3 < time.monotonic() - started < 1.5
    assert s.server.timed_out == 2


async def test_idle_keep_alive_connections_are_closed(lean):
    s = await lean(keepalive_timeout=0.5, header_timeout=5)
    r, w = await s.open()
    w.write(post("/v1/a"))
    await answers(r, 1)
    started = time.monotonic()
    closed, _ = await read_until_closed(r, 3)
    assert closed and 0.4 < time.monotonic() - started < 1.5


async def test_a_stalled_body_gets_408(lean):
    s = await lean(body_timeout=0.4)
    r, w = await s.open()
    w.write(post("/v1/a", b"x" * 100)[:-50])
    started = time.monotonic()
    closed, got = await read_until_closed(r, 3)
    assert closed and statuses(got) == [408] and b"request_timeout" in got
    assert time.monotonic() - started < 1.5


async def test_a_body_below_the_minimum_rate_gets_408(lean):
    s = await lean(body_timeout=0.3, body_min_rate=1000.0)
    body = b"x" * 2000
    r, w = await s.open()
    w.write(post("/v1/a", body)[: -len(body)])
    answer = asyncio.create_task(read_until_closed(r, 6))
    try:
        for i in range(0, len(body), 10):
            w.write(body[i : i + 10])
            await w.drain()
            await asyncio.sleep(0.1)
            if answer.done():
                break
    except ConnectionError:
        pass
    closed, got = await answer
    assert closed and statuses(got) == [408]


async def test_a_client_that_goes_away_cancels_its_handler(lean):
    s = await lean()
    _, w = await s.open()
    w.write(post("/v1/slow"))
    await asyncio.sleep(0.2)
    w.close()
    await asyncio.sleep(0.2)
    assert s.cancelled == 1 and not s.server.connections


async def test_expect_100_continue_is_answered_only_after_the_token(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/v1/a", b"x" * 10, extra="Expect: 100-continue\r\n", token=b"Bearer bad")[:-10])
    closed, got = await read_until_closed(r, 2)
    assert statuses(got) == [401] and b"100 Continue" not in got and closed  # the body never came: closed
    r, w = await s.open()
    w.write(post("/v1/a", b"x" * 10, extra="Expect: 100-continue\r\n")[:-10])
    assert await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
    w.write(b"x" * 10)
    assert orjson.loads((await answers(r, 1))[0][1])["body"] == "x" * 10


async def test_connections_beyond_the_cap_get_503(lean):
    s = await lean(max_connections=5, header_timeout=30)
    for _ in range(5):
        await s.open()
    await asyncio.sleep(0.1)
    got = await s.exchange(post("/v1/a"))
    assert statuses(got) == [503] and b"too_many_connections" in got and b"Retry-After: 1" in got


async def test_a_handler_bug_is_a_500_and_the_server_goes_on(lean):
    s = await lean()
    assert statuses(await s.exchange(post("/v1/boom"))) == [500]
    assert statuses(await s.exchange(post("/v1/a", extra="Connection: close\r\n"))) == [200]


# -- hand-over to aiohttp -------------------------------------------------------------------------


async def test_other_paths_are_answered_by_aiohttp(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/admin/api", b"body for aiohttp"))
    [(status, body)] = await answers(r, 1)
    assert status == 200 and orjson.loads(body) == {"aiohttp": "/admin/api", "body": "body for aiohttp"}
    w.write(post("/metrics"))  # the connection is aiohttp's from then on
    assert orjson.loads((await answers(r, 1))[0][1])["aiohttp"] == "/metrics"


async def test_a_lean_request_then_aiohttp_on_one_connection(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/v1/a", b"lean"))
    assert orjson.loads((await answers(r, 1))[0][1])["body"] == "lean"
    w.write(post("/healthz", b""))
    assert orjson.loads((await answers(r, 1))[0][1])["aiohttp"] == "/healthz"


async def test_pipelined_lean_requests_then_aiohttp_in_order(lean):
    s = await lean()
    r, w = await s.open()
    w.write(post("/v1/a", b"one") + post("/v1/stream") + post("/admin/x", b"two") + post("/admin/y", b"three"))
    first = orjson.loads((await answers(r, 1))[0][1])
    assert first["body"] == "one"
    await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 3)
    rest = [orjson.loads(b) for _, b in await answers(r, 2)]
    assert rest == [{"aiohttp": "/admin/x", "body": "two"}, {"aiohttp": "/admin/y", "body": "three"}]


async def test_a_head_split_over_reads_is_handed_over_whole(lean):
    s = await lean()
    r, w = await s.open()
    raw = post("/admin/split", b"0123456789")
    for i in range(0, len(raw), 7):
        w.write(raw[i : i + 7])
        await w.drain()
        await asyncio.sleep(0.01)
    assert orjson.loads((await answers(r, 1))[0][1]) == {"aiohttp": "/admin/split", "body": "0123456789"}


async def test_a_plain_function_handler_answers_without_a_task(lean):
    s = await lean()
    calls: list[str] = []

    def now(req: Request, w: ResponseWriter) -> Awaitable[None] | None:
        calls.append(req.path)
        if req.path == "/v1/later":  # answers from a callback, after the handler returned
            asyncio.get_running_loop().call_later(0.05, w.send, 200, [], b"later")
            return None
        if req.path == "/v1/coro":
            return handler(req, w)
        w.send(200, [(b"Content-Type", b"text/plain")], req.body)
        return None

    s.server.handler = now
    r, w = await s.open()
    w.write(post("/v1/a", b"body") + post("/v1/later") + post("/v1/coro", b"c") + post("/v1/b", b"last"))
    got = await answers(r, 4)
    assert [b for _, b in got][:2] == [b"body", b"later"] and orjson.loads(got[2][1])["body"] == "c"
    assert got[3][1] == b"last" and calls == ["/v1/a", "/v1/later", "/v1/coro", "/v1/b"]
    assert s.server.connections and all(c.task is None for c in s.server.connections)
