"""The core of the fake upstream (:mod:`keyrelay.testing.fake_upstream`): per-key behaviours,
the record of calls, starting and stopping the aiohttp app, and the path every request takes
(authentication, the key's behaviour, the request's own checks) before an endpoint builds its
answer. Endpoints live in :mod:`~keyrelay.testing.fake_openai` and the native APIs' modules.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import orjson
from aiohttp import web

from keyrelay.testing.key_specs import Behavior, Call, KeySpec
from keyrelay.testing.openai_bodies import (
    _BAD_GATEWAY,
    _BAD_JSON,
    _CONTEXT,
    _CREDIT,
    _DEACTIVATED,
    _MODEL_NOT_FOUND,
    _NO_KEY,
    _NOT_MULTIPART,
    _OK_HEADERS,
    _OVERLOADED,
    _QUOTA,
    _RATE,
    _REGION,
    _SERVER,
    _SSE_HEADERS,
    _chars,
    _invalid_key,
    gemini_rate_limit,
    rate_headers,
    read_multipart,
)

__all__ = ["Ctx", "FakeServer", "Response", "Served"]

_NO_MODEL = "no-such-model"


_FAILURES = {500: _SERVER, 502: _BAD_GATEWAY, 503: _OVERLOADED}
#: Behaviours that refuse before the request is looked at / after it passed its checks.
_REFUSALS = {Behavior.DEACTIVATED: (401, _DEACTIVATED), Behavior.REGION_BLOCKED: (403, _REGION)}
_SPENT = {Behavior.QUOTA: (429, _QUOTA), Behavior.CREDIT_EXHAUSTED: (429, _CREDIT)}
_SPENT[Behavior.SERVER_ERROR] = (500, _SERVER)
_SPENT[Behavior.OVERLOADED] = (503, _OVERLOADED)


Response = web.StreamResponse


class _Cut(Exception):
    """Drop the connection without (finishing) an answer."""


@dataclass(slots=True)
class Ctx:
    """One request on its way to an endpoint: its payload and the key's behaviour."""

    request: web.Request
    payload: dict[str, Any]
    stream: bool
    spec: KeySpec
    #: the usage object this answer carries (set when it is built)
    usage: dict[str, int] | None = None
    #: counted in ``served`` already (a stream is, once its last event went out)
    counted: bool = False


