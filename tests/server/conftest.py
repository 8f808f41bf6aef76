"""Fixtures for gateway tests: a fake upstream and a gateway in front of it, in process."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from keyrelay.config import Settings, parse_settings
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import Store, open_store
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

TOKEN = "kr-test-token-abcdefghijklmnop"
#: the HTTP layers the gateway tests run on: both (the lean default, keyrelay.http1, and the
#: aiohttp fallback), or the one ``KEYRELAY_ENGINE`` names
ENGINES = [os.environ["KEYRELAY_ENGINE"]] if os.environ.get("KEYRELAY_ENGINE") else ["lean", "aiohttp"]
OTHER_POOL_TOKEN = "kr-test-other-pool-token-xyz"


class Gateway:
    """A running gateway: its URL, runtime, store and the fake upstream behind it."""

    def __init__(self, url: str, runtime: Runtime, fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.runtime = runtime
        self.store = runtime.store
        self.fake = fake
        self.session = session
        self.ids: dict[str, str] = {}

    def post(self, path: str, token: str | None = TOKEN, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.post(self.url + path, headers=headers, **kw)

    def get(self, path: str, token: str | None = TOKEN, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.get(self.url + path, headers=headers, **kw)

    def state(self, secret: str) -> str:
        rec = self.runtime.pools["openai"].state.get(self.ids[secret])
        assert rec is not None
        return rec.state.value

    async def stored(self, secret: str) -> Any:
        return await self.store.get(self.ids[secret])


GatewayFactory = Callable[..., Any]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The ``[server] engine`` of the gateways a test makes."""
    return str(request.param)


@pytest.fixture
async def make_gateway(tmp_path: Any, engine: str) -> AsyncIterator[GatewayFactory]:
    made: list[tuple[GatewayRunner, FakeUpstream, aiohttp.ClientSession]] = []

    async def make(
        keys: Mapping[str, Behavior | KeySpec],
        *,
        store_url: str = "memory://",
        pool: Mapping[str, Any] | None = None,
        server: Mapping[str, Any] | None = None,
        fake_kw: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Gateway:
        fake = FakeUpstream(dict(keys), **(fake_kw or {}))
        base = await fake.start()
        doc = {
            "server": {"sync_interval": 0.1, "flush_interval": 0.1, "engine": engine, **(server or {})},
            "store": {"url": store_url},
            "pools": [
                {"name": "openai", "base_url": base, **(pool or {})},
                {"name": "other", "base_url": base},
            ],
            "tokens": [
                {"name": "test", "pools": ["openai"], "token": TOKEN},
                {"name": "other", "pools": ["other"], "token": OTHER_POOL_TOKEN},
            ],
            **(extra or {}),  # e.g. [metrics], [[alerts]]
        }
        settings: Settings = parse_settings(doc, {})
        store: Store = open_store(settings.store_url)
        await store.open()
        added = await store.add_keys("openai", list(keys), time.time())
        runtime = Runtime(settings, store)
        runner = GatewayRunner(runtime)
        await runner.setup()
        if settings.server.engine == "lean":
            from keyrelay.server.app import lean_site

            site: web.BaseSite = lean_site(runner, "127.0.0.1", 0)
        else:
            site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession()
        made.append((runner, fake, session))
        gw = Gateway(f"http://{host}:{port}", runtime, fake, session)
        gw.ids = {r.secret: r.id for r in added.added}
        return gw

    yield make
    for runner, fake, session in made:
        await session.close()
        await runner.cleanup()
        await fake.close()
