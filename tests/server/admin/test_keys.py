"""Keys through the admin API: added and shown masked only, filtered, searched, sorted and paged;
disabled, enabled, rechecked and removed through the same store paths as the CLI, with the
admin's name in the events."""

from __future__ import annotations

from keyrelay.testing.fake_upstream import Behavior

from .conftest import Admin

FIXTURE = "sk-admin-fixture-key-000000000001"
NEW = [f"sk-proj-AdminApiNewKey{i:04d}Tail{i:04d}" for i in range(30)]
PLAIN = "0123456789abcdef0123456789abWXYZ"  # a key without any recognisable prefix


def assert_no_secret(a: Admin, secrets: list[str]) -> None:
    blob = b"\n".join(a.answers)
    for s in secrets:
        assert s.encode() not in blob, "a full key appeared in an admin API answer"
        assert s[:-4].encode() not in blob


async def test_adding_answers_ids_and_masked_forms_and_no_answer_holds_a_full_key(make_admin):
    a = await make_admin()
    status, body = await a.post("/keys", {"pool": "openai", "keys": [*NEW[:3], PLAIN, NEW[0]], "label": "batch"})
    assert status == 201
    assert [x["masked"] for x in body["added"]] == ["sk-proj-…0000", "sk-proj-…0001", "sk-proj-…0002", "…WXYZ"]
    assert body["duplicates"] == []
    status, again = await a.post("/keys", {"pool": "openai", "keys": [NEW[1]]})
    assert status == 201 and again["added"] == [] and again["duplicates"] == [body["added"][1]["id"]]
    status, imported = await a.post("/keys/import", {"pool": "openai", "text": "\n".join([
        "# a comment", "", NEW[3], "bad key with spaces", NEW[3], NEW[0],
    ])})
    assert status == 201
    assert [x["masked"] for x in imported["added"]] == ["sk-proj-…0003"]
    assert imported["duplicates"] == [body["added"][0]["id"]]
    assert [(r["line"], "repeats line 3" in r["why"]) for r in imported["refused"]] == [(4, False), (5, True)]
    # read everything back, every way
    await a.get("/keys?limit=500")
    await a.get("/keys?q=WXYZ")
    for x in body["added"]:
        await a.get(f"/keys/{x['id']}")
        await a.get(f"/keys/{x['id']}/events")
    await a.get("/events")
    await a.post("/keys/bulk", {"action": "disable", "ids": [x["id"] for x in body["added"]]})
    assert_no_secret(a, [*NEW[:4], PLAIN, FIXTURE])
    stored = {r.id: r for r in await a.gw.store.load("openai")}
    assert stored[body["added"][3]["id"]].secret == PLAIN and stored[body["added"][3]["id"]].label == "batch"


async def test_a_bad_key_value_is_refused_without_echoing_it(make_admin):
    a = await make_admin()
    status, body = await a.post("/keys", {"pool": "openai", "keys": ["sk-ok-key-000000000001", "sk-has space-0001"]})
    assert status == 422 and "sk-has space" not in str(body)
    status, body = await a.post("/keys", {"pool": "nope", "keys": ["sk-ok-key-000000000001"]})
    assert status == 404 and body["error"]["code"] == "pool_not_found"
    assert len(await a.gw.store.load()) == 1  # nothing added