@dataclass(slots=True)
class Served:
    """What the fake answered for one key: answers given whole (any status) and the tokens
    reported in their usage objects."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class FakeServer:
    """What every fake API shares (see :class:`~keyrelay.testing.FakeUpstream` for the
    parameters); :meth:`install` adds the routes."""

    def __init__(
        self,
        keys: dict[str, KeySpec | Behavior] | None = None,
        *,
        default: Behavior | None = None,
        seed: int = 0,
        stream_chunks: int = 5,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        record_calls: bool = True,
        end_delay: float = 0.0,
    ) -> None:
        self._keys = {k: self._spec(v) for k, v in (keys or {}).items()}
        self._default = None if default is None else KeySpec(default)
        self._rng = random.Random(seed)
        self.stream_chunks, self.chunk_delay, self.latency = stream_chunks, chunk_delay, latency
        self.record_calls = record_calls
        #: seconds between a stream's last event and the end of the answer (real servers and
        #: proxies end the chunked body a moment after ``data: [DONE]``)
        self.end_delay = end_delay
        self.calls: list[Call] = []
        self.served: dict[str | None, Served] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}
        self.url = ""
        #: the server without ``/v1``: native APIs are at ``root + "/anthropic"``, ``"/gemini"``, ``"/azure"``
        self.root = ""
        self._first_429: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.install()

    def install(self) -> None:
        """Add the routes (a subclass's)."""

    # ------------------------------------------------------------------ control

    @staticmethod
    def _spec(v: KeySpec | Behavior) -> KeySpec:
        return v if isinstance(v, KeySpec) else KeySpec(Behavior(v))

    def set(self, key: str, spec: KeySpec | Behavior) -> None:
        """Change a key's behaviour live (and restart its ``rate_limit_for`` window)."""
        self._keys[key] = self._spec(spec)
        self._first_429.pop(key, None)

    def calls_for(self, key: str | None) -> list[Call]:
        return [c for c in self.calls if c.key == key]

    def count(self, key: str | None) -> int:
        return sum(1 for c in self.calls if c.key == key)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.root = f"http://{bound_host}:{bound_port}"
        self.url = self.root + "/v1"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            for _ in range(3):  # let connections still being accepted reach the server, so cleanup closes them
                await asyncio.sleep(0)
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the common path

    def _route(
        self, build: Callable[[Ctx], Awaitable[Response]], kind: str
    ) -> Callable[[web.Request], Awaitable[Response]]:
        async def handler(request: web.Request) -> Response:
            ctx: list[Ctx] = []
            try:
                resp = await self._serve(request, build, kind, ctx)
            except _Cut:
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError from None
            if not (ctx and ctx[0].counted):
                self._count_served(request, ctx[0].usage if ctx else None)
            return resp

        return handler

    def _count_served(self, request: web.Request, usage: dict[str, int] | None) -> None:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        s = self.served.get(key)
        if s is None:
            s = self.served[key] = Served()
        s.requests += 1
        if usage:
            s.prompt_tokens += usage.get("prompt_tokens", 0)
            s.completion_tokens += usage.get("completion_tokens", 0)

    async def _received(self, request: web.Request, key: str | None, path: str, stream: bool, raw: bytes) -> None:
        """Every API's first step once a request is read: record the call, wait the latency."""
        if self.record_calls:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.calls.append(Call(key, request.method, path, headers, time.monotonic(), stream, raw))
        if self.latency:
            await asyncio.sleep(self.latency)

    def _json(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> web.Response:
        headers = {"x-request-id": f"req_{next(self._ids):024x}", **(extra if extra is not None else _OK_HEADERS)}
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    async def _serve(
        self, request: web.Request, build: Callable[[Ctx], Awaitable[Response]], kind: str, ctx: list[Ctx]
    ) -> Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        raw, payload, bad = b"", {}, False
        if kind == "json":
            raw = await request.read()
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad = True
            bad = bad or not isinstance(payload, dict)
        elif kind == "multipart":
            bad = not request.content_type.startswith("multipart/")
            payload = {} if bad else await read_multipart(request)
        stream = not bad and payload.get("stream") is True
        await self._received(request, key, request.path, stream, raw)

        spec = self._keys.get(key, self._default) if key else None
        if spec is None or spec.behavior is Behavior.INVALID:
            return self._json(401, _invalid_key(key) if key else _NO_KEY)
        b = spec.behavior
        if b in _REFUSALS:
            return self._json(*_REFUSALS[b])
        if bad:
            return self._json(400, _NOT_MULTIPART if kind == "multipart" else _BAD_JSON)
        if payload.get("model") == _NO_MODEL or request.match_info.get("model") == _NO_MODEL:
            return self._json(404, _MODEL_NOT_FOUND)
        if request.path == "/v1/chat/completions" and _chars(payload.get("messages")) > 100_000:
            return self._json(400, _CONTEXT)
        if b in _SPENT:
            return self._json(*_SPENT[b])
        if b is Behavior.RATE_LIMITED or b is Behavior.GEMINI_RATE_LIMITED:
            now = time.monotonic()
            first = self._first_429.setdefault(key or "", now)
            if spec.rate_limit_for is None or now - first < spec.rate_limit_for:
                if b is Behavior.GEMINI_RATE_LIMITED:
                    return self._json(429, gemini_rate_limit(spec.retry_after or 26.0), {})  # no rate headers
                return self._json(429, _RATE, rate_headers(spec.retry_after))
        elif b is Behavior.FLAKY and self._rng.random() < spec.flaky_rate:
            status = self._rng.choice((500, 502, 503))
            return self._json(status, _FAILURES[status])
        elif b is Behavior.SLOW:
            try:
                await asyncio.wait_for(self._closing.wait(), spec.delay)
            except TimeoutError:
                pass
        elif b is Behavior.HANG:
            await self._closing.wait()
            return self._json(503, _OVERLOADED)
        elif b is Behavior.STREAM_ERROR and not stream:
            return self._json(500, _SERVER)
        elif b is Behavior.STREAM_CUT and not stream:
            raise _Cut
        ctx.append(Ctx(request, payload, stream, spec))
        return await build(ctx[0])

    async def _stream(self, c: Ctx, frames: list[bytes], error: bytes) -> Response:
        resp = web.StreamResponse(headers={"x-request-id": f"req_{next(self._ids):024x}"} | _OK_HEADERS | _SSE_HEADERS)
        await resp.prepare(c.request)
        if c.spec.behavior is Behavior.STREAM_ERROR:
            frames, c.usage = [error], None
        for i, frame in enumerate(frames):
            if i == 2 and c.spec.behavior is Behavior.STREAM_CUT:
                raise _Cut
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await resp.write(frame)
        self._count_served(c.request, c.usage)  # every event went out: served, as a real API bills it
        c.counted = True
        if self.end_delay:
            await asyncio.sleep(self.end_delay)
        try:
            await resp.write_eof()
        except ConnectionResetError:  # the client hung up after the last event
            pass
        return resp
