"""What the openai SDK makes of keyrelay's own answers, from the gateway and from library mode:
no key left (503, and whether to retry), an empty pool (what to run), a tripped
correlated-failure guard (never "your API key is wrong"), and which key an error came from."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

import keyrelay
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

from .conftest import TOKEN

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
EIGHT_INVALID = {f"sk-proj-rejected{i}-{'r' * 30}{i:04d}": Behavior.INVALID for i in range(8)}
RATE = "sk-proj-cooling-" + "c" * 30 + "C001"
INVALID = "sk-proj-invalid-" + "i" * 30 + "I001"
GOOD = "sk-proj-good-" + "g" * 30 + "G001"


def sdk(url: str, retries: int = 2) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=retries)


async def _status_error(client: openai.AsyncOpenAI) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(**CHAT)
    return info.value


# -- the gateway ------------------------------------------------------------------------------
async def test_no_key_coming_back_by_itself_tells_the_sdk_not_to_retry(make_gateway: Any) -> None:
    gw = await make_gateway({INVALID: Behavior.INVALID})
    async with sdk(gw.url + "/v1", retries=0) as client:
        await _status_error(client)  # retires the only key
    async with sdk(gw.url + "/v1") as client:  # the SDK's default retries on
        started = time.monotonic()
        err = await _status_error(client)
        took = time.monotonic() - started
    assert err.status_code == 503 and err.code == "no_key_available"
    assert err.response.headers["x-should-retry"] == "false" and "retry-after" not in err.response.headers
    assert took < 0.4, "the SDK waited to retry in vain"
    assert "keyrelay keys list --pool openai" in err.message
    assert gw.fake.count(INVALID) == 1


async def test_a_cooling_key_keeps_retry_after_and_lets_the_sdk_retry(make_gateway: Any) -> None:
    gw = await make_gateway({RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=20)})
    async with sdk(gw.url + "/v1", retries=0) as client:
        first = await _status_error(client)
        assert first.status_code == 429
        err = await _status_error(client)
    assert err.status_code == 503
    assert 19 <= int(err.response.headers["retry-after"]) <= 20
    assert "x-should-retry" not in err.response.headers


async def test_an_empty_pool_says_which_command_adds_keys(make_gateway: Any) -> None:
    gw = await make_gateway({})
    async with sdk(gw.url + "/v1", retries=0) as client:
        err = await _status_error(client)
    assert err.status_code == 503 and err.code == "no_key_available"
    assert "keyrelay keys add --pool openai" in err.message
    assert err.response.headers["x-should-retry"] == "false"


async def test_a_tripped_guard_is_the_gateways_trouble_never_the_clients_credentials(make_gateway: Any) -> None:
    gw = await make_gateway(EIGHT_INVALID)
    async with sdk(gw.url + "/v1", retries=0) as client:
        await _status_error(client)  # four keys retired: half of the pool, the guard's limit
        err = await _status_error(client)  # the fifth would pass the limit: the guard trips
        again = await _status_error(client)
    for e in (err, again):
        assert not isinstance(e, openai.AuthenticationError)
        assert e.status_code == 502 and e.code == "upstream_keys_rejected"
        assert "Incorrect API key provided" in e.message  # the upstream's reason
        assert e.response.headers["x-keyrelay-key"] in gw.ids.values()
        for secret in EIGHT_INVALID:
            assert secret[10:-4] not in e.message
    states = sorted(gw.state(k) for k in EIGHT_INVALID)
    assert states == ["active"] * 4 + ["invalid"] * 4


async def test_error_answers_name_the_key_they_came_from(make_gateway: Any) -> None:
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"}) as r:
        assert r.status == 404  # a client error, returned as it came
        assert r.headers["x-keyrelay-key"] == gw.ids[GOOD]
    gw2 = await make_gateway({RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=20)})
    async with gw2.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 429
        assert r.headers["x-keyrelay-key"] == gw2.ids[RATE]
        assert r.headers["x-keyrelay-attempts"] == "1"


async def test_a_network_error_answer_names_the_key_it_was_sent_with(make_gateway: Any) -> None:
    gw = await make_gateway({RATE: Behavior.STREAM_CUT})
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 502
        assert r.headers["x-keyrelay-key"] == gw.ids[RATE]


# -- library mode answers alike -----------------------------------------------------------------
async def test_library_mode_answers_a_tripped_guard_and_an_empty_pool_alike() -> None:
    async with FakeUpstream(dict(EIGHT_INVALID)) as fake:
        async with keyrelay.Pool.from_keys(list(EIGHT_INVALID), base_url=fake.url) as pool:
            client = openai.AsyncOpenAI(
                api_key="unused", base_url=fake.url, max_retries=0, http_client=keyrelay.async_httpx_client(pool)
            )
            async with client:
                await _status_error(client)
                err = await _status_error(client)
        assert err.status_code == 502 and err.code == "upstream_keys_rejected"
        assert not isinstance(err, openai.AuthenticationError)
        assert "Incorrect API key provided" in err.message
        assert err.response.headers["x-keyrelay-key"]

        async with keyrelay.Pool.from_keys([], base_url=fake.url) as empty:
            client = openai.AsyncOpenAI(
                api_key="unused", base_url=fake.url, max_retries=2, http_client=keyrelay.async_httpx_client(empty)
            )
            async with client:
                started = time.monotonic()
                err = await _status_error(client)
                assert time.monotonic() - started < 0.4
        assert err.status_code == 503 and "keyrelay keys add --pool openai" in err.message
        assert err.response.headers["x-should-retry"] == "false"
        await asyncio.sleep(0)
