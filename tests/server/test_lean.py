"""The gateway on the lean HTTP layer (``[server] engine = "lean"``), always: the main paths of
the relay flow driven from callbacks, and the hand-over of other paths to the aiohttp server on
one connection. (``KEYRELAY_ENGINE=lean`` runs every gateway test on it.)"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from keyrelay.config import parse_settings
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner, lean_site
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior

from .conftest import TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
BAD = "sk-bad-22222222222222222222222222222CCCC"
FAULT = "sk-fault-66666666666666666666666666GGGG"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LEAN = {"engine": "lean"}


async def test_answers_failover_and_counts_on_the_lean_layer(make_gateway):
    gw = await make_gateway({BAD: Behavior.INVALID, GOOD: Behavior.OK}, pool={"strategy": "round_robin"}, server=LEAN)
    for _ in range(4):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200 and r.headers["x-keyrelay-key"] == gw.ids[GOOD]
            assert (await r.json())["object"] == "chat.completion"
    assert gw.fake.count(BAD) == 1 and gw.state(BAD) == "invalid"
    await gw.runtime.flush()
    assert (await gw.stored(GOOD)).counters.successes == 4


async def test_streams_and_a_cut_stream_on_the_lean_layer(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server=LEAN)
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with gw.post("/v1/chat/completions", json=req) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        text = await r.text()
    assert text.count("chat.completion.chunk") >= 5 and text.rstrip().endswith("data: [DONE]")
    cut = await make_gateway({FAULT: Behavior.STREAM_CUT}, server=LEAN)
    async with cut.post("/v1/chat/completions", json=req) as r:
        text = await r.text()
    assert "chat.completion.chunk" in text and '"code":"stream_cut"' in text


async def test_refusals_keep_the_pools_dialect_on_the_lean_layer(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server=LEAN, pool={"retry": {"max_body_bytes": 1000}})
    async with gw.post("/v1/chat/completions", token="kr-wrong", json=CHAT) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
    async with gw.post("/v1/chat/completions", json={**CHAT, "pad": "x" * 5000}) as r:
        assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
    assert gw.fake.count(GOOD) == 0


async def test_a_client_that_hangs_up_costs_the_key_nothing_on_the_lean_layer(make_gateway):
    gw = await make_gateway({GOOD: Behavior.HANG}, server=LEAN)
    try:
        async with gw.post("/v1/chat/completions", json=CHAT, timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            await r.read()
    except TimeoutError:
        pass
    await asyncio.sleep(0.2)
    assert gw.runtime.pools["openai"].state.inflight(gw.ids[GOOD]) == 0  # the lease was released
    await gw.runtime.flush()
    rec = await gw.stored(GOOD)
    assert rec.state.value == "active" and rec.counters.requests == 0


async def test_pool_and_other_paths_share_one_connection(make_gateway):
    """A pool request, then /healthz (handed to aiohttp), then a pool request again (aiohttp's now)."""
    gw = await make_gateway({GOOD: Behavior.OK}, server=LEAN)
    u = urlsplit(gw.url)
    r, w = await asyncio.open_connection(u.hostname, u.port)
    body = orjson.dumps(CHAT)
    chat = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        statuses = []
        for raw in (chat, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", chat):
            w.write(raw)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
            length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:"))
            await asyncio.wait_for(r.readexactly(length), 3)
            statuses.append(int(head.split(b" ")[1]))
        assert statuses == [200, 200, 200]
    finally:
        w.close()
    assert gw.fake.count(GOOD) == 2


async def _short_stream(request: web.Request) -> web.Response:
    """A stream whose body ends inside its first event (no blank line after it)."""
    return web.Response(body=b'data: {"id":"c1","object":"chat.completion.chunk"}', content_type="text/event-stream")


async def test_a_stream_that_ends_inside_its_first_event_is_relayed_and_ended(engine):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _short_stream)
    upstream = web.AppRunner(app, access_log=None)
    await upstream.setup()
    await web.TCPSite(upstream, "127.0.0.1", 0).start()
    settings = parse_settings({
        "server": {"engine": engine}, "store": {"url": "memory://"},
        "pools": [{"name": "openai", "base_url": f"http://127.0.0.1:{upstream.addresses[0][1]}/v1"}],
        "tokens": [{"name": "test", "pools": ["openai"], "token": TOKEN}],
    }, {})
    store = open_store("memory://")
    await store.open()
    await store.add_keys("openai", [GOOD], time.time())
    runner = GatewayRunner(Runtime(settings, store))
    await runner.setup()
    site = lean_site(runner, "127.0.0.1", 0) if engine == "lean" else web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=aiohttp.ClientTimeout(total=5),
        ) as r:
            assert r.status == 200
            assert await r.read() == b'data: {"id":"c1","object":"chat.completion.chunk"}'
    finally:
        await runner.cleanup()
        await upstream.cleanup()
