"""The fake OpenAI upstream behaves as documented, and its answers classify as intended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from keyrelay.core.model import Outcome
from keyrelay.providers.openai import OpenAIDialect
from keyrelay.testing import Behavior, FakeUpstream, KeySpec
from keyrelay.testing.fake_upstream import COMPLETION_TOKENS, SPEECH_BYTES, go_duration

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "there"}]}
KEY = "sk-PMafPq1w2e3r4t5y6u7i8o9p0aE873"
dialect = OpenAIDialect()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(
    s: aiohttp.ClientSession, up: FakeUpstream, path: str, key: str, body: object = CHAT
) -> tuple[int, dict[str, str], bytes]:
    async with s.post(up.url + path, json=body, headers=auth(key)) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def test_ok_chat_completion(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        assert up.url.startswith("http://127.0.0.1:") and up.url.endswith("/v1")
        status, headers, body = await post(session, up, "/chat/completions", "k")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] and headers["x-ratelimit-reset-requests"] == "12ms"
    assert "x-ratelimit-remaining-requests" in headers
    doc = orjson.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"]
    assert doc["usage"] == {"prompt_tokens": 20, "completion_tokens": COMPLETION_TOKENS, "total_tokens": 27}
    assert dialect.classify(status, headers, body, 0.0).outcome is Outcome.OK
    (call,) = up.calls
    assert (call.key, call.method, call.path, call.stream) == ("k", "POST", "/v1/chat/completions", False)
    assert call.headers["authorization"] == "Bearer k" and orjson.loads(call.body) == CHAT
    assert call.at <= time.monotonic()


@pytest.mark.parametrize(
    ("behavior", "status", "code", "outcome"),
    [
        (Behavior.INVALID, 401, "invalid_api_key", Outcome.INVALID_KEY),
        (Behavior.DEACTIVATED, 401, "account_deactivated", Outcome.INVALID_KEY),
        (Behavior.QUOTA, 429, "insufficient_quota", Outcome.QUOTA_EXHAUSTED),
        (Behavior.CREDIT_EXHAUSTED, 429, "credit_balance_exhausted", Outcome.QUOTA_EXHAUSTED),
        (Behavior.RATE_LIMITED, 429, "rate_limit_exceeded", Outcome.RATE_LIMITED),
        (Behavior.SERVER_ERROR, 500, None, Outcome.UPSTREAM_FAULT),
        (Behavior.REGION_BLOCKED, 403, "unsupported_country_region_territory", Outcome.UPSTREAM_FAULT),
        (Behavior.STREAM_ERROR, 500, None, Outcome.UPSTREAM_FAULT),
    ],
    ids=lambda v: v.value if isinstance(v, Behavior) else None,
)
async def test_error_behaviours(
    session: aiohttp.ClientSession, behavior: Behavior, status: int, code: str | None, outcome: Outcome
) -> None:
    async with FakeUpstream({KEY: behavior}) as up:
        for path, body in (("/chat/completions", CHAT), ("/embeddings", {"model": "m", "input": "x"})):
            got, headers, raw = await post(session, up, path, KEY, body)
            assert got == status and headers["content-type"] == "application/json"
            err = orjson.loads(raw)["error"]
            assert err["code"] == code and err["message"]
            assert dialect.classify(got, headers, raw, 0.0).outcome is outcome
        async with session.get(up.url + "/models", headers=auth(KEY)) as r:
            assert r.status == status


async def test_unknown_or_missing_key_gets_openais_401_with_the_key_masked(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"known": Behavior.OK}) as up:
        status, _, body = await post(session, up, "/chat/completions", KEY)
        assert status == 401
        err = orjson.loads(body)["error"]
        assert err["code"] == "invalid_api_key"
        assert "sk-PMafP***E873" in err["message"] and KEY not in err["message"]
        assert b"PMafP" not in dialect.error_body(401, body)
        async with session.post(up.url + "/chat/completions", json=CHAT) as r:
            assert r.status == 401 and "API key" in (await r.json())["error"]["message"]
    assert [c.key for c in up.calls] == [KEY, None]


async def test_default_behaviour_for_unknown_keys(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(default=Behavior.OK) as up:
        assert (await post(session, up, "/chat/completions", "anything"))[0] == 200


async def test_rate_limit_headers(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"a": KeySpec(Behavior.RATE_LIMITED, retry_after=1.5), "b": Behavior.RATE_LIMITED}) as up:
        status, headers, body = await post(session, up, "/chat/completions", "a")
        assert status == 429
        assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
        assert headers["x-ratelimit-reset-requests"] == "1.5s"
        assert dialect.classify(status, headers, body, 0.0).retry_after == pytest.approx(1.5)
        _, headers, _ = await post(session, up, "/chat/completions", "b")
        assert "retry-after" not in headers and "retry-after-ms" not in headers


def test_go_durations() -> None:
    assert [go_duration(s) for s in (0.012, 1.5, 20, 360, 3600, 3725.5)] == [
        "12ms",
        "1.5s",
        "20s",
        "6m0s",
        "1h0m0s",
        "1h2m5.5s",
    ]


async def test_rate_limit_for_lets_the_key_come_back(session: aiohttp.ClientSession) -> None:
    spec = KeySpec(Behavior.RATE_LIMITED, retry_after=0.05, rate_limit_for=0.15)
    async with FakeUpstream({"k": spec}) as up:
        assert (await post(session, up, "/chat/completions", "k"))[0] == 429
        assert (await post(session, up, "/chat/completions", "k"))[0] == 429
        await asyncio.sleep(0.2)
        assert (await post(session, up, "/chat/completions", "k"))[0] == 200
        up.set("k", spec)  # a new window
        assert (await post(session, up, "/chat/completions", "k"))[0] == 429
        assert up.count("k") == 4 and len(up.calls_for("k")) == 4


async def test_set_changes_behaviour_live(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        assert (await post(session, up, "/chat/completions", "k"))[0] == 200
        up.set("k", Behavior.QUOTA)
        assert (await post(session, up, "/chat/completions", "k"))[0] == 429
        up.set("new", KeySpec())
        assert (await post(session, up, "/chat/completions", "new"))[0] == 200


async def test_flaky_is_seeded(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int, rate: float) -> list[int]:
        async with FakeUpstream({"k": KeySpec(Behavior.FLAKY, flaky_rate=rate)}, seed=seed) as up:
            return [(await post(session, up, "/chat/completions", "k"))[0] for _ in range(30)]

    mixed = await statuses(1, 0.5)
    assert mixed == await statuses(1, 0.5)
    assert {200, 500, 502, 503} >= set(mixed) and 200 in mixed and len(set(mixed)) > 1
    assert set(await statuses(2, 1.0)) <= {500, 502, 503}
    assert set(await statuses(3, 0.0)) == {200}


async def test_slow_waits_before_answering(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": KeySpec(Behavior.SLOW, delay=0.2)}) as up:
        t0 = time.monotonic()
        assert (await post(session, up, "/chat/completions", "k"))[0] == 200
        assert time.monotonic() - t0 >= 0.19


async def test_hang_is_released_by_close(session: aiohttp.ClientSession) -> None:
    up = FakeUpstream({"k": Behavior.HANG})
    await up.start()
    task = asyncio.create_task(post(session, up, "/chat/completions", "k"))
    await asyncio.sleep(0.1)
    assert not task.done() and up.count("k") == 1
    t0 = time.monotonic()
    await up.close()
    status, _, _ = await asyncio.wait_for(task, 2)
    assert status == 503 and time.monotonic() - t0 < 1


async def test_hang_client_timeout_then_close_is_clean(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.HANG}) as up:
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.1)
            async with session.post(up.url + "/chat/completions", json=CHAT, headers=auth("k"), timeout=timeout):
                pass


# ------------------------------------------------------------------ request-level errors


async def test_request_level_errors(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        async with session.post(up.url + "/chat/completions", data=b"{not json", headers=auth("k")) as r:
            assert r.status == 400
            assert (await r.json())["error"]["message"].startswith("We could not parse the JSON body")
        status, _, body = await post(session, up, "/chat/completions", "k", {**CHAT, "model": "no-such-model"})
        assert status == 404 and orjson.loads(body)["error"]["code"] == "model_not_found"
        huge = {"model": "m", "messages": [{"role": "user", "content": "x" * 60_000}] * 2}
        status, headers, body = await post(session, up, "/chat/completions", "k", huge)
        assert status == 400 and orjson.loads(body)["error"]["code"] == "context_length_exceeded"
        assert dialect.classify(status, headers, body, 0.0).outcome is Outcome.CLIENT_ERROR


# ------------------------------------------------------------------ streaming


async def read_events(r: aiohttp.ClientResponse) -> list[tuple[float, bytes]]:
    events = []
    async for line in r.content:
        if line.startswith(b"data: "):
            events.append((time.monotonic(), line[6:].strip()))
    return events


async def test_stream_chunks_then_usage_then_done(session: aiohttp.ClientSession) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with (
        FakeUpstream({"k": Behavior.OK}, stream_chunks=4, chunk_delay=0.05) as up,
        session.post(up.url + "/chat/completions", json=body, headers=auth("k")) as r,
    ):
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = await read_events(r)
    assert up.calls[0].stream
    assert events[-1][1] == b"[DONE]"
    chunks = [orjson.loads(d) for _, d in events[:-1]]
    assert len(chunks) == 5
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks[:4])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert dialect.usage(chunks[4]) is not None and all(dialect.classify_event(d) is None for _, d in events[:-1])
    # each chunk is flushed on its own: they arrive spread over the chunk delays
    assert events[3][0] - events[0][0] >= 0.1


async def test_stream_without_include_usage(session: aiohttp.ClientSession) -> None:
    async with (
        FakeUpstream({"k": Behavior.OK}) as up,
        session.post(up.url + "/chat/completions", json={**CHAT, "stream": True}, headers=auth("k")) as r,
    ):
        events = await read_events(r)
    assert len(events) == 6 and events[-1][1] == b"[DONE]"
    assert all("usage" not in orjson.loads(d) for _, d in events[:-1])


async def test_stream_error_frame(session: aiohttp.ClientSession) -> None:
    async with (
        FakeUpstream({"k": Behavior.STREAM_ERROR}) as up,
        session.post(up.url + "/chat/completions", json={**CHAT, "stream": True}, headers=auth("k")) as r,
    ):
        assert r.status == 200
        raw = await r.read()
    assert raw == (
        b'data: {"error":{"message":"The server experienced an error while processing your request. We apologize for '
        b'the inconvenience!","type":"server_error","param":null,"code":null}}\n\ndata: [DONE]\n\n'
    )
    verdict = dialect.classify_event(raw.split(b"\n\n")[0][6:])
    assert verdict is not None and verdict.outcome is Outcome.UPSTREAM_FAULT


async def test_stream_cut_drops_the_connection(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.STREAM_CUT}) as up:
        got: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(up.url + "/chat/completions", json={**CHAT, "stream": True}, headers=auth("k")) as r:
                assert r.status == 200
                async for line in r.content:
                    if line.startswith(b"data: "):
                        got.append(line)
        assert len(got) == 2 and b"[DONE]" not in b"".join(got)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, up, "/chat/completions", "k")


async def test_responses_endpoint(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK, "e": Behavior.STREAM_ERROR}) as up:
        status, _, body = await post(session, up, "/responses", "k", {"model": "gpt-4o-mini", "input": "hi"})
        doc = orjson.loads(body)
        assert status == 200 and doc["object"] == "response" and doc["status"] == "completed"
        assert doc["usage"]["output_tokens"] == COMPLETION_TOKENS
        async with session.post(up.url + "/responses", json={"input": "hi", "stream": True}, headers=auth("k")) as r:
            events = [orjson.loads(d) for _, d in await read_events(r)]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        async with session.post(up.url + "/responses", json={"input": "hi", "stream": True}, headers=auth("e")) as r:
            (_, data), = await read_events(r)
        verdict = dialect.classify_event(data)
        assert verdict is not None and verdict.outcome is Outcome.UPSTREAM_FAULT


# ------------------------------------------------------------------ other endpoints


async def test_embeddings_and_completions(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        status, _, body = await post(session, up, "/embeddings", "k", {"model": "m", "input": ["a", "b", "c"]})
        doc = orjson.loads(body)
        assert status == 200 and len(doc["data"]) == 3
        assert all(len(d["embedding"]) == 8 and isinstance(d["embedding"][0], float) for d in doc["data"])
        assert doc["usage"] == {"prompt_tokens": 30, "total_tokens": 30}
        status, _, body = await post(session, up, "/completions", "k", {"model": "m", "prompt": "Say hi"})
        assert status == 200 and orjson.loads(body)["choices"][0]["text"]


async def test_models(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        async with session.get(up.url + "/models", headers=auth("k")) as r:
            assert r.status == 200 and (await r.json())["object"] == "list"
        async with session.get(up.url + "/models/gpt-4o", headers=auth("k")) as r:
            assert (await r.json())["id"] == "gpt-4o"
        async with session.get(up.url + "/models/no-such-model", headers=auth("k")) as r:
            assert r.status == 404


async def test_transcription_upload_arrives_whole(session: aiohttp.ClientSession) -> None:
    audio = bytes(range(256)) * 1000
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", audio, filename="speech.mp3", content_type="audio/mpeg")
    async with FakeUpstream({"k": Behavior.OK}) as up:
        async with session.post(up.url + "/audio/transcriptions", data=form, headers=auth("k")) as r:
            assert r.status == 200
            assert await r.json() == {"text": f"{len(audio)} bytes received"}
        async with session.post(up.url + "/audio/transcriptions", json={"x": 1}, headers=auth("k")) as r:
            assert r.status == 400


async def test_speech_is_binary(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream({"k": Behavior.OK}) as up:
        body = {"model": "tts-1", "input": "hello", "voice": "alloy"}
        async with session.post(up.url + "/audio/speech", json=body, headers=auth("k")) as r:
            assert r.status == 200 and r.headers["content-type"] == "audio/mpeg"
            assert await r.read() == SPEECH_BYTES and len(SPEECH_BYTES) == 4096


async def test_files_round_trip(session: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"custom_id": "1"}\n', filename="batch.jsonl")
    async with FakeUpstream({"k": Behavior.OK}) as up:
        async with session.post(up.url + "/files", data=form, headers=auth("k")) as r:
            doc = await r.json()
        assert doc["object"] == "file" and doc["bytes"] == 19
        assert doc["filename"] == "batch.jsonl" and doc["purpose"] == "batch"
        async with session.get(f"{up.url}/files/{doc['id']}/content", headers=auth("k")) as r:
            assert await r.read() == b'{"custom_id": "1"}\n'
        async with session.delete(f"{up.url}/files/{doc['id']}", headers=auth("k")) as r:
            assert (await r.json())["deleted"] is True
        async with session.delete(f"{up.url}/files/{doc['id']}", headers=auth("k")) as r:
            assert r.status == 404
