"""Verify before retiring in library mode: the held key is probed at the API the SDK talks to
(its base URL), not at the pool's default ``base_url`` (api.openai.com), so a healthy key of
another provider is never retired by a probe sent to the wrong host."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

import keyrelay
from keyrelay.core.machine import UNVERIFIED
from keyrelay.core.model import KeyState

httpx = pytest.importorskip("httpx")

ONCE_REFUSED = "sk-lib-verify-good-0000000000001"  # one bare 403, then fine; its /models accepts it
DEAD = "sk-lib-verify-dead-00000000000002"  # 401 with a body nobody knows, everywhere
HEALTHY = [f"sk-lib-verify-ok-0000000000000{i}" for i in range(10, 14)]


class Upstream:
    """A tiny OpenAI-compatible upstream on its own thread, under ``/openai/v1`` (like Groq's)."""

    def __init__(self) -> None:
        self.chat: dict[str, int] = {}
        self.models: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_get("/openai/v1/models", self._models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}/openai/v1"

    def close(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _chat(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        n = self.chat[key] = self.chat.get(key, 0) + 1
        if key == ONCE_REFUSED and n == 1:
            return web.json_response({"error": {"message": "Forbidden"}}, status=403)
        if key == DEAD:
            return web.json_response({"error": {"message": "request denied", "type": "denied"}}, status=401)
        return web.json_response({"id": "c", "object": "chat.completion", "choices": [],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    async def _models(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.models[key] = self.models.get(key, 0) + 1
        if key == DEAD:
            return web.json_response({"error": {"message": "request denied"}}, status=401)
        return web.json_response({"object": "list", "data": []})


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def test_a_held_key_is_verified_at_the_sdks_base_url(upstream: Upstream) -> None:
    pool = keyrelay.Pool.from_keys([ONCE_REFUSED, DEAD, *HEALTHY])  # base_url left at its default
    try:
        with keyrelay.legacy_httpx_client(pool) as c:
            for _ in range(200):
                r = c.post(f"{upstream.url}/chat/completions", json={"model": "m", "messages": []})
                assert r.status_code == 200
                if upstream.chat.get(ONCE_REFUSED) and upstream.chat.get(DEAD):
                    break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = {r.secret: (r.state, r.reason) for r in pool.keypool.records()}
            if states[ONCE_REFUSED][0] is KeyState.ACTIVE and states[DEAD][0] is KeyState.INVALID:
                break
            time.sleep(0.05)
        assert states[ONCE_REFUSED] == (KeyState.ACTIVE, "verified: the upstream accepts the key")
        assert states[DEAD][0] is KeyState.INVALID
        assert upstream.models.get(ONCE_REFUSED) == 1 and upstream.models.get(DEAD) == 1  # asked here
        events = [e.reason for e in asyncio.run(_events(pool, ONCE_REFUSED))]
        assert UNVERIFIED in events
    finally:
        pool.close()


async def _events(pool: keyrelay.Pool, secret: str) -> list:  # type: ignore[type-arg]
    rec = next(r for r in pool.keypool.records() if r.secret == secret)
    return await pool.keypool.store.events(rec.id)
