"""The gateway end to end (in process): routing, auth, failover, key states, errors, bodies."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from keyrelay.testing.fake_upstream import SPEECH_BYTES, Behavior, KeySpec

from .conftest import OTHER_POOL_TOKEN, TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
GOOD2 = "sk-good-1111111111111111111111111111BBBB"
BAD = "sk-bad-22222222222222222222222222222CCCC"
DEACT = "sk-deact-333333333333333333333333333DDDD"
QUOTA = "sk-quota-444444444444444444444444444EEEE"
RATE = "sk-rate-5555555555555555555555555555FFFF"
FAULT = "sk-fault-66666666666666666666666666GGGG"
MORE_GOOD = {f"sk-more-{i:032d}": Behavior.OK for i in range(4)}  # keeps bad keys a minority
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_healthy_key_answers_and_its_usage_is_counted(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 200
        body = await r.json()
    assert body["object"] == "chat.completion"
    await gw.runtime.flush()
    rec = await gw.stored(GOOD)
    assert rec.counters.requests == 1 and rec.counters.successes == 1
    assert rec.counters.prompt_tokens == body["usage"]["prompt_tokens"]
    assert rec.counters.completion_tokens == body["usage"]["completion_tokens"]


async def test_bad_keys_fail_over_to_a_good_one_and_are_retired_at_first_failure(make_gateway):
    gw = await make_gateway(
        {BAD: Behavior.INVALID, DEACT: Behavior.DEACTIVATED, QUOTA: Behavior.QUOTA, GOOD: Behavior.OK, **MORE_GOOD},
        pool={"strategy": "round_robin"},
    )
    for _ in range(20):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200, await r.text()
    assert gw.fake.count(BAD) == 1 and gw.fake.count(DEACT) == 1 and gw.fake.count(QUOTA) == 1
    assert gw.state(BAD) == "invalid" and gw.state(DEACT) == "invalid" and gw.state(QUOTA) == "exhausted"
    stored = await gw.stored(DEACT)
    assert stored.state.value == "invalid" and stored.reason == "account deactivated"
    assert (await gw.stored(QUOTA)).reason == "quota exhausted"
    events = [e for e in await gw.store.events() if e.actor == "traffic"]
    assert {(e.key_id, e.to_state) for e in events} == {
        (gw.ids[BAD], "invalid"), (gw.ids[DEACT], "invalid"), (gw.ids[QUOTA], "exhausted")
    }


@pytest.mark.parametrize(
    ("behavior", "reason"),
    [
        (Behavior.RATE_LIMITED, "rate limited"),  # the wait in retry-after / x-ratelimit-reset-*
        # Gemini words a per-minute limit "You exceeded your current quota" (wait in RetryInfo):
        # slow down, not spent
        (Behavior.GEMINI_RATE_LIMITED, "per-minute quota"),
    ],
)
async def test_a_rate_limited_key_cools_for_the_asked_time_then_comes_back(make_gateway, behavior, reason):
    gw = await make_gateway(
        {RATE: KeySpec(behavior, retry_after=0.4, rate_limit_for=0.2), GOOD: Behavior.OK},
        pool={"strategy": "round_robin"},
    )
    for _ in range(4):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    assert gw.state(RATE) == "cooling"
    rec = await gw.stored(RATE)
    assert rec.reason == reason
    assert 0.2 < rec.until - time.time() <= 0.45
    assert gw.fake.count(RATE) == 1  # cooling: no new request
    await asyncio.sleep(0.5)
    for _ in range(6):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    assert gw.fake.count(RATE) >= 2  # used again after its reset
    assert gw.state(RATE) == "active"


async def test_upstream_faults_retry_elsewhere_without_blaming_the_key(make_gateway):
    gw = await make_gateway({FAULT: Behavior.SERVER_ERROR, GOOD: Behavior.OK}, pool={"strategy": "round_robin"})
    for _ in range(6):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    assert gw.state(FAULT) == "active"
    await gw.runtime.flush()
    assert (await gw.stored(FAULT)).counters.upstream_fault >= 1


async def test_a_client_error_is_returned_unchanged_and_not_retried(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK, GOOD2: Behavior.OK})
    async with gw.post("/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    assert gw.fake.count(GOOD) + gw.fake.count(GOOD2) == 1
    assert gw.state(GOOD) == "active" and gw.state(GOOD2) == "active"


async def test_a_model_no_key_may_use_is_asked_of_each_key_once_then_answered_at_once(make_gateway):
    # OpenAI's 404 "The model `gpt-4` does not exist or you do not have access to it" came from
    # a key without gpt-4 access (timkmecl/chatgpt-vscode#45): another key may have it
    gw = await make_gateway({GOOD: Behavior.OK, GOOD2: Behavior.OK})
    async with gw.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"}) as r:
        assert r.status == 404
        body = await r.json()
    assert body["error"]["code"] == "model_not_found"
    assert gw.fake.count(GOOD) == 1 and gw.fake.count(GOOD2) == 1
    async with gw.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"}) as r:
        assert r.status == 404
    assert gw.fake.count(GOOD) + gw.fake.count(GOOD2) == 3  # skipped for that model: one ask per request
    assert gw.state(GOOD) == "active" and gw.state(GOOD2) == "active"


async def test_when_every_key_fails_the_last_error_comes_back_without_key_material(make_gateway):
    gw = await make_gateway({BAD: Behavior.INVALID, DEACT: Behavior.INVALID})
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 401
        text = await r.text()
        attempts = r.headers["x-keyrelay-attempts"]
    assert attempts == "2"
    err = orjson.loads(text)["error"]
    assert err["code"] == "invalid_api_key"
    for secret in (BAD, DEACT):
        assert secret[:8] not in text and secret[-8:] not in text
    # and now no key is left: 503 in the OpenAI shape
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 503
        assert (await r.json())["error"]["code"] == "no_key_available"


async def test_no_eligible_key_answers_503_with_retry_after_of_the_soonest_cooling_key(make_gateway):
    gw = await make_gateway({RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=20)})
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 429  # the only key's answer, redacted
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 503
        assert 19 <= int(r.headers["Retry-After"]) <= 20
        assert (await r.json())["error"]["type"] == "server_error"


async def test_streaming_passes_events_through_and_counts_usage(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with gw.post("/v1/chat/completions", json=req) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        text = await r.text()
    assert text.count("chat.completion.chunk") >= 5 and text.rstrip().endswith("data: [DONE]")
    await gw.runtime.flush()
    rec = await gw.stored(GOOD)
    assert rec.counters.successes == 1 and rec.counters.completion_tokens > 0


async def test_an_error_in_the_first_stream_event_fails_over_before_anything_is_sent(make_gateway):
    gw = await make_gateway({FAULT: Behavior.STREAM_ERROR, GOOD: Behavior.OK}, pool={"strategy": "round_robin"})
    for _ in range(4):
        async with gw.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            text = await r.text()
        assert '"error"' not in text and "[DONE]" in text
    assert gw.fake.count(FAULT) >= 1 and gw.state(FAULT) == "active"


async def test_a_stream_cut_after_the_first_byte_is_not_retried_and_ends_with_an_error_frame(make_gateway):
    gw = await make_gateway({FAULT: Behavior.STREAM_CUT})
    async with gw.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        text = await r.text()
    assert "chat.completion.chunk" in text and '"code":"stream_cut"' in text
    assert gw.fake.count(FAULT) == 1
    await gw.runtime.flush()
    assert (await gw.stored(FAULT)).counters.upstream_fault == 1


async def test_a_client_that_disconnects_cancels_upstream_and_costs_the_key_nothing(make_gateway):
    gw = await make_gateway({GOOD: Behavior.HANG})
    with_timeout = aiohttp.ClientTimeout(total=0.3)
    try:
        async with gw.post("/v1/chat/completions", json=CHAT, timeout=with_timeout) as r:
            await r.read()
    except TimeoutError:
        pass
    await asyncio.sleep(0.2)
    pool = gw.runtime.pools["openai"]
    assert pool.state.inflight(gw.ids[GOOD]) == 0  # the lease was released
    await gw.runtime.flush()
    rec = await gw.stored(GOOD)
    assert rec.state.value == "active" and rec.counters.requests == 0


async def test_clients_need_a_token_and_their_credentials_never_reach_upstream(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.post("/v1/chat/completions", token=None, json=CHAT) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_api_key"
    async with gw.post("/v1/chat/completions", token="kr-wrong", json=CHAT) as r:
        assert r.status == 401
    async with gw.post("/v1/chat/completions", token=OTHER_POOL_TOKEN, json=CHAT) as r:
        assert r.status == 403
    async with gw.post(
        "/v1/chat/completions", json=CHAT,
        headers={"api-key": "client-azure-key", "x-api-key": "client-anthropic", "Cookie": "session=secret",
                 "OpenAI-Organization": "org-123"},
    ) as r:
        assert r.status == 200
    assert gw.fake.count(None) == 0
    call = gw.fake.calls[-1]
    assert call.headers["authorization"] == f"Bearer {GOOD}"
    assert call.headers.get("openai-organization") == "org-123"
    sent = repr(call.headers)
    for leaked in (TOKEN, "client-azure-key", "client-anthropic", "session=secret"):
        assert leaked not in sent


async def test_bodies_above_the_limit_get_413_in_the_openai_shape(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, pool={"retry": {"max_body_bytes": 1000}})
    async with gw.post("/v1/chat/completions", data=b"x" * 5000, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "request_too_large"
    assert gw.fake.count(GOOD) == 0


async def test_every_endpoint_passes_through(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", b"\x00\x01" * 50_000, filename="a.wav", content_type="audio/wav")
    async with gw.post("/v1/audio/transcriptions", data=form) as r:
        assert r.status == 200
        assert (await r.json())["text"].startswith("100000 bytes")
    async with gw.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy"}) as r:
        assert r.status == 200 and await r.read() == SPEECH_BYTES
    async with gw.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}) as r:
        assert r.status == 200 and len((await r.json())["data"][0]["embedding"]) == 8
    async with gw.get("/v1/models") as r:
        assert r.status == 200 and (await r.json())["object"] == "list"
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"a":1}\n', filename="b.jsonl")
    async with gw.post("/v1/files", data=form) as r:
        file_id = (await r.json())["id"]
    async with gw.get(f"/v1/files/{file_id}/content") as r:
        assert await r.read() == b'{"a":1}\n'
    async with gw.session.delete(gw.url + f"/v1/files/{file_id}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200 and (await r.json())["deleted"] is True


async def test_pools_are_served_under_their_name_and_v1_goes_to_the_default(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.post("/openai/v1/chat/completions", json=CHAT) as r:
        assert r.status == 200
    assert gw.fake.calls[-1].path == "/v1/chat/completions"
    async with gw.post("/nope/v1/chat/completions", json=CHAT) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "unknown_pool"
    async with gw.session.get(gw.url + "/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    assert len(gw.fake.calls) == 1  # /healthz does not touch upstream


async def test_healthz_answers_get_and_head_only_and_needs_no_token(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.session.get(gw.url + "/healthz") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}  # nothing about the pools
    async with gw.session.head(gw.url + "/healthz") as r:
        assert r.status == 200
    async with gw.session.post(gw.url + "/healthz") as r:
        assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
        assert (await r.json())["error"]["code"] == "method_not_allowed"
    assert gw.fake.calls == []


async def test_keys_added_by_another_process_are_used_within_a_second(make_gateway, tmp_path):
    from keyrelay.stores import open_store

    url = f"sqlite:///{tmp_path}/shared.db"
    gw = await make_gateway({BAD: Behavior.INVALID}, store_url=url)
    gw.fake.set(GOOD, Behavior.OK)
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 401
    other = open_store(url)  # as the CLI would
    await other.open()
    await other.add_keys("openai", [GOOD], time.time())
    await other.close()
    await asyncio.sleep(1.0)
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        assert r.status == 200


async def test_a_late_success_does_not_revive_a_key_retired_meanwhile(make_gateway):
    gw = await make_gateway({GOOD: KeySpec(Behavior.SLOW, delay=0.4)})
    slow = asyncio.ensure_future(_post_status(gw))
    await asyncio.sleep(0.1)
    gw.fake.set(GOOD, Behavior.INVALID)
    pool = gw.runtime.pools["openai"]
    lease = pool.acquire()
    assert lease is not None
    from keyrelay.core.model import Outcome, Verdict

    t = pool.observe(lease, Verdict(Outcome.INVALID_KEY, 401, "invalid_api_key"))
    pool.release(lease)
    assert t is not None
    await pool.persist(t, Verdict(Outcome.INVALID_KEY, 401), lease.version)
    assert await slow == 200
    assert gw.state(GOOD) == "invalid"
    assert (await gw.stored(GOOD)).state.value == "invalid"


async def _post_status(gw) -> int:
    async with gw.post("/v1/chat/completions", json=CHAT) as r:
        await r.read()
        return r.status


async def test_every_request_gets_an_access_line_refused_ones_included(make_gateway, caplog):
    import logging

    gw = await make_gateway({GOOD: Behavior.OK})
    with caplog.at_level(logging.INFO, logger="keyrelay.access"):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        async with gw.post("/v1/chat/completions", token="kr-wrong", json=CHAT) as r:
            assert r.status == 401
        async with gw.post("/v1/chat/completions", token=OTHER_POOL_TOKEN, json=CHAT) as r:
            assert r.status == 403
        async with gw.post("/nope/v1/chat/completions", json=CHAT) as r:
            assert r.status == 404
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "keyrelay.access"]
    assert len(lines) == 4
    assert "status=200 outcome=ok attempts=1" in lines[0] and "client=test" in lines[0]
    assert "pool=openai key=- masked=- method=POST path=/v1/chat/completions status=401 outcome=unauthorized" in lines[1]
    assert "status=403 outcome=forbidden attempts=0" in lines[2] and "client=other" in lines[2]
    assert "pool=- " in lines[3] and "status=404 outcome=unknown_pool" in lines[3]
    assert not any(GOOD in line for line in lines)
