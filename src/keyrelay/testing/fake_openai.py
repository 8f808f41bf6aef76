"""The OpenAI API's endpoints on the fake upstream: chat and legacy completions (whole and
streamed), embeddings, the Responses API, models, audio and files. Every answer first goes
through :meth:`FakeServer._serve <keyrelay.testing.fake_server.FakeServer>` (the key's
behaviour); these only build the successful answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from keyrelay.testing.fake_server import Ctx, FakeServer, Response
from keyrelay.testing.openai_bodies import (
    _DONE,
    _EMBEDDING,
    _MODELS,
    _NO_FILE,
    _OK_HEADERS,
    _PIECES,
    _STREAM_ERR,
    _TEXT,
    COMPLETION_TOKENS,
    SPEECH_BYTES,
    _count,
    _err,
    _sse,
)

__all__ = ["OpenAIEndpoints"]


class OpenAIEndpoints(FakeServer):
    """The answers of OpenAI's endpoints (the Azure fake serves them too)."""

    def _usage(self, n_inputs: int, c: Ctx | None = None) -> dict[str, int]:
        """The usage of an answer; with ``c``, that answer carries it (``served`` counts it)."""
        p = 10 * n_inputs
        u = {"prompt_tokens": p, "completion_tokens": COMPLETION_TOKENS, "total_tokens": p + COMPLETION_TOKENS}
        if c is not None:
            c.usage = u
        return u

    def _pieces(self) -> list[str]:
        return [_PIECES[i % len(_PIECES)] for i in range(self.stream_chunks)]

    async def _chunked(self, c: Ctx, base: dict[str, Any], choice: Callable[[int, str, bool], Any]) -> Response:
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

    async def _chat(self, c: Ctx) -> Response:
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

    async def _completion(self, c: Ctx) -> Response:
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

    async def _embeddings(self, c: Ctx) -> Response:
        n = _count(c.payload.get("input"))
        data = [{"object": "embedding", "index": i, "embedding": _EMBEDDING} for i in range(n)]
        body = {"object": "list", "data": data, "model": c.payload.get("model", "text-embedding-3-small")}
        body["usage"] = {"prompt_tokens": 10 * n, "total_tokens": 10 * n}
        c.usage = {"prompt_tokens": 10 * n}
        return self._json(200, orjson.dumps(body))

    async def _responses(self, c: Ctx) -> Response:
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

    async def _models(self, c: Ctx) -> Response:
        return self._json(200, _MODELS)

    async def _model(self, c: Ctx) -> Response:
        body = {"id": c.request.match_info["model"], "object": "model", "created": 1715367049, "owned_by": "system"}
        return self._json(200, orjson.dumps(body))

    async def _transcription(self, c: Ctx) -> Response:
        data = c.payload.get("file")
        if not isinstance(data, bytes):
            return self._json(400, _NO_FILE)
        return self._json(200, orjson.dumps({"text": f"{len(data)} bytes received"}))

    async def _speech(self, c: Ctx) -> Response:
        headers = {"x-request-id": f"req_{next(self._ids):024x}", **_OK_HEADERS}
        return web.Response(body=SPEECH_BYTES, headers=headers, content_type="audio/mpeg")

    async def _file_upload(self, c: Ctx) -> Response:
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

    async def _file_delete(self, c: Ctx) -> Response:
        fid = c.request.match_info["file_id"]
        if self.files.pop(fid, None) is None:
            return self._no_file(fid)
        return self._json(200, orjson.dumps({"id": fid, "object": "file", "deleted": True}))

    async def _file_content(self, c: Ctx) -> Response:
        fid = c.request.match_info["file_id"]
        if fid not in self.files:
            return self._no_file(fid)
        headers = {"x-request-id": f"req_{next(self._ids):024x}"}
        return web.Response(body=self.files[fid][2], headers=headers, content_type="application/octet-stream")
