"""What the lean server answers when a request's handler fails or leaves the request unanswered
(``http1/handling.py``): an error answer in OpenAI's shape that closes the connection, never a
hang or a traceback to the client; a stream already begun is cut instead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import orjson
import pytest

from keyrelay.http1.errors import BodyTooLarge
from keyrelay.http1.request import Request
from keyrelay.http1.writer import ResponseWriter

from .conftest import post, read_until_closed


def _failing(req: Request, w: ResponseWriter) -> Awaitable[None] | None:
    if req.path == "/v1/raises-now":
        raise RuntimeError("a bug before any await")
    return _later(req, w)


async def _later(req: Request, w: ResponseWriter) -> None:
    await asyncio.sleep(0)
    if req.path == "/v1/raises-later":
        raise RuntimeError("a bug after an await")
    if req.path == "/v1/too-large":
        raise BodyTooLarge("request body larger than the limit of 10 bytes")
    if req.path == "/v1/half-stream":
        w.start(200, [(b"Content-Type", b"text/event-stream")])
        w.write(b"data: 1\n\n")
        raise RuntimeError("a bug mid-stream")
    if req.path == "/v1/stream-left-open":
        w.start(200, [(b"Content-Type", b"text/event-stream")])
        w.write(b"data: 1\n\n")
        return
    # /v1/silent: returns without an answer


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/raises-now", 500, "internal_error"),
        ("/v1/raises-later", 500, "internal_error"),
        ("/v1/silent", 500, "internal_error"),
        ("/v1/too-large", 413, "request_too_large"),
    ],
)
async def test_a_request_its_handler_left_unanswered_gets_an_error_answer_and_the_connection_closes(
    lean, caplog, path: str, status: int, code: str
) -> None:
    s = await lean()
    s.server.handler = _failing
    with caplog.at_level(logging.ERROR, logger="keyrelay.server"):
        closed, got = await read_until_closed((await _sent(s, post(path) + post("/v1/never")))[0], 3)
    head, _, body = got.partition(b"\r\n\r\n")
    assert closed and head.startswith(b"HTTP/1.1 %d " % status) and b"Connection: close" in head
    assert orjson.loads(body)["error"]["code"] == code
    assert got.count(b"HTTP/1.1") == 1  # nothing answered after it
    assert "Traceback" not in got.decode("latin-1")
    if status == 500:
        assert any(path in r.getMessage() for r in caplog.records)  # the bug is logged for the operator


async def test_a_stream_whose_handler_fails_is_cut_not_answered_twice(lean) -> None:
    s = await lean()
    s.server.handler = _failing
    closed, got = await read_until_closed((await _sent(s, post("/v1/half-stream")))[0], 3)
    assert closed and got.count(b"HTTP/1.1") == 1 and b"data: 1" in got
    assert not got.endswith(b"0\r\n\r\n")  # no clean end: the client sees the stream cut


async def test_a_stream_its_handler_left_open_is_ended(lean) -> None:
    s = await lean()
    s.server.handler = _failing
    r, _ = await _sent(s, post("/v1/stream-left-open"))
    got = await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 3)
    assert b"Transfer-Encoding: chunked" in got and b"data: 1" in got


async def _sent(s, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # type: ignore[no-untyped-def]
    r, w = await s.open()
    w.write(data)
    return r, w
