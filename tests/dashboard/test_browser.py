"""The dashboard in a real browser (headless chromium): sign in, page through 10,000 keys,
filter, disable from the UI and see the CLI agree, watch a key cool under traffic without a
reload, a phone-width layout. Screenshots land in artifacts/screenshots/."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from .conftest import BIG, CLIENT_TOKEN, INVALID, Page, Site


def _state_of(site: Site, pool: str, key_id: str) -> str:
    return next(k["state"] for k in site.keys_json(pool) if k["id"] == key_id)


def _summary(p: Page) -> str:
    return str(p.page.inner_text("#keys-summary"))


def _wait_summary(p: Page, text: str) -> None:
    p.page.wait_for_function("t => document.querySelector('#keys-summary')?.textContent.includes(t)", arg=text)


def test_a_page_answered_late_does_not_replace_the_page_asked_for_after_it(make_page: Any, site: Site) -> None:
    """Two clicks faster than the server: the first page's answer, held back until the second's
    is shown, must not overwrite the table (nor leave rows and summary of different pages)."""
    p = make_page()
    p.sign_in()
    p.go("keys?pool=big")
    _wait_summary(p, f"1–50 of {BIG:,} keys")
    first = p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    p.page.click("#next")
    _wait_summary(p, f"51–100 of {BIG:,} keys")
    p.page.click("#next")
    _wait_summary(p, f"101–150 of {BIG:,} keys")
    held: list[Any] = []

    def hold_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # page 2's answer waits

    p.page.route("**/admin/api/v1/keys?*", hold_first)
    p.page.click("#prev")  # page 2, held
    p.page.wait_for_function("() => document.querySelector('tbody').getAttribute('aria-busy') === 'true'")
    p.page.click("#prev")  # page 1, answered
    _wait_summary(p, f"1–50 of {BIG:,} keys")
    with p.page.expect_response("**/admin/api/v1/keys?*"):
        held[0].continue_()
    p.page.wait_for_timeout(200)  # the late answer has been handled
    assert p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)") == first
    assert f"1–50 of {BIG:,} keys" in p.page.text_content("#keys-summary")
    assert p.page.get_attribute("tbody", "aria-busy") is None
    p.page.unroute("**/admin/api/v1/keys?*")
    assert not p.errors, p.errors


def test_sign_in_refuses_a_bad_token_and_signs_out(make_page: Any, site: Site) -> None:
    p = make_page()
    p.page.goto(site.url + "/admin/")
    p.page.fill("#token", "kr-not-a-real-admin-token")
    p.page.click("form.signin button[type=submit]")
    p.page.wait_for_selector("form.signin .error:has-text('not a valid admin token')")
    assert p.page.input_value("#token") == ""  # the typed token does not stay in the page
    p.shot("signin-refused")
    # a client token is not an admin token
    p.page.fill("#token", CLIENT_TOKEN)
    p.page.click("form.signin button[type=submit]")
    p.page.wait_for_selector("form.signin .error:has-text('not a valid admin token')")

    p.sign_in()
    assert p.page.inner_text("#whoami") == "dash-admin"
    p.page.wait_for_selector(".pool[data-pool='big']")
    # the session survives a reload (cookie), and script cannot read the cookie (HttpOnly)
    p.page.reload()
    p.page.wait_for_selector(".pool[data-pool='big']")
    assert p.page.evaluate("document.cookie") == ""
    p.page.click("#signout")
    p.page.wait_for_selector("form.signin")
    # signed out for real: the API refuses this browser now
    assert p.page.evaluate("fetch('/admin/api/v1/pools').then(r => r.status)") == 401
    p.page.reload()
    p.page.wait_for_selector("form.signin")
    assert not p.errors, p.errors


def test_overview_shows_each_pool_by_state_and_its_traffic(make_page: Any, site: Site) -> None:
    sent = 12
    assert [_chat(site, "big") for _ in range(sent)] == [200] * sent
    p = make_page()
    p.sign_in()
    card = p.page.locator(".pool[data-pool='big']")
    # usage reaches the store within a flush or two; the page reads it at load
    end = time.time() + 20
    while True:
        card.locator(".chart").wait_for()
        shown = int(card.locator("[data-stat='requests-day']").inner_text().replace(",", ""))
        if shown >= sent or time.time() > end:
            break
        time.sleep(0.5)
        p.page.reload()
    assert shown >= sent
    assert float(card.locator("[data-stat='rps']").inner_text()) > 0
    assert int(card.locator("[data-stat='tokens-day']").inner_text().replace(",", "")) > 0
    assert card.locator(".chart rect.o-ok").count() >= 1  # the bar of this minute, as successes
    assert card.locator(".eligible").inner_text() == f"{BIG - INVALID:,} of {BIG:,} keys eligible"
    assert card.locator("a[data-state='invalid'] .n").inner_text() == str(INVALID)
    assert card.locator("a[data-state='active'] .n").inner_text() == f"{BIG - INVALID:,}"
    card.locator("button[data-span='day']").click()
    assert "last day" in (card.locator(".chart").get_attribute("aria-label") or "")
    p.shot("overview")
    # a state count leads to the keys table, filtered
    card.locator("a[data-state='invalid']").click()
    _wait_summary(p, f"of {INVALID} keys")
    assert not p.errors, p.errors


def test_page_through_ten_thousand_keys_and_filter_to_invalid(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    p.go("keys?pool=big")
    _wait_summary(p, f"1–50 of {BIG:,} keys")
    first = p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert len(first) == 50
    seen = set(first)
    for n in range(2, 5):
        p.page.click("#next")
        _wait_summary(p, f"{(n - 1) * 50 + 1}–{n * 50} of {BIG:,} keys")
        ids = p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
        assert len(ids) == 50 and not seen & set(ids)  # each page new keys
        seen |= set(ids)
    p.shot("keys-page-4", full=False)
    p.page.click("#prev")
    _wait_summary(p, f"101–150 of {BIG:,} keys")
    # sorted by id, the pages follow each other
    p.page.click("#prev")
    p.page.click("#prev")
    _wait_summary(p, f"1–50 of {BIG:,} keys")
    assert p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)") == first
    assert first == sorted(first)

    p.page.select_option("select[name='state']", "invalid")
    _wait_summary(p, f"1–{INVALID} of {INVALID} keys")
    states = p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.state)")
    assert states == ["invalid"] * INVALID
    assert sorted(p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")) == sorted(site.invalid_ids)
    assert "invalid_api_key" in p.page.inner_text("tbody tr[data-id] .state")
    assert "#/keys?pool=big&state=invalid" in p.page.url  # the filter is in the address: a reload keeps it
    p.shot("keys-invalid", full=False)
    # sort by a column header (again: the other way), select a whole page
    p.page.click("th button[data-sort='id']")
    p.page.wait_for_selector("th[aria-sort='descending'] button[data-sort='id']")
    p.page.wait_for_function("() => { const r = [...document.querySelectorAll('tbody tr[data-id]')].map(r => r.dataset.id);"
                             " return r.length > 1 && r[0] > r[r.length - 1]; }")
    assert "order=desc" in p.page.url
    p.page.click("th button[data-sort='id']")
    p.page.wait_for_selector("th[aria-sort='ascending'] button[data-sort='id']")
    p.page.check("th.sel input")
    assert p.page.inner_text("#selected-count") == f"{INVALID} selected"
    assert p.page.eval_on_selector_all("td.sel input", "els => els.every(e => e.checked)")
    p.page.uncheck("th.sel input")
    assert p.page.inner_text("#selected-count") == ""
    # search by the id's start: one key
    target = site.invalid_ids[3]
    p.page.fill("input[name='q']", target[:10])
    p.page.wait_for_function("id => [...document.querySelectorAll('tbody tr[data-id]')].every(r => r.dataset.id.startsWith(id.slice(0, 10)))", arg=target)
    assert target in p.page.eval_on_selector_all("tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert not p.errors, p.errors


def test_disable_from_the_ui_and_the_cli_agrees(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    secret = site.big[4321]
    key_id = site.ids[secret]
    assert _state_of(site, "big", key_id) == "active"
    p.go(f"keys/{key_id}")
    p.page.wait_for_selector(".keyhead .badge.s-active")
    assert p.page.inner_text(".keyhead h1") == f"{secret[:3]}…{secret[-4:]}" or secret[-4:] in p.page.inner_text(".keyhead h1")
    # cancelling the confirmation changes nothing
    p.page.click("button[data-action='disable']")
    p.page.click("dialog.confirm >> text=Cancel")
    assert _state_of(site, "big", key_id) == "active"
    p.page.click("button[data-action='disable']")
    p.shot("key-confirm-disable", full=False)
    p.page.click("dialog.confirm button[data-confirm]")
    p.page.wait_for_selector(".keyhead .badge.s-disabled")
    assert _state_of(site, "big", key_id) == "disabled"
    out = [k for k in site.keys_json("big") if k["id"] == key_id]
    assert out and out[0]["state"] == "disabled"
    # its timeline shows who did it
    p.page.wait_for_selector("#key-events .event:has-text('dash-admin')")
    p.shot("key-disabled")

    # bulk: two keys from the table, enable one and disable another, confirmed
    other = site.ids[site.big[4322]]
    p.go(f"keys?pool=big&q={key_id[:12]}")
    p.page.wait_for_selector(f"tbody tr[data-id='{key_id}']")
    p.page.check(f"tbody tr[data-id='{key_id}'] td.sel input")
    p.page.click("button[data-bulk='enable']")
    p.page.click("dialog.confirm button[data-confirm]")
    p.page.wait_for_selector(f"tbody tr[data-id='{key_id}'][data-state='active']")
    assert _state_of(site, "big", key_id) == "active"
    p.page.fill("input[name='q']", other[:12])
    p.page.wait_for_selector(f"tbody tr[data-id='{other}']")
    p.page.check(f"tbody tr[data-id='{other}'] td.sel input")
    assert p.page.inner_text("#selected-count") == "1 selected"
    p.page.click("button[data-bulk='disable']")
    assert "Disable 1 key?" in p.page.inner_text("dialog.confirm h2")
    p.page.click("dialog.confirm button[data-confirm]")
    p.page.wait_for_selector(f"tbody tr[data-id='{other}'][data-state='disabled']")
    assert _state_of(site, "big", other) == "disabled"
    assert not p.errors, p.errors


def test_remove_asks_first_and_the_key_is_gone(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    gone, kept = site.ids[site.spare[0]], site.ids[site.spare[1]]
    p.go("keys?pool=spare")
    p.page.wait_for_selector(f"tbody tr[data-id='{gone}']")
    p.page.check(f"tbody tr[data-id='{gone}'] td.sel input")
    p.page.click("button[data-bulk='remove']")
    assert "cannot be undone" in p.page.inner_text("dialog.confirm")
    p.page.click("dialog.confirm >> text=Cancel")
    assert gone in {k["id"] for k in site.keys_json("spare")}
    p.page.click("button[data-bulk='remove']")
    p.page.click("dialog.confirm button[data-confirm]")
    p.page.wait_for_selector(f"tbody tr[data-id='{gone}']", state="detached")
    _wait_summary(p, "of 2 keys")
    assert {k["id"] for k in site.keys_json("spare")} == {kept, site.ids[site.spare[2]]}
    assert not p.errors, p.errors


def _chat(site: Site, pool: str = "openai") -> int:
    req = urllib.request.Request(
        f"{site.url}/{pool}/v1/chat/completions",
        data=json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_key_cooling_under_traffic_shows_without_a_reload(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    limited = site.ids[site.live_limited]
    p.go("keys?pool=openai")
    row = f"tbody tr[data-id='{limited}']"
    p.page.wait_for_selector(f"{row}[data-state='active']")
    p.page.wait_for_selector("#live.live")  # the event stream is connected
    p.page.evaluate("window.__sameDocument = true")
    p.shot("live-before", full=False)
    # the overview, in a second tab, counts the cooling key as it happens
    overview = p.page.context.new_page()
    overview.goto(site.url + "/admin/#/overview")
    overview.wait_for_selector(".pool[data-pool='openai'] a[data-state='cooling'] .n:text-is('0')")
    overview.wait_for_selector("#live.live")
    overview.evaluate("window.__sameDocument = true")
    # traffic: round robin, so the rate-limited key is tried within two requests, and fails over
    statuses = [_chat(site) for _ in range(4)]
    assert statuses == [200] * 4
    p.page.wait_for_selector(f"{row}[data-state='cooling']", timeout=15_000)
    overview.wait_for_selector(".pool[data-pool='openai'] a[data-state='cooling'] .n:text-is('1')", timeout=15_000)
    assert overview.evaluate("window.__sameDocument") is True
    assert p.page.evaluate("window.__sameDocument") is True  # no reload happened
    cell = p.page.inner_text(f"{row} .state")
    assert "cooling" in cell and "until" in cell
    p.shot("live-cooling", full=False)
    # the live feed page lists the change too
    p.go("events")
    p.page.wait_for_selector(f"#feed .event[data-key='{limited}']:has-text('cooling')")
    p.page.select_option("select[name='pool']", "openai")
    p.page.wait_for_url("**/#/events?pool=openai")
    p.page.wait_for_selector(f"#feed .event[data-key='{limited}']:has-text('cooling')")
    pools = p.page.eval_on_selector_all("#feed .event .what > span.muted", "els => els.map(e => e.textContent)")
    assert pools and set(pools) == {"openai"}
    p.shot("events", full=False)
    assert not p.errors, p.errors


def test_a_cooling_key_coming_back_shows_without_a_reload(make_page: Any, site: Site) -> None:
    """Cooling ends by itself (no event is written for that): the row follows its "until"."""
    p = make_page()
    p.sign_in()
    limited = site.ids[site.brief[1]]
    row = f"tbody tr[data-id='{limited}']"
    p.go("keys?pool=brief")
    p.page.wait_for_selector(f"{row}[data-state='active']")
    p.page.wait_for_selector("#live.live")
    p.page.evaluate("window.__sameDocument = true")
    assert [_chat(site, "brief") for _ in range(2)] == [200, 200]
    p.page.wait_for_selector(f"{row}[data-state='cooling']", timeout=15_000)
    assert "until" in p.page.inner_text(f"{row} .state")
    p.page.wait_for_selector(f"{row}[data-state='active']", timeout=20_000)
    assert p.page.evaluate("window.__sameDocument") is True
    assert "until" not in p.page.inner_text(f"{row} .state")
    assert not p.errors, p.errors


def test_phone_width_layout(make_page: Any, site: Site) -> None:
    p = make_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    p.sign_in()
    routes = ["overview", "keys?pool=big", f"keys/{site.invalid_ids[0]}", "events", "tokens"]
    for route in routes:
        p.go(route)
        p.page.wait_for_selector("main h1, main .keyhead h1")
        p.page.wait_for_load_state("networkidle")
        width = p.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (route, width)  # nothing forces sideways scrolling
        p.shot("phone-" + route.split("?")[0].replace("/", "-")[:20], full=not route.startswith("keys?"))
    # the keys table turns into cards: no header row, each key's state readable
    p.go("keys?pool=big")
    p.page.wait_for_selector("tbody tr[data-id]")
    assert not p.page.is_visible("table.keys thead")
    box = p.page.locator("tbody tr[data-id]").first.bounding_box()
    assert box is not None and box["width"] <= 390
    assert p.page.is_visible("tbody tr[data-id] .badge")
    # the nav stays reachable
    p.page.click("nav a[data-route='tokens']")
    p.page.wait_for_selector("main h1:has-text('Tokens')")
    assert not p.errors, p.errors


def test_tokens_created_shown_once_and_revoked(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    p.go("tokens")
    p.page.wait_for_selector("table.tokens tr[data-id]")
    p.page.fill("input[name='name']", "ui-made")
    p.page.check("input[name='pools'][value='openai']")
    p.page.click("form.create button[type=submit]")
    token = p.page.inner_text("#created-token").strip()
    assert token and token not in site.secrets()
    p.shot("token-created", full=False)
    rows = json.loads(_cli_json(site, "tokens", "list", "--json"))
    made = next(t for t in rows if t["name"] == "ui-made")
    assert made["pools"] == ["openai"]
    # the token works for its pool
    req = urllib.request.Request(site.url + "/openai/v1/models", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    p.page.click("#dismiss-token")
    assert token not in p.page.content()
    p.go("overview")
    p.go("tokens")
    p.page.wait_for_selector("table.tokens tr[data-id]")
    assert token not in p.page.content()
    row = "table.tokens tr:has-text('ui-made') button[data-revoke]"
    p.page.click(row)
    p.page.click("dialog.confirm button[data-confirm]")
    p.page.wait_for_selector("table.tokens tr.revoked:has-text('ui-made')")
    rows = json.loads(_cli_json(site, "tokens", "list", "--json"))
    assert next(t for t in rows if t["name"] == "ui-made")["revoked_at"]
    assert not p.errors, p.errors


def _cli_json(site: Site, *args: str) -> str:
    from .conftest import cli

    out = cli(site.config, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_no_key_or_token_in_any_page(make_page: Any, site: Site) -> None:
    p = make_page()
    p.sign_in()
    secrets = site.secrets()
    routes = ["overview", "keys?pool=big", "keys?pool=big&state=invalid", "keys?pool=openai",
              f"keys/{site.ids[site.live_limited]}", f"keys/{site.invalid_ids[1]}", "events", "tokens"]
    pages = 0
    for route in routes:
        p.go(route)
        p.page.wait_for_selector("main h1, main .keyhead h1")
        p.page.wait_for_load_state("networkidle")
        texts = [p.page.content(), p.page.evaluate("document.body.innerText"),
                 p.page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage}) + document.cookie")]
        for text in texts:
            leaked = [s for s in secrets if s in text]
            assert not leaked, (route, [s[:6] + "…" for s in leaked])
        pages += 1
    assert pages == len(routes)
    # and what the page fetched (the API answers it renders) holds none either
    bodies = p.page.evaluate("""async () => {
        const out = [];
        for (const u of ['/admin/api/v1/keys?pool=big&limit=500', '/admin/api/v1/keys?pool=openai', '/admin/api/v1/events?limit=500', '/admin/api/v1/tokens'])
          out.push(await (await fetch(u)).text());
        return out.join('\\n');
    }""")
    assert not [s for s in secrets if s in bodies]


def test_time_to_render_a_page_of_keys(make_page: Any, site: Site) -> None:
    """Paging a 10,000-key pool stays quick: each page of 50 in well under two seconds."""
    p = make_page()
    p.sign_in()
    p.go("keys?pool=big")
    _wait_summary(p, f"1–50 of {BIG:,}")
    t0 = time.perf_counter()
    for n in range(2, 7):
        p.page.click("#next")
        _wait_summary(p, f"{(n - 1) * 50 + 1}–{n * 50} of")
    assert (time.perf_counter() - t0) / 5 < 2.0
