"""Who may use the admin API: admin tokens and signed session cookies; never a client token; a
write with the cookie needs the CSRF header (a cross-site form post cannot change anything)."""

from __future__ import annotations

import asyncio
import time

from keyrelay.server.admin import AdminApi
from keyrelay.stores.base import hash_token

from .conftest import ADMIN, TOKEN

KEY = "sk-auth-test-key-0000000000000001"


async def test_no_token_is_401_and_a_client_token_is_403(make_admin):
    a = await make_admin()
    status, body = await a.get("/pools", token=None)
    assert status == 401 and body["error"]["code"] == "admin_auth_required"
    assert set(body["error"]) == {"message", "type", "code"}
    status, body = await a.get("/pools", token=TOKEN)  # a client token declared in the config
    assert status == 403 and body["error"]["code"] == "admin_only"
    await a.gw.store.create_token("app", ["openai"], hash_token("kr-store-client-token-1"), time.time())
    status, body = await a.get("/keys", token="kr-store-client-token-1")
    assert status == 403 and body["error"]["code"] == "admin_only"
    status, body = await a.get("/pools", token="kr-never-issued-token")
    assert status == 401
    status, _ = await a.get("/pools")
    assert status == 200


async def test_a_revoked_admin_token_stops_working(make_admin):
    a = await make_admin()
    assert (await a.get("/pools"))[0] == 200
    await a.gw.store.revoke_token("ops", time.time())
    deadline = time.monotonic() + 5  # a token lookup is trusted for 2 s
    while (await a.get("/pools"))[0] == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert (await a.get("/pools"))[0] == 401


def _cookie(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {p.split("=")[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts[1:]}
    return {"name": name, "value": value, **attrs}


async def test_sign_in_sets_a_strict_httponly_cookie_and_writes_need_the_csrf_header(make_admin):
    a = await make_admin()
    gw = a.gw
    async with gw.session.post(gw.url + "/admin/api/v1/session", json={"token": ADMIN}) as resp:
        assert resp.status == 200
        who = await resp.json()
        cookie = _cookie(resp.headers["Set-Cookie"])
    assert who["name"] == "ops" and len(who["csrf"]) >= 20
    assert cookie["name"] == "keyrelay_admin" and ADMIN not in cookie["value"]
    assert "httponly" in cookie and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
    jar = {"Cookie": f"keyrelay_admin={cookie['value']}"}
    # the cookie alone reads
    status, me = await a.get("/session", token=None, headers=jar)
    assert status == 200 and me == who
    # ... but a write without the CSRF header (a cross-site form post) is refused, and changes nothing
    status, body = await a.post("/keys", {"pool": "openai", "keys": [KEY]}, token=None, headers=jar)
    assert status == 403 and body["error"]["code"] == "csrf_failed"
    status, body = await a.call("POST", "/keys", token=None, data="pool=openai&keys=x",
                                headers={**jar, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    assert await gw.store.load("openai") and all(r.secret != KEY for r in await gw.store.load("openai"))
    status, body = await a.post("/keys", {"pool": "openai", "keys": [KEY]}, token=None,
                                headers={**jar, "X-CSRF-Token": "wrong"})
    assert status == 403
    status, body = await a.post("/keys", {"pool": "openai", "keys": [KEY]}, token=None,
                                headers={**jar, "X-CSRF-Token": who["csrf"]})
    assert status == 201
    # sign-out clears the cookie
    async with gw.session.delete(gw.url + "/admin/api/v1/session", headers=jar) as resp:
        assert resp.status == 204
        cleared = _cookie(resp.headers["Set-Cookie"])
    assert cleared["value"] == "" and cleared["max-age"] == "0"


async def test_a_session_made_by_one_worker_is_accepted_by_another(make_admin):
    a = await make_admin()
    first = AdminApi(a.gw.runtime)  # another process would build its own: nothing shared but the store
    rec = await first.ctx.auth.admin_of(ADMIN)
    value = first.ctx.auth.session_for(rec)
    other = AdminApi(a.gw.runtime)
    checked = await other.ctx.auth.check_session(value)
    assert checked is not None and checked.name == "ops"
    assert other.ctx.auth.csrf_for(checked, value) == first.ctx.auth.csrf_for(rec, value)
    status, me = await a.get("/session", token=None, headers={"Cookie": f"keyrelay_admin={value}"})
    assert status == 200 and me["name"] == "ops"  # and the running gateway, a third one, too


async def test_a_forged_expired_or_revoked_session_is_refused(make_admin):
    a = await make_admin()
    auth = AdminApi(a.gw.runtime).ctx.auth
    rec = await auth.admin_of(ADMIN)
    value = auth.session_for(rec)
    tid, expires, sig = value.split(".")
    for bad in (f"{tid}.{int(expires) + 1000}.{sig}", f"{tid}.{expires}.{sig[:-2]}AA", "garbage", f"{tid}.1.{sig}"):
        status, body = await a.get("/session", token=None, headers={"Cookie": f"keyrelay_admin={bad}"})
        assert status == 401 and body["error"]["code"] == "admin_auth_required", bad
    old = auth.session_for(rec, now=time.time() - 13 * 3600)  # made 13 hours ago: expired after 12
    assert (await a.get("/session", token=None, headers={"Cookie": f"keyrelay_admin={old}"}))[0] == 401
    assert (await a.get("/session", token=None, headers={"Cookie": f"keyrelay_admin={value}"}))[0] == 200
    await a.gw.store.revoke_token("ops", time.time())
    fresh = AdminApi(a.gw.runtime).ctx.auth  # no cached lookups
    assert await fresh.check_session(value) is None


async def test_sign_in_with_a_client_token_or_garbage_is_refused(make_admin):
    a = await make_admin()
    assert (await a.post("/session", {"token": TOKEN}, token=None))[0] == 403
    assert (await a.post("/session", {"token": "nope"}, token=None))[0] == 401
    status, body = await a.post("/session", {"tok": "nope"}, token=None)
    assert status == 422 and body["error"]["type"] == "invalid_request_error"
