"""The fake upstream's Gemini API, under ``/gemini``: the native ``/v1beta/models/{model}:{method}``
calls (and ``/v1/``), ``GET …/models``, and the OpenAI-compatible ``/v1beta/openai/chat/completions``.

A key arrives in ``x-goog-api-key``, ``?key=`` or (the OpenAI-compatible endpoint) ``Authorization:
Bearer``. Errors are google.rpc.Status bodies from PROVIDER-ERRORS.md §4: ``API_KEY_INVALID``
(400), a spent day (429, ``…PerDay…`` quota), a per-minute limit (429 with ``RetryInfo``), the
overloaded model (503 ``UNAVAILABLE``), ``INTERNAL`` (500). ``streamGenerateContent`` answers
SSE with ``?alt=sse`` (events ended by ``\\r\\n\\r\\n``, as Google sends them) and a streamed JSON
array without (one element per write; ``STREAM_ERROR`` and ``STREAM_CUT`` apply to both). Usage:
``promptTokenCount`` = 10 per content, ``candidatesTokenCount`` = ``COMPLETION_TOKENS``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from keyrelay.testing.fake_native import Answer, NativeApi
from keyrelay.testing.fake_server import Ctx, _Cut
from keyrelay.testing.key_specs import Behavior
from keyrelay.testing.openai_bodies import _EMBEDDING, _PIECES, COMPLETION_TOKENS, _count, gemini_rate_limit

__all__ = ["FakeGemini"]

MODEL = "gemini-2.5-flash"

_INVALID = (
    b'{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",'
    b'"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":'
    b'"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}'
)
_PER_DAY = (  # voideditor/void#557: a spent day, with a short RetryInfo that must not be believed
    b'{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.",'
    b'"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":'
    b'[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":'
    b'"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":'
    b'"gemini-2.5-flash"},"quotaValue":"25"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"5s"}]}}'
)
_OVERLOADED = b'{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}'
_INTERNAL = b'{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}'


class FakeGemini(NativeApi):
    prefix = "/gemini"

    def install(self) -> None:
        for version in ("/v1beta", "/v1"):
            self.add("POST", version + "/models/{call}", self._call)
            self.add("GET", version + "/models", self._models)
        self.add("POST", "/v1beta/openai/chat/completions", self.fake._chat)

    def key_of(self, request: web.Request) -> str | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key:
            return key
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def is_stream(self, request: web.Request, payload: dict[str, Any]) -> bool:
        return request.path.endswith(":streamGenerateContent") or payload.get("stream") is True

    def invalid(self, key: str | None) -> Answer:
        return 400, _INVALID, {}

    def spent(self) -> Answer:
        return 429, _PER_DAY, {}

    def rate_limited(self, wait: float) -> Answer:
        return 429, gemini_rate_limit(wait), {}

    def overloaded(self) -> Answer:
        return 503, _OVERLOADED, {}

    def server_error(self) -> Answer:
        return 500, _INTERNAL, {}

    def bad_request(self, message: str) -> Answer:
        return 400, orjson.dumps({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}), {}

    def check(self, request: web.Request, payload: dict[str, Any]) -> Answer | None:
        call = request.match_info.get("call", "")
        if call.startswith("no-such-model:") or payload.get("model") == "no-such-model":
            body = orjson.dumps({"error": {"code": 404, "message": "models/no-such-model is not found for API version "
                                           "v1beta, or is not supported for generateContent.", "status": "NOT_FOUND"}})
            return 404, body, {}
        return None

    # -- endpoints ---------------------------------------------------------------------------
    def _usage(self, prompt: int, done: int) -> dict[str, int]:
        return {"promptTokenCount": prompt, "candidatesTokenCount": done, "totalTokenCount": prompt + done}

    async def _call(self, c: Any) -> web.StreamResponse:
        model, _, method = c.request.match_info["call"].partition(":")
        payload = c.payload
        if method == "countTokens":
            return self.json({"totalTokens": 10 * _count(payload.get("contents"))})
        if method == "embedContent":
            return self.json({"embedding": {"values": _EMBEDDING}})
        if method == "batchEmbedContents":
            return self.json({"embeddings": [{"values": _EMBEDDING} for _ in payload.get("requests") or [None]]})
        if method not in ("generateContent", "streamGenerateContent"):
            return self.answer(self.bad_request(f"unknown method {method!r}"))
        prompt = 10 * _count(payload.get("contents"))
        if method == "generateContent":
            return self.json(self._chunk(model, "".join(_PIECES), prompt, COMPLETION_TOKENS, True))
        n = self.fake.stream_chunks
        chunks = [
            self._chunk(model, _PIECES[i % len(_PIECES)], prompt, COMPLETION_TOKENS if i == n - 1 else i + 1, i == n - 1)
            for i in range(n)
        ]
        if c.request.query.get("alt") == "sse":
            frames = [b"data: " + orjson.dumps(ch) + b"\r\n\r\n" for ch in chunks]
            return await self.fake._stream(c, frames, b"data: " + _OVERLOADED + b"\r\n\r\n")
        return await self._json_array(c, chunks)

    def _chunk(self, model: str, text: str, prompt: int, done: int, last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        return {"candidates": [candidate], "usageMetadata": self._usage(prompt, done), "modelVersion": model,
                "responseId": f"resp-{next(self.fake._ids)}"}

    async def _json_array(self, c: Ctx, items: list[dict[str, Any]]) -> web.StreamResponse:
        """``streamGenerateContent`` without ``alt=sse``: one JSON array over chunked transfer, one
        pretty-printed element per write (``chunk_delay`` apart), parted by ``\\r\\n,`` as Google
        writes them. ``STREAM_ERROR``: the array holds one 503 error element; ``STREAM_CUT``: the
        connection drops halfway through the third element."""
        behavior = c.spec.behavior
        if behavior is Behavior.STREAM_ERROR:
            items = [orjson.loads(_OVERLOADED)]
        resp = web.StreamResponse(headers={"content-type": "application/json; charset=UTF-8"})
        await resp.prepare(c.request)
        for i, item in enumerate(items):
            if i and self.fake.chunk_delay:
                await asyncio.sleep(self.fake.chunk_delay)
            element = (b"[" if i == 0 else b"\r\n,") + orjson.dumps(item, option=orjson.OPT_INDENT_2)
            if i == 2 and behavior is Behavior.STREAM_CUT:
                await resp.write(element[: len(element) // 2])
                raise _Cut
            await resp.write(element)
        await resp.write(b"\r\n]")
        self.fake._count_served(c.request, c.usage)
        c.counted = True
        await resp.write_eof()
        return resp

    async def _models(self, c: Any) -> web.StreamResponse:
        model = {"name": f"models/{MODEL}", "displayName": "Gemini 2.5 Flash", "inputTokenLimit": 1048576,
                 "supportedGenerationMethods": ["generateContent", "countTokens"]}
        return self.json({"models": [model]})
