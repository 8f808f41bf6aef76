"""The dashboard's files: served under /admin/ by the gateway, with a strict CSP and the right
content types; nothing outside the shipped files is reachable; the proxy routes are untouched."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from keyrelay.config import parse_settings
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.server.dashboard import STATIC_DIR
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream

TOKEN = "kr-dashboard-static-token-0123456789"


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    fake = FakeUpstream({"sk-static-test-key-0001": Behavior.OK})
    base = await fake.start()
    settings = parse_settings({
        "store": {"url": "memory://"},
        "pools": [{"name": "openai", "base_url": base}],
        "tokens": [{"name": "t", "pools": ["openai"], "token": TOKEN}],
    }, {})
    store = open_store(settings.store_url)
    await store.open()
    await store.add_keys("openai", ["sk-static-test-key-0001"], 0.0)
    runner = GatewayRunner(Runtime(settings, store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()
    await fake.close()


def _csp(headers: Mapping[str, str]) -> dict[str, str]:
    raw = headers["Content-Security-Policy"]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in raw.split(";") if d.strip()}


async def test_index_and_assets_have_their_types_and_a_strict_csp(gateway: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway + "/admin/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            html = await r.text()
            csp = _csp(r.headers)
        assert csp["default-src"] == "'self'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'"
        assert "unsafe" not in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        # no inline script or style in the page: everything it runs is a file CSP allows
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert "<style" not in html and " style=" not in html
        types = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
                 "icon.svg": "image/svg+xml"}
        for name, ctype in types.items():
            async with s.get(gateway + "/admin/" + name) as r:
                assert r.status == 200, name
                assert r.headers["Content-Type"] == ctype
                assert "Content-Security-Policy" in r.headers
                assert await r.read() == (STATIC_DIR / name).read_bytes()


async def test_every_module_the_page_imports_is_served(gateway: str) -> None:
    """A missing module breaks the whole page: follow every import from app.js."""
    seen: set[str] = set()
    todo = ["app.js"]
    async with aiohttp.ClientSession() as s:
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            async with s.get(f"{gateway}/admin/{name}") as r:
                assert r.status == 200, name
                assert r.headers["Content-Type"].startswith("text/javascript")
                text = await r.text()
            todo += re.findall(r"from '\./([\w-]+\.js)'", text)
    assert {"app.js", "api.js", "keys.js", "overview.js", "tokens.js", "events.js", "key.js"} <= seen


async def test_no_path_reaches_outside_the_shipped_files(gateway: str, tmp_path: Path) -> None:
    attempts = [
        "/admin/../pyproject.toml", "/admin/%2e%2e/%2e%2e/pyproject.toml", "/admin/..%2fdashboard.py",
        "/admin/%2e%2e%2fdashboard.py", "/admin/../dashboard.py", "/admin//etc/passwd", "/admin/static/app.js",
        "/admin/.%2e/http.py", "/admin/app.js/", "/admin/app.js%00.html", "/admin/APP.JS", "/admin/%5c..%5chttp.py",
    ]
    async with aiohttp.ClientSession() as s:
        for path in attempts:
            async with s.get(gateway + path) as r:
                body = await r.read()
                assert r.status in (400, 404), (path, r.status)
                assert b"import" not in body and b"[build-system]" not in body and b"root:" not in body, path
        # a pasted key in the address is not echoed back
        async with s.get(gateway + "/admin/sk-proj-pasted0123456789abcdefXYZ") as r:
            assert r.status == 404 and b"pasted" not in await r.read()


async def test_writes_and_caching(gateway: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway + "/admin/app.js", data=b"x") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
        async with s.get(gateway + "/admin", allow_redirects=False) as r:
            assert r.status == 308 and r.headers["Location"] == "/admin/"
        async with s.get(gateway + "/admin/app.css") as r:
            etag = r.headers["ETag"]
            assert r.headers["Cache-Control"] == "no-cache"
        async with s.get(gateway + "/admin/app.css", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with s.head(gateway + "/admin/") as r:
            assert r.status == 200


async def test_the_proxy_and_healthz_still_answer(gateway: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway + "/v1/chat/completions", json={"model": "m", "messages": []},
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with s.get(gateway + "/healthz") as r:
            assert r.status == 200
        async with s.get(gateway + "/administrator") as r:  # not the dashboard: an unknown pool
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_pool"


def test_the_wheel_ships_the_files() -> None:
    """pyproject's package-data takes static/* (flat): the dashboard must stay one folder."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["keyrelay"]
    assert "server/static/*" in data
    assert not [p for p in STATIC_DIR.iterdir() if p.is_dir()], "sub-folders would not be packaged"
    assert (STATIC_DIR / "index.html").is_file()
