"""A page on another site (or another origin of this one) cannot make a signed-in admin's
browser change anything: plain form posts carry no CSRF header, and the session cookie is
SameSite=Strict."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .conftest import Site, cli


def _evil_pages(site: Site, key_id: str) -> dict[str, str]:
    """Auto-submitting forms aimed at the admin API: no body, urlencoded, and text/plain
    shaped to parse as JSON (``{"action":"disable","ids":[…],"x":"="}``)."""
    api = site.url + "/admin/api/v1"
    text_json = '{"action":"disable","ids":["' + key_id + '"],"x":"'
    token_json = '{"name":"evil","pools":[],"admin":true,"x":"'

    def page(form: str) -> str:
        return (f"<!doctype html><html><body>{form}"
                "<script>document.forms[0].submit()</script></body></html>")

    return {
        "/disable": page(f'<form method="post" action="{api}/keys/{key_id}/disable"></form>'),
        "/bulk": page(f'<form method="post" enctype="text/plain" action="{api}/keys/bulk">'
                      f"<input name='{text_json}' value='\"}}'></form>"),
        "/bulk-urlencoded": page(f'<form method="post" action="{api}/keys/bulk">'
                                 f'<input name="action" value="remove"><input name="ids" value="{key_id}"></form>'),
        "/token": page(f'<form method="post" enctype="text/plain" action="{api}/tokens">'
                       f"<input name='{token_json}' value='\"}}'></form>"),
        # sign-in with a forged body: refused (and a form cannot send DELETE to sign anyone out)
        "/session": page(f'<form method="post" enctype="text/plain" action="{api}/session">'
                         f"<input name='{{\"token\":\"kr-forged\",\"x\":\"' value='\"}}'></form>"),
    }


@pytest.fixture
def evil(site: Site) -> Iterator[Any]:
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield pages, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-origin"])
def test_a_cross_site_form_post_changes_nothing(make_page: Any, site: Site, evil: Any, host: str) -> None:
    pages, port = evil
    key_id = site.ids[site.big[777]]
    pages.update(_evil_pages(site, key_id))
    tokens_before = json.loads(cli(site.config, "tokens", "list", "--json").stdout)
    p = make_page()
    p.sign_in()
    for path in pages:
        with p.page.expect_response(lambda r: r.request.method == "POST" and "/admin/api/v1/" in r.url) as answer:
            p.page.goto(f"http://{host}:{port}{path}")
        body = answer.value.json()
        if path == "/session":
            assert 400 <= answer.value.status < 500 and "error" in body
            continue
        assert answer.value.status in (401, 403), (path, answer.value.status)
        # another site: the SameSite=Strict cookie is not even sent; this site's other origin: the
        # cookie is, but a form cannot send the X-CSRF-Token header
        want = "admin_auth_required" if host == "localhost" else "csrf_failed"
        assert body["error"]["code"] == want, (path, body)
    assert next(k for k in site.keys_json("big") if k["id"] == key_id)["state"] == "active"
    assert json.loads(cli(site.config, "tokens", "list", "--json").stdout) == tokens_before
    # and the admin is still signed in: the dashboard works in the same browser
    p.go("keys?pool=big")
    p.page.wait_for_selector("tbody tr[data-id]")
