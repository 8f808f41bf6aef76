"""Client tokens at the gateway: a token made with the CLI works at once, and a revoked one
stops working within the sync interval even though the gateway remembers tokens it saw."""

from __future__ import annotations

import asyncio
import time

from keyrelay.stores.base import hash_token
from keyrelay.testing.fake_upstream import Behavior

GOOD = "sk-good-0000000000000000000000000000AAAA"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STORED = "kr-stored-token-0123456789abcdefghij"


async def test_a_revoked_token_is_refused_within_the_sync_interval(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})  # sync_interval 0.1 s
    await gw.store.create_token("ci", ["openai"], hash_token(STORED), time.time())
    for _ in range(3):  # the first is looked up in the store, the others are remembered
        async with gw.post("/v1/chat/completions", token=STORED, json=CHAT) as r:
            assert r.status == 200
    assert await gw.store.revoke_token("ci", time.time())
    await asyncio.sleep(0.35)
    async with gw.post("/v1/chat/completions", token=STORED, json=CHAT) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_api_key"


async def test_an_unknown_token_is_refused_every_time(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    for _ in range(2):
        async with gw.post("/v1/chat/completions", token="kr-nobody-0123456789abcdef", json=CHAT) as r:
            assert r.status == 401
    assert gw.fake.count(GOOD) == 0


async def test_an_admin_token_is_not_a_client_token(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    await gw.store.create_token("ops", [], hash_token("kr-admin-only-token-0001"), time.time(), admin=True)
    async with gw.post("/v1/chat/completions", token="kr-admin-only-token-0001", json=CHAT) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
    assert gw.fake.calls == []
