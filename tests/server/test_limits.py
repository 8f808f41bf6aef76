"""Limits on clients, over raw sockets: the header timeout, the cap on a head's bytes, the cap on
open connections (503, never a stall), body timeouts, the memory cap on bodies in flight, and
``Expect: 100-continue`` answered only after the token."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson
import pytest

from keyrelay.testing.fake_upstream import Behavior

from .conftest import TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


_OPENED: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    while _OPENED:
        w = _OPENED.pop()
        w.close()
        try:
            await w.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(url)
    r, w = await asyncio.open_connection(u.hostname, u.port)
    _OPENED.append(w)
    return r, w


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    """Did the gateway close the connection within ``seconds``? And what did it send?"""
    got = b""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            chunk = await asyncio.wait_for(reader.read(65536), end - time.monotonic())
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionError:
        return True, got
    return False, got


def _request(path: str = "/v1/chat/completions", body: bytes = CHAT, token: str = TOKEN, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer (head and Content-Length body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await asyncio.wait_for(reader.readexactly(length), 3.0)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0


async def test_half_a_request_head_is_closed_at_the_header_timeout(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"header_timeout": 0.5})
    silent_r, _silent_w = await _open(gw.url)  # sends nothing at all
    half_r, half_w = await _open(gw.url)
    half_w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    started = time.monotonic()
    assert (await _closed_within(half_r, 2.0))[0]
    assert (await _closed_within(silent_r, 2.0))[0]
    assert 0.4 < time.monotonic() - started < 2.0
    async with gw.post("/v1/chat/completions", data=CHAT) as r:  # a normal client is not held up
        assert r.status == 200


async def test_a_trickled_head_does_not_outlive_the_timeout(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"header_timeout": 0.6})
    r, w = await _open(gw.url)
    w.write(b"GET /v1/models HTTP/1.1\r\n")
    started = time.monotonic()
    closed = False
    for i in range(30):  # one header line every 0.1 s: never whole in time
        try:
            w.write(f"X-Slow-{i}: {i}\r\n".encode())
            await w.drain()
        except ConnectionError:
            closed = True
            break
        if r.at_eof():
            closed = True
            break
        await asyncio.sleep(0.1)
    closed = closed or (await _closed_within(r, 1.0))[0]
    assert closed and time.monotonic() - started < 2.0


async def test_endless_headers_get_431_and_the_connection_is_closed(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"max_header_bytes": 16384})
    r, w = await _open(gw.url)
    w.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
    try:
        for i in range(200):  # ~800 KB of headers, each line short, never finished
            w.write(f"X-Pad-{i}: {'a' * 4000}\r\n".encode())
            await w.drain()
    except ConnectionError:
        pass
    closed, got = await _closed_within(r, 2.0)
    assert closed
    assert _status(got) in (400, 431)
    assert b'"error"' in got


async def test_connections_beyond_the_cap_get_503_in_the_openai_shape_and_a_log_line(make_gateway, caplog):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"max_client_connections": 20, "header_timeout": 30.0})
    idle = [await _open(gw.url) for _ in range(20)]
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="keyrelay.server"):
        r, w = await _open(gw.url)
        w.write(_request())
        closed, got = await _closed_within(r, 3.0)
    assert closed and _status(got) == 503
    body = orjson.loads(got.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "too_many_connections"
    assert any("max_client_connections=20" in rec.getMessage() for rec in caplog.records)
    for _, iw in idle:
        iw.close()
    await asyncio.sleep(0.2)
    async with gw.post("/v1/chat/completions", data=CHAT) as resp:  # room again
        assert resp.status == 200


async def test_a_stalled_body_gets_408(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"body_timeout": 0.4})
    r, w = await _open(gw.url)
    w.write(_request(body=CHAT)[: -len(CHAT) // 2])  # the head, half the body, then silence
    started = time.monotonic()
    closed, got = await _closed_within(r, 3.0)
    assert _status(got) == 408 and b"request_timeout" in got
    assert closed and time.monotonic() - started < 2.0
    assert gw.fake.count(GOOD) == 0


async def test_a_body_slower_than_the_minimum_rate_gets_408(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"body_timeout": 0.3, "body_min_rate": 1000.0})
    body = b"x" * 2000  # 0.3 s + 2 s allowed at 1000 B/s; sent at ~100 B/s
    r, w = await _open(gw.url)
    w.write(_request(body=body)[: -len(body)])  # the head only
    answer = asyncio.create_task(_closed_within(r, 6.0))
    started = time.monotonic()
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
    assert _status(got) == 408 and b"request_timeout" in got
    assert closed and time.monotonic() - started < 4.0
    assert gw.fake.count(GOOD) == 0


async def test_bodies_in_flight_share_one_memory_cap(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"max_body_memory": 100_000})
    r1, w1 = await _open(gw.url)
    big = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 80_000}]})
    w1.write(_request(body=big)[: -len(big) + 10])  # holds 80,000 bytes of the cap, still arriving
    await asyncio.sleep(0.2)
    r2, w2 = await _open(gw.url)
    w2.write(_request(body=big)[: -len(big) + 10])
    got = await _answer(r2)
    assert _status(got) == 503 and b"server_busy" in got and b"Retry-After: 1" in got
    r3, w3 = await _open(gw.url)
    w3.write(_request(body=b"y" * 200_000)[:-190_000])  # larger than the whole cap
    assert _status(await _answer(r3)) == 413
    w1.write(big[10:])  # the first one completes and frees its share
    assert _status(await _answer(r1)) == 200
    r4, w4 = await _open(gw.url)  # its share was given back: another one that size fits
    w4.write(_request(body=big)[: -len(big) + 10])
    await asyncio.sleep(0.1)
    w4.write(big[10:])
    assert _status(await _answer(r4)) == 200


@pytest.mark.parametrize(("token", "length", "expected"), [("kr-wrong-token-000000", 100, 401), (TOKEN, 10**9, 413)])
async def test_expect_100_continue_is_refused_early_without_the_body(make_gateway, token, length, expected):
    gw = await make_gateway({GOOD: Behavior.OK})
    r, w = await _open(gw.url)
    w.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    got = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3.0)
    assert _status(got) == expected
    assert b"100 Continue" not in got


async def test_expect_100_continue_is_answered_after_the_token_then_the_body_flows(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    r, w = await _open(gw.url)
    w.write(_request(body=CHAT, extra="Expect: 100-continue\r\n")[: -len(CHAT)])
    interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3.0)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    w.write(CHAT)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5.0)
    assert _status(head) == 200
    assert gw.fake.count(GOOD) == 1


async def test_a_head_over_the_cap_sent_in_one_write_gets_431(make_gateway):
    """The cap holds for a head that arrives whole in one read as for one that trickles in
    (found by the soak bench: a 36 KB head in one write was served)."""
    gw = await make_gateway({GOOD: Behavior.OK}, server={"max_header_bytes": 16384})
    lines = "".join(f"X-Pad-{i}: {'a' * 1500}\r\n" for i in range(12))  # ~18 KB, every line short
    r, w = await _open(gw.url)
    w.write(f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    await w.drain()
    closed, got = await _closed_within(r, 2.0)
    assert closed
    assert _status(got) == 431 and b'"error"' in got
    assert gw.fake.calls == []
    w.close()

    ok_lines = "".join(f"X-Pad-{i}: {'a' * 1500}\r\n" for i in range(8))  # ~12 KB: under the cap
    r, w = await _open(gw.url)
    w.write(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{ok_lines}\r\n".encode())
    await w.drain()
    got = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert _status(got) == 200
    w.close()


async def test_a_header_line_over_the_line_limit_gets_431_on_both_engines(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    r, w = await _open(gw.url)
    w.write(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 10_000}\r\n\r\n".encode())
    await w.drain()
    closed, got = await _closed_within(r, 2.0)
    assert closed and _status(got) == 431 and b"headers_too_large" in got
    w.close()
