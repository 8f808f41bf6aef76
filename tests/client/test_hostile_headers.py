"""Library mode treats an upstream's answer headers as the gateway does: a hostile upstream that
echoes the key it was sent in ``WWW-Authenticate``, a request id and debugging headers gets no
fragment of 8 characters or more of the key to the caller, with httpx or httpx2, sync or async,
on every path (a 200 read, a stream, a passthrough body, an error answer). Keys of four shapes,
as in tests/server/test_hostile_upstream.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import orjson
import pytest

import keyrelay
from keyrelay.client import Pool
from keyrelay.core.redaction import MIN_FRAGMENT

SK = "sk-" + "Hq7Lm2Np4Rs6Tu8Vw0Xy1Za3Bc5De7Fg9Hi2Jk4Lm6No8Pq"
HEX = "4c1f0e9b7a2d83f56e0c1b9a8d7f6e5c"  # prefixless, as Azure's and many resellers'
GOOGLE = "AIzaSyB" + "4kR9tW2mQ7xZ3pL8vN1cF6hJ0sD5gY2a"
DASHED = "Tq-8vL_r2K-mZ_9xW4-pB_7nC3-yH_6"
CANARIES = (SK, HEX, GOOGLE, DASHED)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MODES = ("ok", "stream", "audio", "client_error")
LIBS = {"httpx": httpx, "httpx2": httpx2}
SYNC = {"httpx": keyrelay.legacy_httpx_client, "httpx2": keyrelay.httpx_client}
ASYNC = {"httpx": keyrelay.legacy_async_httpx_client, "httpx2": keyrelay.async_httpx_client}


def leaks(text: str) -> list[str]:
    return [k[i : i + MIN_FRAGMENT] for k in CANARIES for i in range(len(k) - MIN_FRAGMENT + 1) if k[i : i + MIN_FRAGMENT] in text]


def hostile(http: Any) -> Any:
    def handler(request: Any) -> Any:
        key = str(request.headers.get("authorization", ""))[7:]
        mode = request.url.params.get("mode", "")
        echo = [
            ("WWW-Authenticate", f'Bearer realm="api", error="invalid_token", key="{key}"'),
            ("x-debug-upstream-key", key),
            ("X-Key-Seen", key),
            ("x-request-id", f"req_{key}"),
            ("x-echo-part", key[2:14]),
            ("x-ratelimit-remaining-requests", "99"),
        ]
        if mode == "stream":
            body = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
            return http.Response(200, headers=[*echo, ("content-type", "text/event-stream")], content=body)
        if mode == "audio":
            return http.Response(200, headers=[*echo, ("content-type", "audio/mpeg")], content=b"ID3\x00\x00")
        if mode == "client_error":
            err = {"error": {"message": "bad request", "type": "invalid_request_error", "param": None, "code": None}}
            return http.Response(400, headers=[*echo, ("content-type", "application/json")], content=orjson.dumps(err))
        ok = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
        return http.Response(200, headers=[*echo, ("content-type", "application/json")], content=orjson.dumps(ok))

    return http.MockTransport(handler)


def _check(resp: Any) -> None:
    shown = "\n".join(f"{k}: {v}" for k, v in resp.headers.multi_items())
    assert leaks(shown) == [], shown
    # the rest of the upstream's headers are still there, the debugging ones are not
    assert resp.headers["x-ratelimit-remaining-requests"] == "99"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="api"')
    assert resp.headers["x-request-id"].startswith("req_")
    assert "x-debug-upstream-key" not in resp.headers and "x-key-seen" not in resp.headers
    assert resp.headers["x-keyrelay-attempts"] == "1"


@pytest.mark.parametrize("lib", sorted(LIBS))
@pytest.mark.parametrize("secret", CANARIES, ids=["sk", "hex", "google", "dashed"])
def test_sync_transport_shows_no_key_in_headers(lib: str, secret: str, make_pool: Callable[..., Pool]) -> None:
    http = LIBS[lib]
    pool = make_pool([secret])
    with SYNC[lib](pool, transport=hostile(http)) as c:
        for mode in MODES:
            r = c.post(f"https://up.test/v1/chat/completions?mode={mode}", json=CHAT)
            assert r.status_code == (400 if mode == "client_error" else 200)
            _check(r)


@pytest.mark.parametrize("lib", sorted(LIBS))
@pytest.mark.parametrize("secret", CANARIES, ids=["sk", "hex", "google", "dashed"])
def test_async_transport_shows_no_key_in_headers(lib: str, secret: str, make_pool: Callable[..., Pool]) -> None:
    http = LIBS[lib]
    pool = make_pool([secret])

    async def run() -> None:
        async with ASYNC[lib](pool, transport=hostile(http)) as c:
            for mode in MODES:
                r = await c.post(f"https://up.test/v1/chat/completions?mode={mode}", json=CHAT)
                assert r.status_code == (400 if mode == "client_error" else 200)
                _check(r)

    asyncio.run(run())


@pytest.mark.parametrize("lib", sorted(LIBS))
def test_an_error_answer_with_only_debugging_headers_keeps_none(lib: str, make_pool: Callable[..., Pool]) -> None:
    http = LIBS[lib]

    def handler(request: Any) -> Any:
        key = str(request.headers.get("authorization", ""))[7:]
        return http.Response(400, headers=[("x-debug-key", key)], content=b'{"error":{"message":"bad"}}')

    pool = make_pool([SK])
    with SYNC[lib](pool, transport=http.MockTransport(handler)) as c:
        r = c.post("https://up.test/v1/chat/completions", json=CHAT)
    assert r.status_code == 400 and "x-debug-key" not in r.headers
    assert leaks("\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())) == []
