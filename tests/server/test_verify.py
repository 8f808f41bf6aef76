"""Verify before retiring, through the gateway: an auth refusal no rule recognises fails over at
once, holds the key briefly, and a probe decides within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from keyrelay.config import parse_settings
from keyrelay.core.machine import UNVERIFIED
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import open_store

TOKEN = "kr-test-token-verify-abcdefghij"
GOOD_ONCE_REFUSED = "sk-verify-good-000000000000000001"  # one bare 403, then fine; /models accepts it
DEAD = "sk-verify-dead-000000000000000002"  # 401 with a body nobody knows, everywhere
RECOGNISED = "sk-verify-revoked-00000000000000003"  # 401 invalid_api_key: retired at once
HEALTHY = [f"sk-verify-healthy-0000000000000000{i}" for i in range(4, 9)]  # the guard lets 3 of 8 go
_OK = orjson.dumps({"id": "c1", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 1,
                                                                                     "completion_tokens": 1}})


class Upstream:
    def __init__(self) -> None:
        self.chat: dict[str, int] = {}
        self.models: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    @staticmethod
    def _key(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    async def _chat(self, request: web.Request) -> web.Response:
        key = self._key(request)
        n = self.chat[key] = self.chat.get(key, 0) + 1
        if key == GOOD_ONCE_REFUSED and n == 1:
            return web.json_response({"error": {"message": "Forbidden"}}, status=403)
        if key == DEAD:
            return web.json_response({"error": {"message": "request denied", "type": "denied"}}, status=401)
        if key == RECOGNISED:
            return web.json_response({"error": {"message": "Incorrect API key provided: sk-ver...0003.",
                                                "type": "invalid_request_error", "code": "invalid_api_key"}},
                                     status=401)
        return web.Response(body=_OK, content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        key = self._key(request)
        self.models[key] = self.models.get(key, 0) + 1
        if key in (DEAD, RECOGNISED):
            return web.json_response({"error": {"message": "request denied", "type": "denied"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, Runtime, Upstream, dict[str, str]]]:
    upstream = Upstream()
    up_runner = web.AppRunner(upstream.app())
    await up_runner.setup()
    up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
    await up_site.start()
    host, port = up_runner.addresses[0][:2]
    settings = parse_settings(
        {
            "server": {"sync_interval": 0.1, "flush_interval": 0.1},
            "store": {"url": "memory://"},
            "pools": [{"name": "openai", "base_url": f"http://{host}:{port}/v1"}],
            "tokens": [{"name": "t", "pools": ["openai"], "token": TOKEN}],
        },
        {},
    )
    store = open_store(settings.store_url)
    await store.open()
    added = await store.add_keys("openai", [GOOD_ONCE_REFUSED, DEAD, RECOGNISED, *HEALTHY], time.time())
    runtime = Runtime(settings, store)
    runner = GatewayRunner(runtime)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gh, gp = runner.addresses[0][:2]
    yield f"http://{gh}:{gp}", runtime, upstream, {r.secret: r.id for r in added.added}
    await runner.cleanup()
    await up_runner.cleanup()


async def _state_within(runtime: Runtime, key_id: str, want: str, seconds: float = 5.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rec = runtime.pools["openai"].state.get(key_id)
        if rec is not None and rec.state.value == want:
            return rec
        await asyncio.sleep(0.05)
    rec = runtime.pools["openai"].state.get(key_id)
    raise AssertionError(f"{key_id} is {rec.state.value if rec else None} ({rec.reason if rec else ''}), not {want}")


async def test_unrecognised_refusals_fail_over_hold_the_key_and_a_probe_decides(gateway: Any) -> None:
    url, runtime, upstream, ids = gateway
    async with aiohttp.ClientSession() as s:
        for _ in range(200):  # until every key was tried once (key choice is random)
            async with s.post(url + "/v1/chat/completions", json={"model": "m", "messages": []},
                              headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200, await r.text()  # never the client's problem while a key is healthy
            if all(upstream.chat.get(k) for k in (GOOD_ONCE_REFUSED, DEAD, RECOGNISED)):
                break
    assert all(upstream.chat.get(k) for k in (GOOD_ONCE_REFUSED, DEAD, RECOGNISED))

    # recognised: retired at once, no probe needed
    revoked = runtime.pools["openai"].state.get(ids[RECOGNISED])
    assert revoked is not None and revoked.state.value == "invalid"
    # unrecognised: probed within seconds; the healthy one is back, the dead one retired
    back = await _state_within(runtime, ids[GOOD_ONCE_REFUSED], "active")
    dead = await _state_within(runtime, ids[DEAD], "invalid")
    assert upstream.models.get(GOOD_ONCE_REFUSED) and upstream.models.get(DEAD)
    assert back.reason == "verified: the upstream accepts the key"
    assert dead.reason == "refused by the upstream (http 401)"  # the probe asked again and was refused

    events = await runtime.store.events(ids[GOOD_ONCE_REFUSED])
    moves = [(e.from_state, e.to_state, e.reason) for e in events]
    assert ("active", "cooling", UNVERIFIED) in moves
    assert ("cooling", "active", "verified: the upstream accepts the key") in moves
    assert all(DEAD not in (e.detail + e.reason) for e in await runtime.store.events(ids[DEAD]))
