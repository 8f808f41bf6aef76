"""Library mode with the native dialects: ``keyrelay.httpx_client(pool)`` inside the official
``anthropic`` SDK (sync and async, streaming and not), the ``google-genai`` SDK and
``openai.AzureOpenAI``, against the fake upstream's native APIs, over pools mixing healthy,
invalid, spent, rate-limited and overloaded keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

import keyrelay
from keyrelay.client import Pool
from keyrelay.core.model import KeyState
from keyrelay.core.policy import RetryPolicy
from keyrelay.testing.fake_upstream import Behavior, KeySpec

from .conftest import ThreadedUpstream, states

STREAMED = "Hello! How can I"  # the fake streams five pieces
MSG: Any = [{"role": "user", "content": "hi"}]
RETRY = RetryPolicy(max_attempts=6)


def _keys(prefix: str) -> dict[str, Behavior | KeySpec]:
    keys: dict[str, Behavior | KeySpec] = {f"{prefix}-healthy-{i}-{'h' * 24}": Behavior.OK for i in range(5)}
    keys[f"{prefix}-invalid-{'i' * 24}"] = Behavior.INVALID
    keys[f"{prefix}-spent-{'s' * 24}"] = Behavior.CREDIT_EXHAUSTED
    keys[f"{prefix}-ratelimited-{'r' * 24}"] = KeySpec(Behavior.RATE_LIMITED, retry_after=600)
    keys[f"{prefix}-busy-{'o' * 24}"] = Behavior.OVERLOADED  # not "overloaded": redaction drops pieces of keys
    return keys


EXPECTED = {"invalid": KeyState.INVALID, "spent": KeyState.EXHAUSTED, "ratelimited": KeyState.COOLING,
            "busy": KeyState.ACTIVE, "healthy": KeyState.ACTIVE}


def _check(pool: Pool, up: ThreadedUpstream, prefix: str, token: str = "unused") -> None:
    for secret, state in states(pool).items():
        kind = secret[len(prefix) + 1 :].split("-")[0]
        assert state is EXPECTED[kind], (secret, state)
        assert up.count(secret) > 0, f"{secret} was never tried"
    calls = [c for c in up.fake.calls if c.key is not None]
    assert calls and all(c.key != token and token not in c.path for c in calls)


def _pool(make_pool: Callable[..., Pool], up: ThreadedUpstream, provider: str, keys: dict[str, Any]) -> Pool:
    return make_pool(list(keys), provider=provider, base_url=f"{up.fake.root}/{provider}", strategy="round_robin",
                     retry=RETRY)


def test_anthropic_sync_messages_stream_and_count(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]) -> None:
    keys = _keys("sk-ant-api03")
    up = upstream(keys)
    pool = _pool(make_pool, up, "anthropic", keys)
    client = anthropic.Anthropic(api_key="unused", base_url=pool.base_url, max_retries=0, http_client=keyrelay.httpx_client(pool))
    for i in range(18):
        if i % 3 == 0:
            r = client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
            assert r.content[0].text == "Hello! How can I help?"  # type: ignore[union-attr]
        elif i % 3 == 1:
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=MSG) as s:
                assert "".join(s.text_stream) == STREAMED
                assert s.get_final_message().usage.input_tokens == 10
        else:
            assert client.messages.count_tokens(model="claude-sonnet-4-5", messages=MSG).input_tokens == 10
    client.close()
    pool.flush()
    _check(pool, up, "sk-ant-api03")
    for c in up.fake.calls:
        assert c.headers.get("x-api-key") == c.key and "authorization" not in c.headers


def test_anthropic_async_streaming(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]) -> None:
    keys = _keys("sk-ant-api03")
    up = upstream(keys)
    pool = _pool(make_pool, up, "anthropic", keys)

    async def run() -> None:
        client = anthropic.AsyncAnthropic(api_key="unused", base_url=pool.base_url, max_retries=0,
                                          http_client=keyrelay.async_httpx_client(pool))

        async def one(i: int) -> None:
            if i % 2:
                stream = await client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG, stream=True)
                kinds = [event.type async for event in stream]
                assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
            else:
                r = await client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
                assert r.usage.output_tokens == 7

        await asyncio.gather(*(one(i) for i in range(18)))
        await client.close()

    asyncio.run(run())
    _check(pool, up, "sk-ant-api03")


def test_anthropic_stream_usage_is_counted(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]) -> None:
    secret = "sk-ant-api03-only-" + "k" * 24
    up = upstream({secret: Behavior.OK})
    pool = make_pool([secret], provider="anthropic", base_url=f"{up.fake.root}/anthropic")
    client = anthropic.Anthropic(api_key="unused", base_url=pool.base_url, max_retries=0, http_client=keyrelay.httpx_client(pool))
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=MSG) as s:
        assert "".join(s.text_stream) == STREAMED
    client.close()
    pool.flush()
    (record,) = pool.keys()
    # input from message_start, output from message_delta
    assert (record.counters.prompt_tokens, record.counters.completion_tokens) == (10, 7)


def test_google_genai_sdk(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]) -> None:
    keys = _keys("AIzaSy")
    up = upstream(keys)
    pool = _pool(make_pool, up, "gemini", keys)
    http = keyrelay.legacy_httpx_client(pool)
    options = types.HttpOptions(base_url=pool.base_url, httpx_client=http)
    client = genai.Client(api_key="unused", http_options=options)
    for i in range(18):
        if i % 3 == 0:
            assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text == "Hello! How can I help?"
        elif i % 3 == 1:
            parts = [c.text or "" for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")]
            assert "".join(parts) == STREAMED
        else:
            e = client.models.embed_content(model="text-embedding-004", contents="text")
            assert e.embeddings and len(e.embeddings[0].values or []) == 8
    http.close()
    _check(pool, up, "AIzaSy")
    assert all(c.headers.get("x-goog-api-key") == c.key for c in up.fake.calls)


@pytest.mark.parametrize("stream", [False, True])
def test_azure_openai_client(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool], stream: bool) -> None:
    keys = _keys("azkey")
    up = upstream(keys)
    pool = _pool(make_pool, up, "azure", keys)
    client = openai.AzureOpenAI(azure_endpoint=pool.base_url, api_key="unused", api_version="2024-10-21", max_retries=0,
                                http_client=keyrelay.httpx_client(pool))
    for _ in range(12):
        if stream:
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == STREAMED
        else:
            assert client.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content
    client.close()
    _check(pool, up, "azkey")
    assert all(c.headers.get("api-key") == c.key for c in up.fake.calls)


def test_gemini_key_in_the_query_is_replaced_by_the_pool_key(upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]) -> None:
    secret = "AIzaSy-only-" + "k" * 24
    up = upstream({secret: Behavior.OK})
    pool = make_pool([secret], provider="gemini", base_url=f"{up.fake.root}/gemini")
    with keyrelay.legacy_httpx_client(pool) as http:
        r = http.post(f"{pool.base_url}/v1beta/models/gemini-2.5-flash:generateContent?key=caller-own&alt=json",
                      json={"contents": [{"parts": [{"text": "hi"}]}]})
        assert r.status_code == 200, r.text
    (call,) = up.fake.calls
    assert call.key == secret and "key=" not in call.path and "alt=json" in call.path
    assert call.headers["x-goog-api-key"] == secret


def test_a_key_with_its_own_base_url_is_sent_there(upstream: Callable[..., ThreadedUpstream]) -> None:
    key = "azkey-own-resource-" + "k" * 24
    up = upstream({key: Behavior.OK})
    pool = Pool.from_keys([], provider="azure", base_url="http://127.0.0.1:9")
    try:
        async def add() -> None:
            await pool._runtime.store.add_keys(pool.name, [key], 0.0, base_url=f"{up.fake.root}/azure")

        pool._background.call(add(), 10)
        pool.refresh()
        client = openai.AzureOpenAI(azure_endpoint=pool.base_url, api_key="unused", api_version="2024-10-21",
                                    max_retries=0, http_client=keyrelay.httpx_client(pool))
        assert client.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content
        client.close()
        assert up.count(key) == 1
    finally:
        pool.close()
