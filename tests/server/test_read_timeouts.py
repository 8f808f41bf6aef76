"""Upstream read timeouts (server/deadlines.py): a silent upstream is left for another key
before anything was sent, and ends the stream with an error frame after; a slow but living
one is never cut."""

from __future__ import annotations

import time

from keyrelay.testing.fake_upstream import Behavior, KeySpec

HANGS = "sk-hangs-0000000000000000000000000000HHHH"
GOOD = "sk-good-1111111111111111111111111111GGGG"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_an_upstream_that_never_answers_is_left_for_another_key_after_the_read_timeout(make_gateway):
    gw = await make_gateway(
        {HANGS: Behavior.HANG, GOOD: Behavior.OK},
        pool={"strategy": "round_robin", "retry": {"read_timeout": 0.3}},
    )
    took = []
    for _ in range(2):  # round robin: one of the two starts on the silent key
        t0 = time.perf_counter()
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200, await r.text()
            assert r.headers["x-keyrelay-key"] == gw.ids[GOOD]
        took.append(time.perf_counter() - t0)
    assert gw.fake.count(HANGS) == 1
    assert 0.3 <= max(took) < 1.5  # the timeout, give or take the ticker's 75 ms
    await gw.runtime.flush()
    rec = await gw.stored(HANGS)
    assert rec.state.value == "active"  # silence is not the key's fault
    assert rec.counters.network_error == 1


async def test_a_lone_silent_upstream_gives_a_502_not_a_hang(make_gateway):
    gw = await make_gateway({HANGS: Behavior.HANG}, pool={"retry": {"read_timeout": 0.2}})
    t0 = time.perf_counter()
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_unreachable"
    assert time.perf_counter() - t0 < 1.5


async def test_a_stream_that_stalls_after_the_first_byte_ends_with_an_error_frame(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, pool={"retry": {"read_timeout": 0.2}}, fake_kw={"chunk_delay": 1.0})
    t0 = time.perf_counter()
    async with gw.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status == 200
        text = await r.text()
    assert time.perf_counter() - t0 < 0.9  # not waiting for the upstream's next chunk
    assert text.count("chat.completion.chunk") == 1 and '"code":"stream_cut"' in text
    await gw.runtime.flush()
    assert (await gw.stored(GOOD)).counters.upstream_fault == 1


async def test_a_slow_stream_whose_every_gap_is_within_the_timeout_passes_whole(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, pool={"retry": {"read_timeout": 0.4}}, fake_kw={"chunk_delay": 0.15})
    async with gw.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        text = await r.text()
    assert '"error"' not in text and text.rstrip().endswith("data: [DONE]")
    assert text.count("chat.completion.chunk") >= 5  # longer than one timeout in all


async def test_a_slow_answer_within_the_timeout_is_not_cut(make_gateway):
    gw = await make_gateway({GOOD: KeySpec(Behavior.SLOW, delay=0.25)}, pool={"retry": {"read_timeout": 0.5}})
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 200
    assert gw.fake.count(GOOD) == 1
