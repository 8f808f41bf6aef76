"""A hostile upstream echoes the key it was sent in every field, header and stream event: no
fragment of 8 characters or more of any key reaches the client, the logs (debug level
included) or the events, whatever the key looks like."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from keyrelay.config import parse_settings
from keyrelay.core.redaction import MIN_FRAGMENT
from keyrelay.logs import access_log, setup_logging
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import open_store

from .conftest import TOKEN

SK = "sk-" + "Hq7Lm2Np4Rs6Tu8Vw0Xy1Za3Bc5De7Fg9Hi2Jk4Lm6No8Pq"
HEX = "4c1f0e9b7a2d83f56e0c1b9a8d7f6e5c"  # prefixless, as Azure's and many resellers'
GOOGLE = "AIzaSyB" + "4kR9tW2mQ7xZ3pL8vN1cF6hJ0sD5gY2a"  # 39 characters
DASHED = "Tq-8vL_r2K-mZ_9xW4-pB_7nC3-yH_6"  # '-' and '_' inside
CANARIES = (SK, HEX, GOOGLE, DASHED)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def leaks(text: str) -> list[str]:
    return [
        k[i : i + MIN_FRAGMENT]
        for k in CANARIES
        for i in range(len(k) - MIN_FRAGMENT + 1)
        if k[i : i + MIN_FRAGMENT] in text
    ]


def _key(request: web.Request) -> str:
    return request.headers.get("Authorization", "")[7:]


async def hostile(request: web.Request) -> web.StreamResponse:
    key = _key(request)
    mode = request.query.get("mode", "")
    echo = {
        "WWW-Authenticate": f'Bearer realm="api", error="invalid_token", key="{key}"',
        "x-debug-upstream-key": key,
        "x-request-id": f"req_{key}",
        "x-echo-part": key[2:14],
        "x-ratelimit-remaining-requests": "99",
    }
    if mode == "json":
        err = {"message": f"Incorrect API key provided: {key}.", "type": key, "param": key, "code": key,
               "nested": {"deep": [key, {"again": key}]}}
        return web.json_response({"error": err}, status=401, headers=echo)
    if mode == "fields":  # not a key-level error: the client gets it back, rebuilt
        err = {"message": f"bad request for {key[:20]}", "type": f"x{key}y", "param": {"k": key}, "code": [key]}
        return web.json_response({"error": err}, status=400, headers=echo)
    if mode == "text":
        return web.Response(status=502, text=f"<html>upstream {key} failed; half {key[len(key) // 2:]}</html>",
                            headers=echo)
    if mode == "ok":
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "choices": []}, headers=echo)
    # a stream: normal chunks, then an error event naming the key, split inside the key
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **echo})
    await resp.prepare(request)
    await resp.write(b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"delta":{"content":"Hi"}}]}\n\n')
    event = orjson.dumps({"error": {"message": f"key {key} revoked", "type": key, "param": key, "code": key}})
    half = event.find(key.encode()) + len(key) // 2
    await resp.write(b"data: " + event[:half])
    await resp.write(event[half:] + b"\n\n")
    await resp.write(b"event: error\ndata: " + orjson.dumps({"type": "error", "detail": key}) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, access_log._handler)
    out = io.StringIO()
    setup_logging("debug", out)
    try:
        yield out
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        access_log._handler = saved[2]


@pytest.fixture
async def gateway(engine: str) -> AsyncIterator[tuple[str, Runtime, aiohttp.ClientSession]]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hostile)
    up_runner = web.AppRunner(app, access_log=None)
    await up_runner.setup()
    up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
    await up_site.start()
    up_port = up_runner.addresses[0][1]
    settings = parse_settings(
        {
            "server": {"sync_interval": 0.1, "engine": engine},
            "store": {"url": "memory://"},
            "pools": [{"name": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1",
                       "checker": {"correlated_share": 1.0}}],
            "tokens": [{"name": "test", "pools": ["openai"], "token": TOKEN}],
        },
        {},
    )
    store = open_store("memory://")
    await store.open()
    await store.add_keys("openai", list(CANARIES), time.time())
    runtime = Runtime(settings, store)
    runner = GatewayRunner(runtime)
    await runner.setup()
    if engine == "lean":  # both engines, as every gateway test (conftest.py)
        from keyrelay.server.app import lean_site

        site: web.BaseSite = lean_site(runner, "127.0.0.1", 0)
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        yield f"http://{host}:{port}", runtime, session
    await runner.cleanup()
    await up_runner.cleanup()


async def _call(session: aiohttp.ClientSession, url: str, mode: str, stream: bool = False) -> str:
    body: dict[str, Any] = {**CHAT, "stream": stream}
    async with session.post(f"{url}/v1/chat/completions?mode={mode}", json=body,
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
        seen = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        return f"{r.status}\n{seen}\n{text}"


@pytest.mark.parametrize("mode", ["json", "fields", "text", "ok", "stream"])
async def test_no_key_fragment_reaches_the_client_the_logs_or_the_events(gateway, log_text, mode):
    url, runtime, session = gateway
    for _ in range(3):  # every canary gets its turn (failover moves across keys)
        answer = await _call(session, url, mode, stream=mode == "stream")
        assert leaks(answer) == [], answer
    await runtime.flush()
    for h in logging.getLogger().handlers:
        h.flush()
    logged = log_text.getvalue()
    assert leaks(logged) == [], logged
    events = await runtime.store.events()
    assert leaks(repr(events)) == []


async def test_the_stream_still_carries_its_content_and_the_error_event(gateway):
    url, _, session = gateway
    answer = await _call(session, url, "stream", stream=True)
    assert answer.startswith("200")
    assert '"content":"Hi"' in answer and '"error"' in answer and "revoked" in answer
    assert answer.rstrip().endswith("data: [DONE]")
    assert "x-debug-upstream-key" not in answer.lower()


async def test_an_error_body_keeps_its_shape_and_says_which_key_by_mask(gateway):
    url, _, session = gateway
    async with session.post(f"{url}/v1/chat/completions?mode=fields", json=CHAT,
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 400
        doc = await r.json()
        assert "WWW-Authenticate" in r.headers and 'realm="api"' in r.headers["WWW-Authenticate"]
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["message"].startswith("bad request for ")
