"""Events (filtered, paged, and live over server-sent events), usage buckets written where the
gateway flushes its counters, and the one error shape."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from keyrelay.testing.fake_upstream import Behavior

from .conftest import API, TOKEN

FIXTURE = "sk-admin-fixture-key-000000000001"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_events_filter_by_pool_key_and_time_and_page_by_cursor(make_admin):
    a = await make_admin()
    kid = a.gw.ids[FIXTURE]
    t0 = time.time()
    for _ in range(3):
        await a.post(f"/keys/{kid}/disable")
        await a.post(f"/keys/{kid}/enable")
    await a.post("/keys", {"pool": "other", "keys": ["sk-other-pool-key-00000000001"]})
    status, page = await a.get(f"/events?key={kid}&limit=4")
    assert status == 200 and len(page["data"]) == 4 and page["next_cursor"]
    assert [e["to"] for e in page["data"]] == ["active", "disabled", "active", "disabled"]
    status, rest = await a.get(f"/events?key={kid}&limit=4&cursor={page['next_cursor']}")
    assert [e["to"] for e in rest["data"]] == ["active", "disabled", "active"]
    assert rest["next_cursor"] is None or rest["data"][-1]["id"] > 1
    ids = [e["id"] for e in page["data"] + rest["data"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    status, other = await a.get("/events?pool=other")
    assert [e["pool"] for e in other["data"]] == ["other"]
    status, since = await a.get(f"/events?since={t0}")
    assert len(since["data"]) == 7 and all(e["actor"] == "ops" for e in since["data"])
    status, body = await a.get("/events?cursor=abc")
    assert status == 404 and body["error"]["code"] == "cursor_not_found"
    status, body = await a.get("/events?pool=nope")
    assert status == 404


async def test_the_live_feed_shows_a_key_going_cooling_under_traffic(make_admin):
    limited = "sk-rate-limited-key-0000000000001"
    a = await make_admin({limited: Behavior.RATE_LIMITED, FIXTURE: Behavior.OK})
    gw = a.gw
    headers = {"Authorization": "Bearer kr-admin-test-token-0123456789abcdef"}
    async with gw.session.get(gw.url + API + "/events/stream", headers=headers) as stream:
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        assert await stream.content.readline() == b": connected\n"
        for _ in range(6):  # until the limited key is chosen once
            async with gw.post("/v1/chat/completions", token=TOKEN, json=CHAT) as r:
                assert r.status == 200
            if gw.state(limited) == "cooling":
                break
        assert gw.state(limited) == "cooling"
        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            line = await asyncio.wait_for(stream.content.readline(), 5)
            if line.startswith(b"data: "):
                ev = json.loads(line[6:])
                if ev["to"] == "cooling":
                    got = ev
        assert got is not None and got["key_id"] == gw.ids[limited] and got["actor"] == "traffic"
        assert limited.encode() not in line


async def test_usage_counts_requests_outcomes_and_tokens_per_pool_and_key(make_admin):
    a = await make_admin()
    for _ in range(3):
        async with a.gw.post("/v1/chat/completions", token=TOKEN, json=CHAT) as r:
            assert r.status == 200
    await a.gw.runtime.flush()
    status, pool = await a.get("/usage?pool=openai&resolution=minute")
    assert status == 200 and pool["resolution"] == "minute"
    assert sum(b["requests"] for b in pool["buckets"]) == 3
    assert sum(b["outcomes"]["ok"] for b in pool["buckets"]) == 3
    assert sum(b["prompt_tokens"] for b in pool["buckets"]) > 0
    ts = [b["t"] for b in pool["buckets"]]
    assert ts == sorted(ts) and all(t2 - t1 == 60 for t1, t2 in itertools.pairwise(ts)) and len(ts) >= 60
    status, key = await a.get(f"/usage?key={a.gw.ids[FIXTURE]}&resolution=hour")
    assert sum(b["requests"] for b in key["buckets"]) == 3 and len(key["buckets"]) >= 24
    status, every = await a.get("/usage")
    assert sum(b["requests"] for b in every["buckets"]) == 3
    status, other = await a.get("/usage?pool=other")
    assert sum(b["requests"] for b in other["buckets"]) == 0
    assert (await a.get("/usage?resolution=second"))[0] == 422


async def test_every_error_has_the_one_shape(make_admin):
    a = await make_admin()
    cases = [
        ("GET", "/nothing/here", None, 404),
        ("PUT", "/keys", None, 405),
        ("POST", "/keys", "{not json", 400),
        ("POST", "/keys", {"pool": "openai"}, 422),
        ("POST", "/keys", {"pool": "openai", "keys": [], "extra": 1}, 422),
        ("GET", "/keys?limit=0", None, 422),
        ("GET", "/keys?limit=abc", None, 422),
        ("GET", "/keys?sort=secret", None, 422),
        ("GET", "/keys?cursor=%%%", None, 404),
        ("GET", "/keys?cursor=WyJ4Il0", None, 200),  # a cursor of the right shape
        ("GET", "/keys?sort=since&cursor=WyJ4Il0", None, 404),  # ... but not of this sort
        ("GET", "/events?since=nan", None, 422),
        ("DELETE", "/tokens/tnope", None, 404),
        ("POST", "/tokens", {"name": "x"}, 409),  # a client token needs a pool
        ("POST", "/tokens", {"pools": ["openai"]}, 422),
        ("POST", "/tokens", {"name": "x", "pools": ["nope"]}, 404),
        ("POST", "/keys/bulk", {"action": "explode", "ids": ["k1"]}, 422),
    ]
    for method, path, body, want in cases:
        kw = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
        status, answer = await a.call(method, path, **kw)
        assert status == want, (method, path, status, answer)
        if want >= 400:
            assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "code"}, answer


async def test_tokens_are_created_once_listed_without_secrets_and_revoked(make_admin):
    a = await make_admin()
    status, made = await a.post("/tokens", {"name": "app", "pools": ["openai"]})
    assert status == 201 and made["token"].startswith("kr-")
    async with a.gw.post("/v1/chat/completions", token=made["token"], json=CHAT) as r:
        assert r.status == 200
    status, admin = await a.post("/tokens", {"name": "ops2", "admin": True})
    assert status == 201
    assert (await a.get("/pools", token=admin["token"]))[0] == 200
    assert (await a.post("/tokens", {"name": "app", "pools": ["*"]}))[0] == 409
    status, listed = await a.get("/tokens")
    assert [(t["name"], t["admin"], t["pools"]) for t in listed["data"]] == [
        ("ops", True, []), ("app", False, ["openai"]), ("ops2", True, []),
    ]
    assert made["token"] not in json.dumps(listed)
    own = next(t for t in listed["data"] if t["name"] == "ops")
    status, body = await a.delete(f"/tokens/{own['id']}")
    assert status == 409 and body["error"]["code"] == "own_token"
    assert (await a.delete(f"/tokens/{admin['id']}"))[0] == 204  # another admin token may go
    assert (await a.delete(f"/tokens/{made['id']}"))[0] == 204
    assert (await a.delete(f"/tokens/{made['id']}"))[0] == 404
    await asyncio.sleep(0.3)  # the gateway's sync (0.1 s) forgets cached tokens
    async with a.gw.post("/v1/chat/completions", token=made["token"], json=CHAT) as r:
        assert r.status == 401


async def test_shutting_down_ends_the_live_streams_at_once():
    import aiohttp
    from aiohttp import web

    from keyrelay.config import parse_settings
    from keyrelay.runtime.process import Runtime
    from keyrelay.server.app import GatewayRunner
    from keyrelay.stores import open_store
    from keyrelay.stores.base import hash_token

    settings = parse_settings({"store": {"url": "memory://"}, "pools": [{"name": "openai", "base_url": "http://127.0.0.1:9/v1"}]}, {})
    store = open_store(settings.store_url)
    await store.open()
    await store.create_token("ops", [], hash_token("kr-admin-shutdown-0000000001"), time.time(), admin=True)
    runner = GatewayRunner(Runtime(settings, store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": "Bearer kr-admin-shutdown-0000000001"}
        async with s.get(f"http://{host}:{port}{API}/events/stream", headers=headers) as resp:
            assert await resp.content.readline() == b": connected\n"
            t0 = time.monotonic()
            await runner.cleanup()
            assert time.monotonic() - t0 < 5  # not the 60 s shutdown timeout
            assert resp.content.at_eof() or await asyncio.wait_for(resp.content.read(), 5) is not None
