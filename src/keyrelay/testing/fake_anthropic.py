"""The fake upstream's Anthropic Messages API, under ``/anthropic``: ``x-api-key`` auth, a
required ``anthropic-version`` header, the ``{"type":"error","error":{…}}`` envelope and the
Messages stream (``message_start`` … ``message_stop``).

Bodies are the real ones (PROVIDER-ERRORS.md §3): ``invalid x-api-key`` (401), the spent
``credit balance is too low`` (400), ``rate_limit_error`` (429 with ``retry-after`` and
``anthropic-ratelimit-requests-reset``), ``overloaded_error`` (529), ``api_error`` (500).
Usage: ``input_tokens`` = 10 per message, ``output_tokens`` = ``COMPLETION_TOKENS``.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import orjson
from aiohttp import web

from keyrelay.testing.fake_native import Answer, NativeApi
from keyrelay.testing.openai_bodies import _PIECES, _TEXT, COMPLETION_TOKENS, _count, _sse

__all__ = ["FakeAnthropic"]

MODEL = "claude-sonnet-4-5"


def _error(type_: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_011CfakeFake"})


_CREDIT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)


class FakeAnthropic(NativeApi):
    prefix = "/anthropic"

    def install(self) -> None:
        self.add("POST", "/v1/messages", self._messages)
        self.add("POST", "/v1/messages/count_tokens", self._count_tokens)
        self.add("GET", "/v1/models", self._models)
        self.add("POST", "/v1/messages/batches", self._batch)

    def key_of(self, request: web.Request) -> str | None:
        return request.headers.get("x-api-key")

    def invalid(self, key: str | None) -> Answer:
        return 401, _error("authentication_error", "invalid x-api-key"), {}

    def spent(self) -> Answer:
        return 400, _error("invalid_request_error", _CREDIT), {}

    def rate_limited(self, wait: float) -> Answer:
        reset = _dt.datetime.fromtimestamp(time.time() + wait, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = "This request would exceed your account's rate limit. Please try again later."
        headers = {"retry-after": str(max(1, round(wait))), "anthropic-ratelimit-requests-reset": reset,
                   "x-should-retry": "true"}
        return 429, _error("rate_limit_error", message), headers

    def overloaded(self) -> Answer:
        return 529, _error("overloaded_error", "Overloaded"), {}

    def server_error(self) -> Answer:
        return 500, _error("api_error", "Internal server error"), {}

    def bad_request(self, message: str) -> Answer:
        return 400, _error("invalid_request_error", message), {}

    def check(self, request: web.Request, payload: dict[str, Any]) -> Answer | None:
        if "anthropic-version" not in request.headers:
            return self.bad_request("anthropic-version: header is required")
        if request.headers.get("authorization"):
            return 401, _error("authentication_error", "invalid x-api-key"), {}  # a client credential leaked through
        if payload.get("model") == "no-such-model":
            return 404, _error("not_found_error", "model: no-such-model"), {}
        return None

    # -- endpoints ---------------------------------------------------------------------------
    def _usage_in(self, payload: dict[str, Any]) -> int:
        return 10 * _count(payload.get("messages"))

    async def _messages(self, c: Any) -> web.StreamResponse:
        fake, payload = self.fake, c.payload
        mid = f"msg_{next(fake._ids):024x}"
        model = payload.get("model", MODEL)
        prompt = self._usage_in(payload)
        if not c.stream:
            return self.json({
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": _TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": COMPLETION_TOKENS},
            })
        start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        for i in range(fake.stream_chunks):
            delta = {"type": "text_delta", "text": _PIECES[i % len(_PIECES)]}
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": COMPLETION_TOKENS}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        frames = [_sse(orjson.dumps(e), name) for name, e in events]
        # an in-stream overload, as Anthropic sends it (karthink/gptel#1512)
        error = _sse(orjson.dumps({"type": "error", "error": {"details": None, "type": "overloaded_error",
                                                               "message": "Overloaded"}}), "error")
        return await fake._stream(c, frames, error)

    async def _count_tokens(self, c: Any) -> web.StreamResponse:
        return self.json({"input_tokens": self._usage_in(c.payload)})

    async def _models(self, c: Any) -> web.StreamResponse:
        data = [{"type": "model", "id": MODEL, "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}]
        return self.json({"data": data, "has_more": False, "first_id": MODEL, "last_id": MODEL})

    async def _batch(self, c: Any) -> web.StreamResponse:
        n = len(c.payload.get("requests") or [])
        return self.json({"id": f"msgbatch_{next(self.fake._ids):016x}", "type": "message_batch",
                          "processing_status": "in_progress",
                          "request_counts": {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}})
