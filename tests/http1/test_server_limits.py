"""The lean server's bounds over raw sockets: oversized heads and bodies, the memory cap for
bodies in flight, slow, idle and vanishing clients, ``Expect: 100-continue``, the connection cap."""

from __future__ import annotations

import asyncio
import time

import orjson

from .conftest import answers, post, read_until_closed, statuses

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