async def test_search_filter_sort_and_page_through_every_key(make_admin):
    a = await make_admin()
    await a.post("/keys", {"pool": "openai", "keys": NEW})
    await a.post("/keys", {"pool": "other", "keys": [PLAIN]})
    seen: list[str] = []
    cursor = None
    while True:
        status, page = await a.get("/keys?pool=openai&limit=7" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and page["total"] == 31
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 31 and seen == sorted(seen) and len(set(seen)) == 31
    status, page = await a.get("/keys?sort=id&order=desc&limit=500")
    every = [k["id"] for k in page["data"]]
    assert every == sorted(every, reverse=True) and set(seen) < set(every) and page["total"] == 32
    status, found = await a.get("/keys?q=0007")  # the masked tail
    assert [k["masked"] for k in found["data"]] == ["sk-proj-…0007"]
    some = seen[5]
    status, found = await a.get(f"/keys?q={some[:6]}")  # an id prefix
    assert some in [k["id"] for k in found["data"]]
    status, found = await a.get(f"/keys?q={NEW[7][:-4]}")  # more than the tail: never matched on the secret
    assert found["data"] == []
    status, other = await a.get("/keys?pool=other")
    assert [k["masked"] for k in other["data"]] == ["…WXYZ"]
    await a.post(f"/keys/{seen[0]}/disable")
    status, disabled = await a.get("/keys?state=disabled")
    assert [k["id"] for k in disabled["data"]] == [seen[0]] and disabled["total"] == 1
    status, by_reason = await a.get("/keys?reason=disabled%20by")
    assert [k["id"] for k in by_reason["data"]] == [seen[0]]
    status, by_state = await a.get("/keys?sort=state&order=desc&limit=1")
    assert by_state["data"][0]["state"] == "disabled"  # 'disabled' sorts after 'active'


async def test_disable_enable_remove_go_through_the_store_with_the_admins_name(make_admin):
    a = await make_admin()
    (kid,) = a.gw.ids.values()
    status, key = await a.post(f"/keys/{kid}/disable")
    assert status == 200 and key["state"] == "disabled" and key["reason"] == "disabled by a person"
    stored = await a.gw.store.get(kid)
    assert stored is not None and stored.state.value == "disabled"
    assert a.gw.runtime.pools["openai"].state.get(kid).state.value == "disabled"  # the gateway at once
    status, key = await a.post(f"/keys/{kid}/disable")  # already: no new event
    assert status == 200 and key["state"] == "disabled"
    status, key = await a.post(f"/keys/{kid}/enable")
    assert key["state"] == "active"
    status, evs = await a.get(f"/keys/{kid}/events")
    assert [(e["from"], e["to"], e["actor"]) for e in evs["data"]] == [
        ("disabled", "active", "ops"), ("active", "disabled", "ops"), ("", "active", "admin"),
    ]
    status, _ = await a.delete(f"/keys/{kid}")
    assert status == 204
    assert await a.gw.store.get(kid) is None
    status, body = await a.get(f"/keys/{kid}")
    assert status == 404 and body["error"]["code"] == "key_not_found"
    assert (await a.delete(f"/keys/{kid}"))[0] == 404
    status, evs = await a.get(f"/keys/{kid}/events?limit=1")
    assert [(e["to"], e["actor"]) for e in evs["data"]] == [("removed", "ops")] and evs["next_cursor"]


async def test_bulk_reports_each_key(make_admin):
    a = await make_admin()
    status, body = await a.post("/keys", {"pool": "openai", "keys": NEW[:3]})
    ids = [x["id"] for x in body["added"]]
    status, res = await a.post("/keys/bulk", {"action": "disable", "ids": [*ids, "knope"]})
    assert status == 200
    assert res["results"] == [*({"id": i, "ok": True} for i in ids), {"id": "knope", "ok": False, "error": "key_not_found"}]
    status, res = await a.post("/keys/bulk", {"action": "remove", "ids": ids[:2]})
    assert all(r["ok"] for r in res["results"])
    assert {r.id for r in await a.gw.store.load("openai")} == {ids[2], *a.gw.ids.values()}


async def test_recheck_probes_the_key_now(make_admin):
    bad = "sk-invalid-key-for-recheck-0000001"
    a = await make_admin({FIXTURE: Behavior.OK, bad: Behavior.INVALID})
    kid = a.gw.ids[bad]
    status, key = await a.post(f"/keys/{kid}/recheck")
    assert status == 200 and key["state"] == "invalid"
    stored = await a.gw.store.get(kid)
    assert stored is not None and stored.state.value == "invalid"
    status, ok = await a.post(f"/keys/{a.gw.ids[FIXTURE]}/recheck")
    assert ok["state"] == "active"


async def test_check_dry_run_changes_nothing_and_a_real_sweep_does(make_admin):
    bad = "sk-invalid-key-for-check-00000001"
    a = await make_admin({FIXTURE: Behavior.OK, bad: Behavior.INVALID})
    status, dry = await a.post("/check", {"pool": "openai", "dry_run": True})
    assert status == 200 and dry["dry_run"] is True
    rows = {r["id"]: r for r in dry["results"]}
    assert rows[a.gw.ids[bad]]["after"] == "invalid" and rows[a.gw.ids[FIXTURE]]["after"] == "active"
    assert (await a.gw.store.get(a.gw.ids[bad])).state.value == "active"
    status, real = await a.post("/check", {})
    assert status == 200
    assert (await a.gw.store.get(a.gw.ids[bad])).state.value == "invalid"
    assert real["dry_run"] is False and any(r["changed"] for r in real["results"])
    assert (await a.post("/check", {"pool": "nope"}))[0] == 404


async def test_a_key_pasted_where_an_id_or_a_name_goes_is_not_echoed(make_admin):
    a = await make_admin()
    pasted = FIXTURE
    for method, path, body in [
        ("GET", f"/keys/{pasted}", None), ("POST", f"/keys/{pasted}/disable", None), ("DELETE", f"/keys/{pasted}", None),
        ("GET", f"/keys?pool={pasted}", None), ("GET", f"/usage?pool={pasted}", None), ("DELETE", f"/tokens/{pasted}", None),
        ("GET", f"/nothing/{pasted}", None), ("POST", "/keys/bulk", {"action": pasted, "ids": ["k1"]}),
        ("GET", f"/keys?state={pasted}", None), ("POST", "/keys", {"pool": pasted, "keys": [pasted]}),
        ("GET", f"/keys?cursor={pasted}", None),
    ]:
        status, _ = await a.call(method, path, json=body)
        assert 400 <= status < 500
    assert_no_secret(a, [pasted])
