"""The official ``anthropic`` and ``google-genai`` SDKs and ``openai.AsyncAzureOpenAI``, unchanged
but for base URL and keyrelay token, through the gateway to the fake upstream's native APIs, over
pools that mix healthy, invalid, spent, rate-limited and overloaded keys: no error reaches the
client, each bad key ends in the right state, the overloaded ones are not blamed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import orjson
import pytest
from aiohttp import web
from google import genai
from google.genai import types

from keyrelay.config import parse_settings
from keyrelay.core.model import KeyState
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

TOKEN = "kr-native-token-abcdefghijklmnop"
STREAMED = "Hello! How can I"  # the fake streams five pieces


def _keys(prefix: str) -> dict[str, Behavior | KeySpec]:
    """Five healthy keys and one of each bad kind (fewer than half: the correlated-failure guard
    stays quiet)."""
    keys: dict[str, Behavior | KeySpec] = {f"{prefix}-healthy-{i}-{'h' * 24}": Behavior.OK for i in range(5)}
    keys[f"{prefix}-invalid-{'i' * 24}"] = Behavior.INVALID
    keys[f"{prefix}-spent-{'s' * 24}"] = Behavior.CREDIT_EXHAUSTED
    keys[f"{prefix}-ratelimited-{'r' * 24}"] = KeySpec(Behavior.RATE_LIMITED, retry_after=600)
    keys[f"{prefix}-busy-{'o' * 24}"] = Behavior.OVERLOADED  # not "overloaded": redaction drops pieces of keys
    return keys


POOLS = {"anthropic": _keys("sk-ant-api03"), "gemini": _keys("AIzaSy"), "azure": _keys("azkey")}
EXPECTED = {"invalid": KeyState.INVALID, "spent": KeyState.EXHAUSTED, "ratelimited": KeyState.COOLING,
            "busy": KeyState.ACTIVE, "healthy": KeyState.ACTIVE}


class NativeGateway:
    def __init__(self, url: str, runtime: Runtime, fake: FakeUpstream) -> None:
        self.url, self.runtime, self.fake = url, runtime, fake

    def states(self, pool: str) -> dict[str, KeyState]:
        return {r.secret: r.state for r in self.runtime.pools[pool].records()}

    def check_states(self, pool: str) -> None:
        for secret, state in self.states(pool).items():
            kind = secret.split("-")[-3] if "healthy" in secret else secret.split("-")[-2]
            assert state is EXPECTED[kind], (secret, state)

    def upstream_calls(self, pool: str) -> list[Any]:
        return [c for c in self.fake.calls if c.path.startswith("/" + pool + "/")]


@pytest.fixture
async def native() -> AsyncIterator[NativeGateway]:
    keys = {k: v for pool in POOLS.values() for k, v in pool.items()}
    fake = FakeUpstream(keys)
    await fake.start()
    retry = {"max_attempts": 7}
    doc = {
        "server": {"sync_interval": 0.1, "flush_interval": 0.1},
        "store": {"url": "memory://"},
        "pools": [
            {"name": name, "provider": name, "base_url": f"{fake.root}/{name}", "retry": retry, "strategy": "round_robin"}
            for name in POOLS
        ]
        + [{"name": "empty-anthropic", "provider": "anthropic"}, {"name": "empty-gemini", "provider": "gemini"}],
        "tokens": [{"name": "native", "pools": [*POOLS, "empty-anthropic", "empty-gemini"], "token": TOKEN}],
    }
    settings = parse_settings(doc, {})
    store = open_store(settings.store_url)
    await store.open()
    for name, pool_keys in POOLS.items():
        await store.add_keys(name, list(pool_keys), time.time())
    runtime = Runtime(settings, store)
    runner = GatewayRunner(runtime)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield NativeGateway(f"http://{host}:{port}", runtime, fake)
    finally:
        await runner.cleanup()
        await fake.close()


# -- anthropic ------------------------------------------------------------------------------------


async def test_anthropic_sdk_messages_stream_and_count_tokens(native: NativeGateway) -> None:
    client = anthropic.AsyncAnthropic(api_key=TOKEN, base_url=f"{native.url}/anthropic", max_retries=0)
    msg = [{"role": "user", "content": "hi"}]

    async def one(i: int) -> None:
        kind = i % 3
        if kind == 0:
            r = await client.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=msg)  # type: ignore[arg-type]
            assert r.content[0].text == "Hello! How can I help?"  # type: ignore[union-attr]
            assert r.usage.input_tokens == 10
        elif kind == 1:
            async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=msg) as s:  # type: ignore[arg-type]
                text = "".join([t async for t in s.text_stream])
                final = await s.get_final_message()
            assert text == STREAMED
            assert final.usage.output_tokens == 7
        else:
            n = await client.messages.count_tokens(model="claude-sonnet-4-5", messages=msg)  # type: ignore[arg-type]
            assert n.input_tokens == 10

    await asyncio.gather(*(one(i) for i in range(30)))
    await client.close()
    native.check_states("anthropic")
    calls = native.upstream_calls("anthropic")
    assert calls and all("authorization" not in c.headers for c in calls)  # x-api-key only, never Bearer
    assert all(c.headers.get("x-api-key") == c.key and c.key != TOKEN for c in calls)
    version = client.default_headers["anthropic-version"]
    assert all(c.headers.get("anthropic-version") == version for c in calls)  # the client's, forwarded


async def test_anthropic_token_as_bearer_and_errors_in_anthropics_shape(native: NativeGateway) -> None:
    bearer = anthropic.AsyncAnthropic(auth_token=TOKEN, base_url=f"{native.url}/anthropic", max_retries=0)
    r = await bearer.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert r.stop_reason == "end_turn"
    await bearer.close()
    wrong = anthropic.AsyncAnthropic(api_key="kr-wrong", base_url=f"{native.url}/anthropic", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        await wrong.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert err.value.body == {"type": "error", "error": {"type": "authentication_error", "message": err.value.body["error"]["message"]}}  # type: ignore[index]
    await wrong.close()


async def test_no_key_left_is_an_error_in_the_pools_own_shape(native: NativeGateway) -> None:
    async with aiohttp.ClientSession() as s:
        headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
        async with s.post(f"{native.url}/empty-anthropic/v1/messages", headers=headers, json={"messages": []}) as r:
            body = orjson.loads(await r.read())
            assert r.status == 503
            assert body == {"type": "error", "error": {"type": "overloaded_error", "message": body["error"]["message"]}}
        async with s.get(f"{native.url}/empty-gemini/v1beta/models", headers={"x-goog-api-key": TOKEN}) as r:
            body = orjson.loads(await r.read())
            assert r.status == 503
            assert body["error"]["code"] == 503 and body["error"]["status"] == "UNAVAILABLE"


async def test_anthropic_stream_error_event_first_fails_over(native: NativeGateway) -> None:
    records = native.runtime.pools["anthropic"].records()
    healthy = [r.secret for r in records if "healthy" in r.secret]
    for secret in healthy[:2]:  # with the four bad keys: at most six attempts for one request
        native.fake.set(secret, Behavior.STREAM_ERROR)
    client = anthropic.AsyncAnthropic(api_key=TOKEN, base_url=f"{native.url}/anthropic", max_retries=0)
    for _ in range(5):
        async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "x"}]) as s:
            assert "".join([t async for t in s.text_stream]) == STREAMED
    await client.close()
    states = native.states("anthropic")
    assert all(states[s] is KeyState.ACTIVE for s in healthy)  # an overload event is not the key's fault


# -- gemini ---------------------------------------------------------------------------------------


async def test_google_genai_sdk_generate_stream_and_embed(native: NativeGateway) -> None:
    # an httpx client of our own: the SDK's default async transport subclasses aiohttp's
    # ClientSession, which aiohttp warns about (and warnings are errors here)
    http = httpx.AsyncClient()
    options = types.HttpOptions(base_url=f"{native.url}/gemini", httpx_async_client=http)
    client = genai.Client(api_key=TOKEN, http_options=options)

    async def one(i: int) -> None:
        kind = i % 3
        if kind == 0:
            r = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
            assert r.text == "Hello! How can I help?"
            assert r.usage_metadata is not None and r.usage_metadata.candidates_token_count == 7
        elif kind == 1:
            parts = [c.text async for c in await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")]
            assert "".join(p or "" for p in parts) == STREAMED
        else:
            e = await client.aio.models.embed_content(model="text-embedding-004", contents="some text")
            assert e.embeddings and len(e.embeddings[0].values or []) == 8

    await asyncio.gather(*(one(i) for i in range(30)))
    await http.aclose()
    native.check_states("gemini")
    calls = native.upstream_calls("gemini")
    assert calls and all("key=" not in c.path for c in calls)
    assert all(c.headers.get("x-goog-api-key") == c.key and c.key != TOKEN for c in calls)


async def test_gemini_key_in_the_query_is_the_token_and_never_forwarded(native: NativeGateway) -> None:
    async with aiohttp.ClientSession() as s:
        url = f"{native.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={TOKEN}"
        async with s.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{native.url}/gemini/v1beta/models/:generateContent?key={TOKEN}", json={}) as r:
            assert r.status == 400
            doc = orjson.loads(await r.read())
            assert doc["error"]["status"] == "INVALID_ARGUMENT" and doc["error"]["code"] == 400
        async with s.get(f"{native.url}/gemini/v1beta/models?key=kr-wrong") as r:
            assert r.status == 401
            assert orjson.loads(await r.read())["error"]["status"] == "UNAUTHENTICATED"
        url = f"{native.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?key={TOKEN}"
        async with s.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}) as r:  # the streamed JSON array
            chunks = orjson.loads(await r.read())
            assert r.status == 200 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all(TOKEN not in c.path and "key=" not in c.path for c in native.upstream_calls("gemini"))


async def test_gemini_openai_compatible_endpoint_with_bearer(native: NativeGateway) -> None:
    client = openai.AsyncOpenAI(api_key=TOKEN, base_url=f"{native.url}/gemini/v1beta/openai/", max_retries=0)
    for _ in range(10):
        r = await client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
    await client.close()
    assert native.states("gemini")[f"AIzaSy-invalid-{'i' * 24}"] in (KeyState.INVALID, KeyState.ACTIVE)


# -- azure ----------------------------------------------------------------------------------------


async def test_azure_openai_client_chat_and_stream(native: NativeGateway) -> None:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=f"{native.url}/azure", api_key=TOKEN, api_version="2024-10-21", max_retries=0
    )
    msg = [{"role": "user", "content": "hi"}]

    async def one(i: int) -> None:
        if i % 2:
            r = await client.chat.completions.create(model="gpt-4o-mini", messages=msg)  # type: ignore[arg-type]
            assert r.choices[0].message.content == "Hello! How can I help?"
        else:
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True)  # type: ignore[arg-type]
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == STREAMED

    await asyncio.gather(*(one(i) for i in range(30)))
    await client.close()
    native.check_states("azure")
    calls = native.upstream_calls("azure")
    assert calls and all(c.headers.get("api-key") == c.key and c.key != TOKEN for c in calls)
    assert all("api-version=2024-10-21" in c.path for c in calls)


@pytest.mark.parametrize("pool", ["az", "openai"])
async def test_azure_paths_without_a_pool_go_to_the_default_azure_pool(pool: str) -> None:
    fake = FakeUpstream({"azkey-only-" + "k" * 24: Behavior.OK})
    await fake.start()
    doc = {
        "store": {"url": "memory://"},
        "pools": [{"name": pool, "provider": "azure", "base_url": f"{fake.root}/azure", "default": True}],
        "tokens": [{"name": "t", "pools": [pool], "token": TOKEN}],
    }
    settings = parse_settings(doc, {})
    store = open_store(settings.store_url)
    await store.open()
    await store.add_keys(pool, ["azkey-only-" + "k" * 24], time.time())
    runner = GatewayRunner(Runtime(settings, store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        client = openai.AsyncAzureOpenAI(azure_endpoint=f"http://{host}:{port}", api_key=TOKEN, api_version="2024-10-21",
                                         max_retries=0)
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
        await client.close()
    finally:
        await runner.cleanup()
        await fake.close()


async def test_a_key_with_its_own_base_url_is_sent_there() -> None:
    key = "azkey-own-resource-" + "k" * 24
    async with FakeUpstream({key: Behavior.OK}) as own:
        doc = {
            "store": {"url": "memory://"},
            "pools": [{"name": "az", "provider": "azure", "base_url": "http://127.0.0.1:9"}],
            "tokens": [{"name": "t", "pools": ["az"], "token": TOKEN}],
        }
        settings = parse_settings(doc, {})
        store = open_store(settings.store_url)
        await store.open()
        await store.add_keys("az", [key], time.time(), base_url=f"{own.root}/azure")
        runner = GatewayRunner(Runtime(settings, store))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            client = openai.AsyncAzureOpenAI(azure_endpoint=f"http://{host}:{port}/az", api_key=TOKEN,
                                             api_version="2024-10-21", max_retries=0)
            r = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content
            await client.close()
        finally:
            await runner.cleanup()
        assert own.count(key) == 1


async def test_a_stream_cut_after_content_ends_with_an_error_in_the_dialects_shape(native: NativeGateway) -> None:
    for rec in native.runtime.pools["anthropic"].records():
        native.fake.set(rec.secret, Behavior.STREAM_CUT)
    for rec in native.runtime.pools["gemini"].records():
        native.fake.set(rec.secret, Behavior.STREAM_CUT)
    async with aiohttp.ClientSession() as s:
        headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
        body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        async with s.post(f"{native.url}/anthropic/v1/messages", headers=headers, json=body) as r:
            text = await r.read()
        assert r.status == 200 and text.startswith(b"event: message_start")
        last = text.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        assert last.startswith(b"event: error\ndata: ")
        assert orjson.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "api_error"

        url = f"{native.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        async with s.post(url, headers={"x-goog-api-key": TOKEN}, json={"contents": []}) as r:
            text = await r.read()
        last = text.rstrip(b"\r\n").replace(b"\r\n", b"\n").rsplit(b"\n\n", 1)[-1]
        assert r.status == 200 and orjson.loads(last[6:])["error"]["status"] == "UNAVAILABLE"


async def test_every_key_failing_on_the_first_event_gives_the_sdk_its_own_error(native: NativeGateway) -> None:
    for rec in native.runtime.pools["anthropic"].records():
        native.fake.set(rec.secret, Behavior.STREAM_ERROR)
    client = anthropic.AsyncAnthropic(api_key=TOKEN, base_url=f"{native.url}/anthropic", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err:
        async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]) as s:
            async for _ in s.text_stream:
                pass
    assert err.value.status_code == 529
    assert err.value.response.headers.get_list("content-type") == ["application/json"]
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    await client.close()
    states = native.states("anthropic")
    assert all(states[s] is not KeyState.INVALID for s in states if "healthy" in s)


async def test_anthropic_models_and_batches_pass_through(native: NativeGateway) -> None:
    client = anthropic.AsyncAnthropic(api_key=TOKEN, base_url=f"{native.url}/anthropic", max_retries=0)
    for _ in range(6):  # over the bad keys too: each fails over
        models = await client.models.list()
        assert [m.id for m in models.data] == ["claude-sonnet-4-5"]
    batch = await client.messages.batches.create(
        requests=[{"custom_id": "a", "params": {"model": "claude-sonnet-4-5", "max_tokens": 8,
                                                "messages": [{"role": "user", "content": "hi"}]}}]
    )
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 1
    await client.close()
