"""The admin API on each store (memory, SQLite, a real Redis with a unique prefix): add, act,
history, usage — what the other tests check on memory only."""

from __future__ import annotations

import pytest

from keyrelay.testing.fake_upstream import Behavior

from .conftest import TOKEN

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
NEW = ["sk-proj-StoresAdminKey0001TailAAAA", "sk-proj-StoresAdminKey0002TailBBBB"]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'k.db'}"


async def test_the_admin_api_on_every_store(make_admin, store_url):
    a = await make_admin(store_url=store_url)
    status, body = await a.post("/keys", {"pool": "openai", "keys": NEW})
    assert status == 201 and [x["masked"] for x in body["added"]] == ["sk-proj-…AAAA", "sk-proj-…BBBB"]
    first = body["added"][0]["id"]
    assert (await a.post(f"/keys/{first}/disable"))[1]["state"] == "disabled"
    a.gw.fake.set(NEW[1], Behavior.OK)  # the fake upstream accepts the new key too
    for _ in range(4):
        async with a.gw.post("/v1/chat/completions", token=TOKEN, json=CHAT) as r:
            assert r.status == 200
    await a.gw.runtime.flush()
    status, evs = await a.get(f"/events?key={first}")
    assert [(e["to"], e["actor"]) for e in evs["data"]] == [("disabled", "ops"), ("active", "ops")]
    status, page = await a.get("/events?pool=openai&limit=2")
    assert len(page["data"]) == 2 and page["next_cursor"]
    status, rest = await a.get(f"/events?pool=openai&limit=50&cursor={page['next_cursor']}")
    status, every = await a.get("/events?pool=openai&limit=500")
    assert [e["id"] for e in page["data"] + rest["data"]] == [e["id"] for e in every["data"]]
    assert len(every["data"]) == 4  # three added, one disabled
    for resolution in ("minute", "hour"):
        status, usage = await a.get(f"/usage?pool=openai&resolution={resolution}")
        sums = {o: sum(b["outcomes"][o] for b in usage["buckets"]) for o in ("ok", "invalid_key")}
        assert (sum(b["requests"] for b in usage["buckets"]), sums) == (4, {"ok": 4, "invalid_key": 0})
    status, keys = await a.get("/keys?sort=requests&order=desc&limit=1")
    assert keys["data"][0]["counters"]["requests"] >= 2 and keys["total"] == 3
    status, tokens = await a.get("/tokens")
    assert [(t["name"], t["admin"]) for t in tokens["data"]] == [("ops", True)]
