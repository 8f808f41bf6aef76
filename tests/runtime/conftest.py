"""The drivers of the one relay flow (``runtime/flow.py``), behind one interface, so a scenario
is written once and run against each: the aiohttp gateway (in process), and library mode's
transports — httpx2 sync, httpx sync (openai 1.x/2.x) and httpx2 async.

Every driver talks to the same kind of upstream: a :class:`FakeUpstream` served by an event
loop on its own thread (so a sync client can block on it), with two extra routes that echo the
key they were sent (``/v1/echo-error``: a 500 with the key in its body and headers;
``/v1/echo-ok``: a 200 with the key in a header) and one that redirects to a *stranger*, a
server on another port that records the credentials it is sent (``/v1/redirect-away``). A driver hands back what a caller sees
(:class:`Seen`) and what happened to the keys (their state, their counters after a flush).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

import keyrelay
from keyrelay.client import Pool
from keyrelay.config import parse_settings
from keyrelay.core.model import Counters, KeyRecord
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

TOKEN = "kr-flow-token-abcdefghijklmnopqr"
Keys = dict[str, Behavior | KeySpec]


@dataclass
class Seen:
    """What a caller got: status, headers (lower-case names), the body as read (a stream: every
    byte the caller read before it stopped)."""

    status: int
    headers: dict[str, str]
    body: bytes
    secret_of: dict[str, str] = field(repr=False, default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def ctype(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    @property
    def attempts(self) -> int | None:
        a = self.headers.get("x-keyrelay-attempts")
        return None if a is None else int(a)

    @property
    def key(self) -> str | None:
        """The secret of the key that gave the answer (from ``x-keyrelay-key``, a key id)."""
        kid = self.headers.get("x-keyrelay-key")
        return None if kid is None else self.secret_of.get(kid, f"<unknown id {kid}>")

    def events(self) -> list[bytes]:
        """The ``data:`` payloads of an event stream, in order."""
        out = []
        for block in self.body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = [ln[5:].strip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if data:
                out.append(b"\n".join(data))
        return out


# -- the upstream --------------------------------------------------------------------------------
_CREDENTIALS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})


def _key(request: web.Request) -> str:
    return request.headers.get("Authorization", "")[7:]


async def _echo_error(request: web.Request) -> web.Response:
    key = _key(request)
    body = orjson.dumps({"error": {"message": f"server broke on key {key}", "type": "server_error",
                                   "param": None, "code": None}})
    headers = {"x-echo-key": key, "www-authenticate": f'Bearer realm="api", key="{key}"'}
    return web.Response(status=500, body=body, headers=headers, content_type="application/json")


async def _echo_ok(request: web.Request) -> web.Response:
    body = orjson.dumps({"ok": True})
    return web.Response(body=body, headers={"x-echo-key": _key(request)}, content_type="application/json")


class Upstream:
    """A :class:`FakeUpstream` (with the echo routes) and the stranger, on their own thread's
    event loop. ``stranger_saw``: the credential headers the stranger received."""

    def __init__(self, keys: Keys, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="flow-upstream", daemon=True)
        self.thread.start()
        self.stranger_saw: list[str] = []
        self._stranger = web.AppRunner(self._stranger_app(), handle_signals=False, access_log=None)
        self.stranger_url: str = self._call(self._start_stranger())
        self.fake: FakeUpstream = self._call(self._make(keys, kwargs))
        self._call(self.fake.start())
        self.url = self.fake.url

    def _stranger_app(self) -> web.Application:
        async def anything(request: web.Request) -> web.Response:
            self.stranger_saw += [v for k, v in request.headers.items() if k.lower() in _CREDENTIALS]
            return web.json_response({"stranger": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        return app

    async def _start_stranger(self) -> str:
        await self._stranger.setup()
        await web.TCPSite(self._stranger, "127.0.0.1", 0).start()
        host, port = self._stranger.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _make(self, keys: Keys, kwargs: dict[str, Any]) -> FakeUpstream:
        fake = FakeUpstream(dict(keys), **kwargs)
        fake.app.router.add_post("/v1/echo-error", _echo_error)
        fake.app.router.add_post("/v1/echo-ok", _echo_ok)
        away = self.stranger_url + "/v1/chat/completions"

        async def redirect_away(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(away)  # 307: the request is sent again as it was

        fake.app.router.add_post("/v1/redirect-away", redirect_away)
        return fake

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def keys_called(self) -> list[str | None]:
        """The key of each request the upstream received, in order."""
        return [c.key for c in list(self.fake.calls)]

    def close(self) -> None:
        try:
            self._call(self.fake.close())
            self._call(self._stranger.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def dead_url() -> str:
    """A base URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- the drivers ---------------------------------------------------------------------------------
