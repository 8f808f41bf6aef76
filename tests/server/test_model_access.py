"""Per (key, model): a key that may not use one model is skipped for that model only; the
request goes to a key that can; when none can, the caller gets the upstream's answer once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from keyrelay.config import PoolSettings, parse_settings
from keyrelay.core.model import KeyRecord
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import open_store
from keyrelay.stores.memory import MemoryStore

TOKEN = "kr-test-token-model-access-abcdef"
NARROW = "sk-model-narrow-0000000000000001"  # its project has no gpt-4o
WIDE = "sk-model-wide-00000000000000000002"
_NO_ACCESS = {"error": {"message": "Project `proj_QRf115YMnQwMUdTI9cu2sWQ8` does not have access to model `{m}`",
                        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}


class Upstream:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def chat(self, request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        model = (await request.json())["model"]
        self.calls.append((key, model))
        if model == "gpt-x" or (key == NARROW and model == "gpt-4o"):
            body = orjson.loads(orjson.dumps(_NO_ACCESS).replace(b"{m}", model.encode()))
            return web.json_response(body, status=403)
        return web.json_response({"id": "c", "object": "chat.completion", "choices": [],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    def count(self, key: str, model: str) -> int:
        return self.calls.count((key, model))


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, Runtime, Upstream, dict[str, str]]]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    up = web.AppRunner(app)
    await up.setup()
    await web.TCPSite(up, "127.0.0.1", 0).start()
    host, port = up.addresses[0][:2]
    settings = parse_settings(
        {
            "server": {"sync_interval": 0.1, "flush_interval": 0.1},
            "store": {"url": "memory://"},
            "pools": [{"name": "openai", "base_url": f"http://{host}:{port}/v1", "strategy": "round_robin"}],
            "tokens": [{"name": "t", "pools": ["openai"], "token": TOKEN}],
        },
        {},
    )
    store = open_store(settings.store_url)
    await store.open()
    added = await store.add_keys("openai", [NARROW, WIDE], time.time())
    runtime = Runtime(settings, store)
    runner = GatewayRunner(runtime)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gh, gp = runner.addresses[0][:2]
    yield f"http://{gh}:{gp}", runtime, upstream, {r.secret: r.id for r in added.added}
    await runner.cleanup()
    await up.cleanup()


async def _chat(s: aiohttp.ClientSession, url: str, model: str) -> tuple[int, Any]:
    async with s.post(url + "/v1/chat/completions", json={"model": model, "messages": []},
                      headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        return r.status, await r.json()


async def test_a_key_without_the_model_is_skipped_for_it_and_only_for_it(gateway: Any) -> None:
    url, runtime, upstream, _ids = gateway
    async with aiohttp.ClientSession() as s:
        for _ in range(6):
            status, _ = await _chat(s, url, "gpt-4o")
            assert status == 200  # failed over to the key that has the model
        for _ in range(4):
            status, _ = await _chat(s, url, "gpt-4o-mini")
            assert status == 200
    assert upstream.count(NARROW, "gpt-4o") == 1  # asked once, then skipped for that model
    assert upstream.count(WIDE, "gpt-4o") == 6
    assert upstream.count(NARROW, "gpt-4o-mini") >= 1  # still serves the models it has
    pool = runtime.pools["openai"]
    assert {r.state.value for r in pool.records()} == {"active"}  # nobody's key was blamed


async def test_when_no_key_has_the_model_the_caller_gets_the_upstreams_answer_once(gateway: Any) -> None:
    url, _runtime, upstream, _ids = gateway
    async with aiohttp.ClientSession() as s:
        status, body = await _chat(s, url, "gpt-x")
        assert status == 403 and body["error"]["code"] == "model_not_found"
        assert len(upstream.calls) == 2  # both keys asked once
        status, body = await _chat(s, url, "gpt-x")
        assert status == 403 and "does not have access to model" in body["error"]["message"]
        assert len(upstream.calls) == 3  # now one upstream call per request, not a failover storm
        status, _ = await _chat(s, url, "gpt-4o-mini")
        assert status == 200


def test_the_request_body_is_not_read_while_no_key_skips_a_model() -> None:
    pool = KeyPool(PoolSettings("p"), MemoryStore())
    pool.upsert(KeyRecord("k1", "p", "sk-fast-path-0000000000000001"))

    def never() -> bytes:
        raise AssertionError("the body was parsed on the fast path")

    attempts = Attempts(pool, body=never)
    assert attempts.next() is not None


async def test_a_model_refused_by_several_keys_stops_failing_over(tmp_path: Any) -> None:
    """A typo'd model must not walk the whole pool: after a few refusals, one ask per request."""
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    up = web.AppRunner(app)
    await up.setup()
    await web.TCPSite(up, "127.0.0.1", 0).start()
    host, port = up.addresses[0][:2]
    settings = parse_settings(
        {"store": {"url": "memory://"}, "pools": [{"name": "openai", "base_url": f"http://{host}:{port}/v1"}],
         "tokens": [{"name": "t", "pools": ["openai"], "token": TOKEN}]},
        {},
    )
    store = open_store(settings.store_url)
    await store.open()
    await store.add_keys("openai", [f"sk-model-many-0000000000000000{i:02d}" for i in range(12)], time.time())
    runtime = Runtime(settings, store)
    runner = GatewayRunner(runtime)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gh, gp = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                status, _ = await _chat(s, f"http://{gh}:{gp}", "gpt-x")
                assert status == 403
        assert len(upstream.calls) == 3 + 4  # three keys on the first request, then one per request
    finally:
        await runner.cleanup()
        await up.cleanup()
