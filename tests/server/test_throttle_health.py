"""Token guessing is throttled per client address without slowing valid tokens; /healthz says
only "ok", /readyz tells pools and usable keys to a token holder."""

from __future__ import annotations

import logging
import time

import pytest

from keyrelay.server.throttle import AuthThrottle
from keyrelay.stores import hash_token
from keyrelay.testing.fake_upstream import Behavior

from .conftest import OTHER_POOL_TOKEN, TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_guessing_tokens_gets_429_after_the_burst_and_a_log_line(make_gateway, caplog):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"auth_failure_burst": 5, "auth_failure_rate": 0.5})
    with caplog.at_level(logging.WARNING, logger="keyrelay.server"):
        statuses = []
        for i in range(8):
            async with gw.post("/v1/chat/completions", token=f"kr-guess-{i:04d}", json=CHAT) as r:
                statuses.append(r.status)
                body = await r.json()
                retry_after = r.headers.get("Retry-After")
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert body["error"]["code"] == "too_many_auth_failures" and body["error"]["type"] == "rate_limit_error"
    assert retry_after is not None and int(retry_after) >= 1
    throttled = [r.getMessage() for r in caplog.records if "throttled" in r.getMessage()]
    assert len(throttled) == 1 and "client=127.0.0.1" in throttled[0]
    # valid tokens from the same address are not slowed: known in memory, or recognised at once
    for token in (TOKEN, TOKEN):
        async with gw.post("/v1/chat/completions", token=token, json=CHAT) as r:
            assert r.status == 200
    assert gw.fake.count(GOOD) == 2


async def test_requests_without_a_token_are_told_so_not_throttled(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"auth_failure_burst": 2})
    for _ in range(5):
        async with gw.post("/v1/chat/completions", token=None, json=CHAT) as r:
            assert r.status == 401


def test_the_bucket_refills_at_the_rate():
    now = [100.0]
    t = AuthThrottle(burst=3, rate=2.0, clock=lambda: now[0])
    for _ in range(3):
        assert t.blocked("a") is None
        t.failed("a")
    wait = t.blocked("a")
    assert wait is not None and 0 < wait <= 0.5
    assert t.blocked("b") is None  # per address
    now[0] += 0.5
    assert t.blocked("a") is None
    assert AuthThrottle(burst=0, rate=1.0).blocked("a") is None  # 0 turns it off


async def test_healthz_tells_anyone_only_ok(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.session.get(gw.url + "/healthz") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}
        assert "openai" not in await r.text()


@pytest.mark.parametrize("token", [None, "kr-wrong-0000000000"])
async def test_readyz_needs_a_token(make_gateway, token):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.get("/readyz", token=token) as r:
        assert r.status == 401
        assert "openai" not in await r.text()


async def test_readyz_shows_a_token_its_own_pools_and_their_usable_keys(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.get("/readyz", token=TOKEN) as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "eligible_keys": {"openai": 1}}
    async with gw.get("/readyz", token=OTHER_POOL_TOKEN) as r:  # a pool with no key: not ready
        assert r.status == 503
        assert await r.json() == {"status": "no_usable_key", "eligible_keys": {"other": 0}}
    assert gw.fake.calls == []


async def test_readyz_can_be_opened_to_anyone(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, server={"readyz_public": True})
    async with gw.get("/readyz", token=None) as r:
        assert (await r.json())["eligible_keys"] == {"openai": 1, "other": 0}


async def test_readyz_shows_an_admin_token_every_pool(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    admin = "kr-admin-readyz-token-0000000000000001"
    await gw.store.create_token("ops", ["*"], hash_token(admin), time.time(), admin=True)
    async with gw.get("/readyz", token=admin) as r:
        assert r.status == 503  # the pool "other" has no key
        assert await r.json() == {"status": "no_usable_key", "eligible_keys": {"openai": 1, "other": 0}}
    async with gw.post("/v1/chat/completions", token=admin, json=CHAT) as r:  # still no proxy token
        assert r.status == 401