class Driver:
    """One way of running the flow. ``start`` it over keys; paths are the API's below ``/v1``."""

    name = ""
    up: Upstream
    keypool: KeyPool

    provider = "openai"
    #: where the API's paths start for this driver (the gateway's pool route, or the upstream's base)
    root = ""

    async def start(self, keys: Keys, *, base_url: str | None = None, provider: str = "openai", **fake_kw: Any) -> None:
        """``provider="gemini"``: the pool speaks Gemini's native API (the fake's ``/gemini``)."""
        self.up = Upstream(keys, **fake_kw)
        self.secrets = list(keys)
        self.provider = provider
        if base_url is None:
            base_url = self.up.fake.root + "/gemini" if provider == "gemini" else self.up.url
        await self._open(base_url)

    async def _open(self, base_url: str) -> None:
        raise NotImplementedError

    async def send(self, path: str, body: Any) -> Seen:
        """A request whose answer the caller reads whole."""
        raise NotImplementedError

    async def stream(self, path: str, body: Any, *, stop_after: int | None = None) -> Seen:
        """A request whose answer the caller reads as it comes; ``stop_after``: it closes the
        answer after that many chunks."""
        raise NotImplementedError

    async def _flush(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- the keys --------------------------------------------------------------------------
    @property
    def secret_of(self) -> dict[str, str]:
        return {r.id: r.secret for r in self.keypool.records()}

    def _seen(self, status: int, headers: Any, body: bytes) -> Seen:
        return Seen(status, {k.lower(): v for k, v in headers.items()}, body, self.secret_of)

    def state(self, secret: str) -> str:
        """The key's state as the pool sees it in memory."""
        return next(r.state.value for r in self.keypool.records() if r.secret == secret)

    async def counters(self) -> dict[str, Counters]:
        """Each key's stored counters, after the pending writes and a flush."""
        await self._flush()
        stored: list[KeyRecord] = await self._load()
        return {r.secret: r.counters for r in stored}

    async def _load(self) -> list[KeyRecord]:
        raise NotImplementedError

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until no key is lent out (a stream the caller left is wound up in the background)."""
        deadline = time.monotonic() + timeout
        while any(self.keypool.state.inflight(r.id) for r in self.keypool.records()):
            assert time.monotonic() < deadline, "a key stayed lent out"
            await asyncio.sleep(0.01)


class GatewayDriver(Driver):
    name = "gateway"
    engine = "aiohttp"  #: [server] engine

    async def _open(self, base_url: str) -> None:
        doc = {
            "server": {"sync_interval": 0.1, "flush_interval": 0.1, "engine": self.engine},
            "store": {"url": "memory://"},
            "pools": [{"name": "openai", "provider": self.provider, "base_url": base_url, "strategy": "round_robin"}],
            "tokens": [{"name": "test", "pools": ["openai"], "token": TOKEN}],
        }
        settings = parse_settings(doc, {})
        store = open_store(settings.store_url)
        await store.open()
        await store.add_keys("openai", self.secrets, time.time())
        self.runtime = Runtime(settings, store)
        self.runner = GatewayRunner(self.runtime)
        await self.runner.setup()
        if self.engine == "lean":
            from keyrelay.server.app import lean_site

            await lean_site(self.runner, "127.0.0.1", 0).start()
        else:
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v1"
        self.root = f"http://{host}:{port}/openai"
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        self.keypool = self.runtime.pools["openai"]

    async def send(self, path: str, body: Any) -> Seen:
        async with self.session.post(self.url + path, json=body) as r:
            return self._seen(r.status, r.headers, await r.read())

    async def stream(self, path: str, body: Any, *, stop_after: int | None = None) -> Seen:
        got = b""
        url = self.root + path if path.startswith("/v1beta") else self.url + path
        async with self.session.post(url, json=body) as r:
            n = 0
            async for chunk in r.content.iter_any():
                got += chunk
                n += 1
                if stop_after is not None and n >= stop_after:
                    r.close()  # hang up: the connection goes
                    break
            return self._seen(r.status, r.headers, got)

    async def _flush(self) -> None:
        await self.keypool.settle()
        await self.runtime.flush()

    async def _load(self) -> list[KeyRecord]:
        return await self.runtime.store.load("openai")

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()
        self.up.close()


class LeanGatewayDriver(GatewayDriver):
    """The gateway on the lean HTTP layer (``server/lean.py``)."""

    name = "gateway-lean"
    engine = "lean"


class LibraryDriver(Driver):
    """Library mode: an SDK's HTTP client built by ``keyrelay.*httpx_client(pool)``."""

    def __init__(self, name: str, factory: Callable[..., Any], asynchronous: bool) -> None:
        self.name, self.factory, self.asynchronous = name, factory, asynchronous

    async def _open(self, base_url: str) -> None:
        self.pool = await asyncio.to_thread(
            Pool.from_keys, self.secrets, base_url=base_url, strategy="round_robin", provider=self.provider
        )
        self.keypool = self.pool.keypool
        self.client = self.factory(self.pool)
        self.base = self.root = base_url

    async def send(self, path: str, body: Any) -> Seen:
        if self.asynchronous:
            r = await self.client.post(self.base + path, json=body)
        else:
            r = await asyncio.to_thread(self.client.post, self.base + path, json=body)
        return self._seen(r.status_code, r.headers, r.content)

    async def stream(self, path: str, body: Any, *, stop_after: int | None = None) -> Seen:
        if self.asynchronous:
            return await self._astream(path, body, stop_after)
        return await asyncio.to_thread(self._stream, path, body, stop_after)

    def _stream(self, path: str, body: Any, stop_after: int | None) -> Seen:
        got, n = b"", 0
        with self.client.stream("POST", self.base + path, json=body) as r:
            for chunk in r.iter_bytes():
                got += chunk
                n += 1
                if stop_after is not None and n >= stop_after:
                    break  # leaving the block closes the answer
            return self._seen(r.status_code, r.headers, got)

    async def _astream(self, path: str, body: Any, stop_after: int | None) -> Seen:
        got, n = b"", 0
        async with self.client.stream("POST", self.base + path, json=body) as r:
            async for chunk in r.aiter_bytes():
                got += chunk
                n += 1
                if stop_after is not None and n >= stop_after:
                    break
            return self._seen(r.status_code, r.headers, got)

    async def _flush(self) -> None:
        await asyncio.to_thread(self.pool.flush)

    async def _load(self) -> list[KeyRecord]:
        return await asyncio.to_thread(self.pool.keys)

    async def close(self) -> None:
        if self.asynchronous:
            await self.client.aclose()
        else:
            self.client.close()
        await asyncio.to_thread(self.pool.close)
        self.up.close()


DRIVERS: dict[str, Callable[[], Driver]] = {
    "gateway": GatewayDriver,
    "gateway-lean": LeanGatewayDriver,
    "httpx2": lambda: LibraryDriver("httpx2", keyrelay.httpx_client, False),
    "httpx": lambda: LibraryDriver("httpx", keyrelay.legacy_httpx_client, False),
    "httpx2-async": lambda: LibraryDriver("httpx2-async", keyrelay.async_httpx_client, True),
}


@pytest.fixture(params=list(DRIVERS))
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    """Each scenario runs once per driver; ``await driver.start(keys)`` starts it."""
    d = DRIVERS[request.param]()
    yield d
    if hasattr(d, "keypool"):
        await d.close()
    elif hasattr(d, "up"):
        d.up.close()
