"""Gemini's default stream — ``:streamGenerateContent`` without ``alt=sse``, ONE JSON array sent
element by element — relayed as it arrives by every driver of the flow (``conftest.py``): the
first element decides (an error there fails over), whole elements only reach the caller, usage is
read from the latest element, and a stream the upstream cuts ends as a closed array whose last
element is Google's error shape (``providers/json_stream.py``)."""

from __future__ import annotations

import time

import aiohttp
import orjson

from keyrelay.providers.json_stream import CUT_ELEMENT
from keyrelay.testing.fake_upstream import COMPLETION_TOKENS, Behavior

from .conftest import TOKEN, Driver, GatewayDriver

OK1 = "AIzaSy-fake-gemini-ok-000000000000001"
OK2 = "AIzaSy-fake-gemini-ok-000000000000002"
ERR = "AIzaSy-fake-gemini-err-00000000000001"
CUT = "AIzaSy-fake-gemini-cut-00000000000001"
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
FAKE = {"stream_chunks": 6, "chunk_delay": 0.02}


async def test_the_array_is_relayed_whole_and_its_usage_counted(driver: Driver) -> None:
    await driver.start({OK1: Behavior.OK}, provider="gemini", **FAKE)
    seen = await driver.stream(PATH, BODY)
    assert seen.status == 200 and seen.ctype == "application/json"
    doc = seen.json()
    assert len(doc) == 6 and doc[-1]["candidates"][0]["finishReason"] == "STOP"
    assert seen.key == OK1 and seen.attempts == 1
    c = (await driver.counters())[OK1]
    assert (c.successes, c.prompt_tokens, c.completion_tokens) == (1, 10, COMPLETION_TOKENS)


async def test_an_error_as_the_first_element_fails_over(driver: Driver) -> None:
    await driver.start({ERR: Behavior.STREAM_ERROR, OK1: Behavior.OK}, provider="gemini", **FAKE)
    tries = []
    for _ in range(2):  # round robin: one of the two requests goes to the erring key first
        seen = await driver.stream(PATH, BODY)
        assert seen.status == 200 and len(seen.json()) == 6 and seen.key == OK1
        tries.append(seen.attempts)
    assert sorted(tries) == [1, 2]
    assert driver.state(ERR) == "active"  # a 503 UNAVAILABLE is the provider's, not the key's
    assert (await driver.counters())[ERR].upstream_fault == 1


async def test_a_cut_array_ends_closed_with_the_error_element(driver: Driver) -> None:
    await driver.start({CUT: Behavior.STREAM_CUT}, provider="gemini", **FAKE)
    seen = await driver.stream(PATH, BODY)
    doc = seen.json()  # still one valid JSON array
    assert doc[-1] == orjson.loads(CUT_ELEMENT)
    assert all("candidates" in e for e in doc[:-1])
    assert driver.state(CUT) == "active"
    assert (await driver.counters())[CUT].upstream_fault == 1


async def test_a_caller_leaving_early_costs_the_key_nothing(driver: Driver) -> None:
    await driver.start({OK1: Behavior.OK, OK2: Behavior.OK}, provider="gemini", stream_chunks=20, chunk_delay=0.05)
    await driver.stream(PATH, BODY, stop_after=1)
    await driver.idle()
    counted = await driver.counters()
    assert all(c.requests == 0 for c in counted.values()), counted
    assert {driver.state(k) for k in (OK1, OK2)} == {"active"}


async def test_the_gateway_sends_the_first_element_before_the_last_is_made() -> None:
    gw = GatewayDriver()
    await gw.start({OK1: Behavior.OK}, provider="gemini", stream_chunks=8, chunk_delay=0.1)
    try:
        arrivals: list[float] = []
        async with aiohttp.ClientSession() as s, s.post(gw.root + PATH, json=BODY, headers={"x-goog-api-key": TOKEN}) as r:
            assert r.status == 200
            async for _ in r.content.iter_any():
                arrivals.append(time.monotonic())
        assert len(arrivals) >= 4, "the array came in one piece"
        assert arrivals[-1] - arrivals[0] > 0.4  # the first bytes came long before the end
    finally:
        await gw.close()
