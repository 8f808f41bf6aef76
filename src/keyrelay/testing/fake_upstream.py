"""A fake OpenAI server (an in-process aiohttp app) whose behaviour is set per API key.

Used by the test suite, ``keyrelay demo`` and the benchmarks::

    async with FakeUpstream({"sk-good": Behavior.OK, "sk-spent": Behavior.QUOTA}) as up:
        ...  # point a client at up.url ("http://127.0.0.1:<port>/v1")
        assert up.count("sk-spent") == 1

Native APIs (Anthropic, Gemini, Azure) are mounted under their own prefixes by ``fake_native.py``
and its siblings. Error bodies are the real ones from ``PROVIDER-ERRORS.md`` §1. Every behaviour applies to every
endpoint. Checks run in this order: unknown key (401), the key-level refusals INVALID /
DEACTIVATED / REGION_BLOCKED, the request itself (invalid JSON 400, ``"model":
"no-such-model"`` 404, chat messages over 100,000 characters 400), then the other behaviours.
``STREAM_CUT`` drops the connection (after two chunks of a stream, at once otherwise);
``STREAM_ERROR`` answers a non-stream request with a 500. ``HANG`` answers 503 once
:meth:`FakeUpstream.close` is called. Usage is deterministic: ``prompt_tokens`` = 10 per message
(or input), ``completion_tokens`` = :data:`COMPLETION_TOKENS`.
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

from keyrelay.testing.fake_anthropic import FakeAnthropic
from keyrelay.testing.fake_azure import FakeAzure
from keyrelay.testing.fake_gemini import FakeGemini
from keyrelay.testing.key_specs import Behavior, Call, KeySpec, go_duration
from keyrelay.testing.openai_bodies import (
    _BAD_GATEWAY,
    _BAD_JSON,
    _CONTEXT,
    _CREDIT,
    _DEACTIVATED,
    _DONE,
    _EMBEDDING,
    _MODEL_NOT_FOUND,
    _MODELS,
    _NO_FILE,
    _NO_KEY,
    _NOT_MULTIPART,
    _OK_HEADERS,
    _OVERLOADED,
    _PIECES,
    _QUOTA,
    _RATE,
    _REGION,
    _SERVER,
    _SSE_HEADERS,
    _STREAM_ERR,
    _TEXT,
    COMPLETION_TOKENS,
    SPEECH_BYTES,
    _chars,
    _count,
    _err,
    _invalid_key,
    _sse,
    gemini_rate_limit,
    rate_headers,
    read_multipart,
)

__all__ = ["COMPLETION_TOKENS", "SPEECH_BYTES", "Behavior", "Call", "FakeUpstream", "KeySpec", "Served", "go_duration"]


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
class _Ctx:
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


class FakeUpstream:
    """A fake OpenAI API. ``keys`` maps bearer keys to behaviours; others get ``default``
    (``None``: a 401 ``invalid_api_key``). ``calls`` records every request received
    (``record_calls=False`` turns that off for long benchmarks); ``served`` counts, per key, the
    answers given whole and the tokens their usage objects reported."""

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
        add = self.app.router.add_route
        add("POST", "/v1/chat/completions", self._route(self._chat, "json"))
        add("POST", "/v1/completions", self._route(self._completion, "json"))
        add("POST", "/v1/embeddings", self._route(self._embeddings, "json"))
        add("POST", "/v1/responses", self._route(self._responses, "json"))
        add("GET", "/v1/models", self._route(self._models, ""))
        add("GET", "/v1/models/{model}", self._route(self._model, ""))
        add("POST", "/v1/audio/transcriptions", self._route(self._transcription, "multipart"))
        add("POST", "/v1/audio/speech", self._route(self._speech, "json"))
        add("POST", "/v1/files", self._route(self._file_upload, "multipart"))
        add("DELETE", "/v1/files/{file_id}", self._route(self._file_delete, ""))
        add("GET", "/v1/files/{file_id}/content", self._route(self._file_content, ""))
        for api in (FakeAnthropic, FakeGemini, FakeAzure):  # native APIs under /anthropic, /gemini, /azure
            api(self).install()

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
        self, build: Callable[[_Ctx], Awaitable[Response]], kind: str
    ) -> Callable[[web.Request], Awaitable[Response]]:
        async def handler(request: web.Request) -> Response:
            ctx: list[_Ctx] = []
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

    def _json(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> web.Response:
        headers = {"x-request-id": f"req_{next(self._ids):024x}", **(extra if extra is not None else _OK_HEADERS)}
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    async def _serve(
        self, request: web.Request, build: Callable[[_Ctx], Awaitable[Response]], kind: str, ctx: list[_Ctx]
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
        if self.record_calls:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.calls.append(Call(key, request.method, request.path, headers, time.monotonic(), stream, raw))
        if self.latency:
            await asyncio.sleep(self.latency)

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
        ctx.append(_Ctx(request, payload, stream, spec))
        return await build(ctx[0])

    async def _stream(self, c: _Ctx, frames: list[bytes], error: bytes) -> Response:
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

    # ------------------------------------------------------------------ endpoints

    def _usage(self, n_inputs: int, c: _Ctx | None = None) -> dict[str, int]:
        """The usage of an answer; with ``c``, that answer carries it (``served`` counts it)."""
        p = 10 * n_inputs
        u = {"prompt_tokens": p, "completion_tokens": COMPLETION_TOKENS, "total_tokens": p + COMPLETION_TOKENS}
        if c is not None:
            c.usage = u
        return u

    def _pieces(self) -> list[str]:
        return [_PIECES[i % len(_PIECES)] for i in range(self.stream_chunks)]

    async def _chunked(self, c: _Ctx, base: dict[str, Any], choice: Callable[[int, str, bool], Any]) -> Response:
        """Chat / legacy completion stream: one chunk per piece, the include_usage chunk, ``[DONE]``."""
        pieces, frames = self._pieces(), []
        with_usage = bool((c.payload.get("stream_options") or {}).get("include_usage"))
        for i, piece in enumerate(pieces):
            chunk = {**base, "choices": [choice(i, piece, i == len(pieces) - 1)]}
            if with_usage:
                chunk["usage"] = None
            frames.append(_sse(orjson.dumps(chunk)))
        if with_usage:
            usage = self._usage(_count(c.payload.get("messages", c.payload.get("prompt"))), c)
            frames.append(_sse(orjson.dumps({**base, "choices": [], "usage": usage})))
        frames.append(_DONE)
        return await self._stream(c, frames, _sse(_STREAM_ERR) + _DONE)

    async def _chat(self, c: _Ctx) -> Response:
        model = c.payload.get("model", "gpt-4o-mini")
        base = {"id": f"chatcmpl-{next(self._ids)}", "created": int(time.time()), "model": model}
        if c.stream:

            def choice(i: int, piece: str, last: bool) -> Any:
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}

            return await self._chunked(c, {**base, "object": "chat.completion.chunk"}, choice)
        message = {"role": "assistant", "content": _TEXT, "refusal": None}
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}]
        usage = self._usage(_count(c.payload.get("messages")), c)
        body = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
        return self._json(200, orjson.dumps(body))

    async def _completion(self, c: _Ctx) -> Response:
        model = c.payload.get("model", "gpt-3.5-turbo-instruct")
        base = {"id": f"cmpl-{next(self._ids)}", "object": "text_completion", "created": int(time.time())}
        base["model"] = model
        if c.stream:

            def choice(i: int, piece: str, last: bool) -> Any:
                return {"text": piece, "index": 0, "logprobs": None, "finish_reason": "stop" if last else None}

            return await self._chunked(c, base, choice)
        choices = [{"text": _TEXT, "index": 0, "logprobs": None, "finish_reason": "stop"}]
        usage = self._usage(_count(c.payload.get("prompt")), c)
        return self._json(200, orjson.dumps({**base, "choices": choices, "usage": usage}))

    async def _embeddings(self, c: _Ctx) -> Response:
        n = _count(c.payload.get("input"))
        data = [{"object": "embedding", "index": i, "embedding": _EMBEDDING} for i in range(n)]
        body = {"object": "list", "data": data, "model": c.payload.get("model", "text-embedding-3-small")}
        body["usage"] = {"prompt_tokens": 10 * n, "total_tokens": 10 * n}
        c.usage = {"prompt_tokens": 10 * n}
        return self._json(200, orjson.dumps(body))

    async def _responses(self, c: _Ctx) -> Response:
        u = self._usage(_count(c.payload.get("input")), c)
        rid, pieces = f"resp_{next(self._ids):016x}", self._pieces()
        part = {"type": "output_text", "text": "".join(pieces) if c.stream else _TEXT, "annotations": []}
        msg = {"type": "message", "id": "msg_" + rid[5:], "status": "completed", "role": "assistant", "content": [part]}
        usage = {"input_tokens": u["prompt_tokens"], "output_tokens": COMPLETION_TOKENS}
        usage["total_tokens"] = u["total_tokens"]
        resp = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed", "error": None}
        resp |= {"model": c.payload.get("model", "gpt-4o-mini"), "output": [msg], "usage": usage}
        if not c.stream:
            return self._json(200, orjson.dumps(resp))
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": {**resp, "status": "in_progress", "output": [], "usage": None}}),
            *(("response.output_text.delta", {"item_id": msg["id"], "output_index": 0, "delta": d}) for d in pieces),
            ("response.completed", {"response": resp}),
        ]
        frames = [_sse(orjson.dumps({"type": t, "sequence_number": i, **e}), t) for i, (t, e) in enumerate(events)]
        message = orjson.loads(_STREAM_ERR)["error"]["message"]  # the chat in-stream text
        error = {"type": "error", "code": "server_error", "message": message, "param": None, "sequence_number": 0}
        return await self._stream(c, frames, _sse(orjson.dumps(error), "error"))

    async def _models(self, c: _Ctx) -> Response:
        return self._json(200, _MODELS)

    async def _model(self, c: _Ctx) -> Response:
        body = {"id": c.request.match_info["model"], "object": "model", "created": 1715367049, "owned_by": "system"}
        return self._json(200, orjson.dumps(body))

    async def _transcription(self, c: _Ctx) -> Response:
        data = c.payload.get("file")
        if not isinstance(data, bytes):
            return self._json(400, _NO_FILE)
        return self._json(200, orjson.dumps({"text": f"{len(data)} bytes received"}))

    async def _speech(self, c: _Ctx) -> Response:
        headers = {"x-request-id": f"req_{next(self._ids):024x}", **_OK_HEADERS}
        return web.Response(body=SPEECH_BYTES, headers=headers, content_type="audio/mpeg")

    async def _file_upload(self, c: _Ctx) -> Response:
        data = c.payload.get("file")
        if not isinstance(data, bytes):
            return self._json(400, _NO_FILE)
        fid = f"file-{next(self._ids):024x}"
        name, purpose = str(c.payload.get("file.filename")), str(c.payload.get("purpose", "user_data"))
        self.files[fid] = (name, purpose, data)
        body = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": name}
        return self._json(200, orjson.dumps({**body, "purpose": purpose}))

    def _no_file(self, fid: str) -> web.Response:
        return self._json(404, _err(f"No such File object: {fid}", "invalid_request_error", None, "id"))

    async def _file_delete(self, c: _Ctx) -> Response:
        fid = c.request.match_info["file_id"]
        if self.files.pop(fid, None) is None:
            return self._no_file(fid)
        return self._json(200, orjson.dumps({"id": fid, "object": "file", "deleted": True}))

    async def _file_content(self, c: _Ctx) -> Response:
        fid = c.request.match_info["file_id"]
        if fid not in self.files:
            return self._no_file(fid)
        headers = {"x-request-id": f"req_{next(self._ids):024x}"}
        return web.Response(body=self.files[fid][2], headers=headers, content_type="application/octet-stream")
