"""The lean HTTP/1.1 server against a corpus of edge cases over raw sockets on 127.0.0.1:
pipelining, smuggling shapes, bad framing, malformed heads, ``Connection: close`` and HTTP/1.0,
handlers without a coroutine, and the hand-over of non-pool paths to an aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import orjson
import pytest

from keyrelay.http1.request import Request
from keyrelay.http1.writer import ResponseWriter

from .conftest import answers, handler, post, statuses

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
