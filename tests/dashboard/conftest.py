"""Real-browser fixtures: Debian's chromium driven by Playwright, against `keyrelay serve` (a
child process on a SQLite store) in front of the project's fake upstream.

Playwright's own browser download is not used (it is not reachable here): the system
``chromium`` is launched by path. Without it (or without the ``playwright`` package) the browser
tests skip, saying why — except under ``CI=true``, where they fail instead (``.ci/run`` installs
chromium). Screenshots go to ``artifacts/screenshots/`` (git-ignored), or to
``$KEYRELAY_SCREENSHOTS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keyrelay.core.machine import on_outcome
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.policy import CoolingPolicy
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BIG = 10_000  # keys in the pool "big"
INVALID = 25  # of which retired as invalid
CLIENT_TOKEN = "kr-dash-client-" + secrets.token_hex(12)


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not shutil.which("chromium"):
        return "no chromium on PATH (apt-get install -y chromium)"
    return None


def screenshots_dir() -> Path:
    d = Path(os.environ.get("KEYRELAY_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyrelay.cli.main", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )


class ThreadedUpstream:
    """The fake upstream on its own loop in a thread (the browser tests are synchronous)."""

    def __init__(self, keys: dict[str, Behavior | KeySpec]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake: FakeUpstream = asyncio.run_coroutine_threadsafe(self._make(keys), self.loop).result(30)
        self.url = self.fake.url

    async def _make(self, keys: dict[str, Behavior | KeySpec]) -> FakeUpstream:
        fake = FakeUpstream(keys)
        await fake.start()
        return fake

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Site:
    """A running gateway with its dashboard, and what the tests need to know about it."""

    url: str
    config: Path
    admin_token: str
    big: list[str]  # the pool "big"'s secrets
    invalid_ids: list[str]
    live_ok: str  # pool "openai": a key that answers
    live_limited: str  # pool "openai": a key that answers 429 with a retry-after
    spare: list[str]  # pool "spare": keys a test may remove
    brief: list[str]  # pool "brief": an OK key and one rate limited for 3 s, then OK
    ids: dict[str, str] = field(default_factory=dict)  # secret -> id

    def secrets(self) -> list[str]:
        return [*self.big, *self.spare, *self.brief, self.live_ok, self.live_limited, self.admin_token, CLIENT_TOKEN]

    def keys_json(self, pool: str) -> list[dict[str, Any]]:
        out = cli(self.config, "keys", "list", "--pool", pool, "--json")
        assert out.returncode == 0, out.stderr
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows


async def _seed(
    store_url: str, big: list[str], live: list[str], spare: list[str], brief: list[str], cooling: CoolingPolicy
) -> tuple[dict[str, str], list[str]]:
    store = open_store(store_url)
    await store.open()
    try:
        now = time.time()
        ids = {r.secret: r.id for r in (await store.add_keys("big", big, now)).added}
        ids.update({r.secret: r.id for r in (await store.add_keys("openai", live, now)).added})
        ids.update({r.secret: r.id for r in (await store.add_keys("spare", spare, now)).added})
        ids.update({r.secret: r.id for r in (await store.add_keys("brief", brief, now)).added})
        # retire some keys of the big pool the way traffic does (the state machine, an event each)
        verdict = Verdict(Outcome.INVALID_KEY, 401, "invalid_api_key", "Incorrect API key provided", reason="invalid_api_key")
        invalid = []
        for secret in big[:: BIG // INVALID][:INVALID]:
            rec = await store.get(ids[secret])
            assert rec is not None
            t = on_outcome(rec, verdict, rec.version, cooling, now)
            assert t is not None and await store.apply(t) is not None
            invalid.append(ids[secret])
        return ids, invalid
    finally:
        await store.close()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    why = _why_no_browser()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {why}")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("dashboard")
    # keys without the sk- prefix too: the page must hide them without guessing their shape
    big = [f"bk{i:05d}{secrets.token_hex(10)}" for i in range(BIG)]
    live_ok = "sk-dash-ok-" + secrets.token_hex(12)
    live_limited = "dash-limited-" + secrets.token_hex(12)
    spare = [f"spare-{i}-" + secrets.token_hex(12) for i in range(3)]
    brief = ["brief-ok-" + secrets.token_hex(12), "brief-limited-" + secrets.token_hex(12)]
    upstream = ThreadedUpstream({
        live_ok: Behavior.OK,
        live_limited: KeySpec(Behavior.RATE_LIMITED, retry_after=300),
        brief[0]: Behavior.OK,
        brief[1]: KeySpec(Behavior.RATE_LIMITED, retry_after=3, rate_limit_for=3),
        **{s: Behavior.OK for s in big},
    })
    port = free_port()
    db = tmp / "keyrelay.db"
    config = tmp / "keyrelay.toml"
    config.write_text(
        f'[server]\nport = {port}\nsync_interval = 0.2\nflush_interval = 0.2\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream.url}"\nstrategy = "round_robin"\n'
        f'[[pools]]\nname = "big"\nbase_url = "{upstream.url}"\n'
        f'[[pools]]\nname = "spare"\nbase_url = "{upstream.url}"\n'
        f'[[pools]]\nname = "brief"\nbase_url = "{upstream.url}"\nstrategy = "round_robin"\n'
        f'[[tokens]]\nname = "app"\npools = ["openai", "big", "brief"]\ntoken = "{CLIENT_TOKEN}"\n'
    )
    ids, invalid = asyncio.run(_seed(f"sqlite:///{db}", big, [live_ok, live_limited], spare, brief, CoolingPolicy()))
    made = cli(config, "tokens", "create", "dash-admin", "--admin")
    assert made.returncode == 0, made.stderr
    admin_token = made.stdout.strip().splitlines()[-1].strip()
    log = tmp / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=0.5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > end or proc.poll() is not None:
                    raise RuntimeError(f"gateway did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield Site(url, config, admin_token, big, invalid, live_ok, live_limited, spare, brief, ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        upstream.close()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    # per module, not per session: sync Playwright keeps an event loop marked running in this
    # thread while it is open, which would break the asyncio tests of other modules
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A Playwright page on the dashboard, collecting script errors (there must be none)."""

    def __init__(self, page: Any, site: Site) -> None:
        self.page, self.site = page, site
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", self._console)
        page.set_default_timeout(20_000)

    def _console(self, m: Any) -> None:
        # refusals the tests ask for (a bad token, a signed-out browser) are logged by chromium too
        if m.type == "error" and not re.search(r"status of 40[13] ", m.text):
            self.errors.append(m.text)

    def sign_in(self, token: str | None = None) -> None:
        self.page.goto(self.site.url + "/admin/")
        self.page.fill("#token", token or self.site.admin_token)
        self.page.click("form.signin button[type=submit]")
        self.page.wait_for_selector("header.top nav")

    def go(self, route: str) -> None:
        self.page.goto(f"{self.site.url}/admin/#/{route}")

    def shot(self, name: str, full: bool = True) -> Path:
        path = screenshots_dir() / f"{name}.png"
        if not full:
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=full)
        return path


@pytest.fixture
def make_page(browser: Any, site: Site) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(**kw: Any) -> Page:
        ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **kw})
        contexts.append(ctx)
        return Page(ctx.new_page(), site)

    yield make
    for ctx in contexts:
        ctx.close()
