"""What the fake upstream's native APIs (Anthropic, Gemini, Azure) share: where the key comes
from, the order of checks and the per-key behaviours, each API writing its own error bodies.

Each native API is mounted under its own prefix of the same server (``/anthropic``, ``/gemini``,
``/azure``) so that a pool points its ``base_url`` at ``FakeUpstream.root + "/anthropic"`` and
the paths never clash with the OpenAI ones. Keys and their :class:`~keyrelay.testing.key_specs.Behavior`
are the fake's own (one key table for every API); ``calls`` records every request, its ``path``
with the query string (so a test can see that no ``key=`` ever arrived).

Behaviours a native API honours: ``OK``, ``INVALID``, ``QUOTA`` / ``CREDIT_EXHAUSTED`` (spent),
``RATE_LIMITED`` (``retry_after``, ``rate_limit_for``), ``OVERLOADED``, ``SERVER_ERROR``,
``FLAKY``, ``STREAM_ERROR`` (an error event first), ``STREAM_CUT`` (cut after two events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from keyrelay.testing.fake_openai import OpenAIEndpoints
from keyrelay.testing.fake_server import Ctx, _Cut
from keyrelay.testing.key_specs import Behavior

__all__ = ["Answer", "NativeApi"]

#: (status, JSON body, extra headers)
Answer = tuple[int, bytes, dict[str, str]]
Build = Callable[[Ctx], Awaitable[web.StreamResponse]]


class NativeApi:
    """One native API on the fake: subclasses say how a key arrives and how errors look."""

    prefix = ""

    def __init__(self, fake: OpenAIEndpoints) -> None:
        self.fake = fake

    # -- what a subclass says ----------------------------------------------------------------
    def key_of(self, request: web.Request) -> str | None:
        raise NotImplementedError

    def invalid(self, key: str | None) -> Answer:
        raise NotImplementedError

    def spent(self) -> Answer:
        raise NotImplementedError

    def rate_limited(self, wait: float) -> Answer:
        raise NotImplementedError

    def overloaded(self) -> Answer:
        raise NotImplementedError

    def server_error(self) -> Answer:
        raise NotImplementedError

    def bad_request(self, message: str) -> Answer:
        raise NotImplementedError

    def check(self, request: web.Request, payload: dict[str, Any]) -> Answer | None:
        """A refusal of the request itself (a missing header, an unknown model), or ``None``."""
        return None

    def is_stream(self, request: web.Request, payload: dict[str, Any]) -> bool:
        return payload.get("stream") is True

    # -- the common path -----------------------------------------------------------------------
    def add(self, method: str, path: str, build: Build) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await self._serve(request, build)
            except _Cut:
                if request.transport is not None:
                    request.transport.close()
                raise asyncio.CancelledError from None

        self.fake.app.router.add_route(method, self.prefix + path, handler)

    def answer(self, a: Answer) -> web.Response:
        status, body, headers = a
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    async def _serve(self, request: web.Request, build: Build) -> web.StreamResponse:
        fake = self.fake
        key = self.key_of(request)
        raw = await request.read() if request.can_read_body else b""
        payload: Any = {}
        bad = False
        if raw:
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad = True
            bad = bad or not isinstance(payload, dict)
        stream = not bad and self.is_stream(request, payload)
        await fake._received(request, key, request.path_qs, stream, raw)
        spec = fake._keys.get(key, fake._default) if key else None
        if spec is None or spec.behavior in (Behavior.INVALID, Behavior.DEACTIVATED):
            return self.answer(self.invalid(key))
        if bad:
            return self.answer(self.bad_request("the request body is not valid JSON"))
        refused = self.check(request, payload)
        if refused is not None:
            return self.answer(refused)
        b = spec.behavior
        if b in (Behavior.QUOTA, Behavior.CREDIT_EXHAUSTED):
            return self.answer(self.spent())
        if b is Behavior.OVERLOADED:
            return self.answer(self.overloaded())
        if b is Behavior.SERVER_ERROR or (b is Behavior.STREAM_ERROR and not stream):
            return self.answer(self.server_error())
        if b is Behavior.RATE_LIMITED:
            now = time.monotonic()
            first = fake._first_429.setdefault(key or "", now)
            if spec.rate_limit_for is None or now - first < spec.rate_limit_for:
                return self.answer(self.rate_limited(spec.retry_after if spec.retry_after is not None else 20.0))
        if b is Behavior.FLAKY and fake._rng.random() < spec.flaky_rate:
            return self.answer(self.overloaded() if fake._rng.random() < 0.5 else self.server_error())
        if b is Behavior.STREAM_CUT and not stream:
            raise _Cut
        return await build(Ctx(request, payload, stream, spec))

    def json(self, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), headers=headers or {}, content_type="application/json")
