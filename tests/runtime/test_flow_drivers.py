"""One relay flow, every driver: each scenario here runs against the aiohttp gateway and library
mode's transports (httpx2 sync, httpx sync, httpx2 async; ``conftest.py``), over the fake
upstream, and checks what a caller notices — status, body, content type, the
``x-keyrelay-attempts`` / ``x-keyrelay-key`` marks — and what happened to the keys.

Where the modes differ on purpose, only what a user notices is compared:

- the gateway sends its own hop-by-hop and server headers (``date``, ``server``,
  ``content-length``, ``transfer-encoding``); an SDK's transport never sees them. Headers are
  compared by the names the flow decides (content type, the marks, the redacted echo).
- the upstream cannot be reached: the gateway answers ``502 upstream_unreachable`` (its caller
  is an HTTP client); library mode raises the HTTP library's own ``ConnectError`` (what the SDK
  expects of its transport), its text free of any key.
- a caller hanging up mid-stream: the gateway learns it from a failed write, library mode from
  the response being closed; either way the key is charged nothing.
"""

from __future__ import annotations

import httpx
import httpx2
import pytest

from keyrelay.testing.fake_upstream import COMPLETION_TOKENS, SPEECH_BYTES, Behavior, KeySpec

from .conftest import Driver, dead_url

GOOD = [f"sk-good-{i:028d}GOOD" for i in range(4)]
BAD = "sk-bad-00000000000000000000000000BAD1"
RATE = "sk-rate-0000000000000000000000000RATE"
CUT = "sk-cut-00000000000000000000000000CUT1"
ERR = "sk-err-00000000000000000000000000ERR1"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def _no_secret_in(seen_text: str, secrets: list[str], who: str = "the caller") -> None:
    for s in secrets:
        assert s not in seen_text, f"key {s[:10]}… reached {who}"
        assert s[-12:] not in seen_text, f"the tail of key {s[:10]}… reached {who}"


async def test_a_json_answer_comes_back_with_its_marks_and_its_usage_is_counted(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK})
    seen = await driver.send("/chat/completions", CHAT)
    assert seen.status == 200 and seen.ctype == "application/json"
    body = seen.json()
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == COMPLETION_TOKENS
    assert (seen.attempts, seen.key) == (1, GOOD[0])
    # the upstream's own headers an SDK exposes (its request id, the rate-limit headers) pass on
    assert seen.headers["x-request-id"].startswith("req_")
    assert seen.headers["x-ratelimit-remaining-requests"] == "4999"
    c = (await driver.counters())[GOOD[0]]
    assert (c.requests, c.successes) == (1, 1)
    assert (c.prompt_tokens, c.completion_tokens) == (10, COMPLETION_TOKENS)


async def test_a_client_error_comes_back_as_is_and_is_not_retried(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK, GOOD[1]: Behavior.OK})
    too_long = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_001}]}
    seen = await driver.send("/chat/completions", too_long)
    assert seen.status == 400 and seen.ctype == "application/json"
    assert seen.json()["error"]["code"] == "context_length_exceeded"
    assert seen.attempts == 1 and seen.key in GOOD[:2]
    assert len(driver.up.keys_called()) == 1
    assert [driver.state(k) for k in GOOD[:2]] == ["active", "active"]
    c = await driver.counters()
    assert sum(c[k].client_error for k in GOOD[:2]) == 1


async def test_an_invalid_key_is_retired_and_the_request_fails_over(driver: Driver) -> None:
    await driver.start({BAD: Behavior.INVALID, GOOD[0]: Behavior.OK, GOOD[1]: Behavior.OK, GOOD[2]: Behavior.OK})
    seen = [await driver.send("/chat/completions", CHAT) for _ in range(4)]
    assert [s.status for s in seen] == [200] * 4
    assert sorted(s.attempts or 0 for s in seen) == [1, 1, 1, 2]  # the one that met the bad key tried twice
    assert all(s.key in GOOD for s in seen)
    assert driver.up.keys_called().count(BAD) == 1
    assert driver.state(BAD) == "invalid"
    c = await driver.counters()
    assert (c[BAD].invalid_key, c[BAD].successes) == (1, 0)
    assert sum(c[g].successes for g in GOOD[:3]) == 4


async def test_a_rate_limited_key_cools_and_the_request_succeeds_elsewhere(driver: Driver) -> None:
    await driver.start({RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=30), GOOD[0]: Behavior.OK,
                        GOOD[1]: Behavior.OK})
    seen = [await driver.send("/chat/completions", CHAT) for _ in range(3)]
    assert [s.status for s in seen] == [200] * 3
    assert sorted(s.attempts or 0 for s in seen) == [1, 1, 2]
    assert driver.up.keys_called().count(RATE) == 1  # cooling: not asked again
    assert driver.state(RATE) == "cooling"
    assert (await driver.counters())[RATE].rate_limited == 1


async def test_when_every_key_fails_the_last_upstream_error_comes_back_without_the_key(driver: Driver) -> None:
    keys = [f"sk-srv-{i:029d}SRV" for i in range(2)]
    await driver.start(dict.fromkeys(keys, Behavior.SERVER_ERROR))
    seen = await driver.send("/echo-error", CHAT)
    assert seen.status == 500 and seen.ctype == "application/json"
    assert seen.attempts == 2 and seen.key in keys
    assert seen.json()["error"]["type"] == "server_error"
    assert seen.json()["error"]["message"].startswith("server broke on key ")
    _no_secret_in(seen.body.decode() + repr(seen.headers), keys)
    assert [driver.state(k) for k in keys] == ["active", "active"]  # the upstream's fault, not the keys'


async def test_an_invalid_key_s_own_error_comes_back_when_no_other_key_is_left(driver: Driver) -> None:
    await driver.start({BAD: Behavior.INVALID})
    seen = await driver.send("/chat/completions", CHAT)
    assert seen.status == 401 and seen.json()["error"]["code"] == "invalid_api_key"
    assert (seen.attempts, seen.key) == (1, BAD)
    _no_secret_in(seen.body.decode(), [BAD])
    # the key is retired and none is left: keyrelay's own 503, which no retry will cure
    seen = await driver.send("/chat/completions", CHAT)
    assert seen.status == 503 and seen.json()["error"]["code"] == "no_key_available"
    assert seen.headers.get("x-should-retry") == "false" and "retry-after" not in seen.headers
    assert seen.attempts == 0 and seen.key is None


async def test_no_key_while_the_only_one_cools_says_when_to_retry(driver: Driver) -> None:
    await driver.start({RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=30)})
    seen = await driver.send("/chat/completions", CHAT)
    assert seen.status == 429 and seen.json()["error"]["code"] == "rate_limit_exceeded"
    seen = await driver.send("/chat/completions", CHAT)
    assert seen.status == 503 and seen.ctype == "application/json"
    assert seen.json()["error"]["code"] == "no_key_available"
    assert 28 <= int(seen.headers["retry-after"]) <= 30 and "x-should-retry" not in seen.headers
    assert driver.up.keys_called() == [RATE]


async def test_an_event_stream_is_relayed_in_order_and_its_usage_counted(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK})
    seen = await driver.stream("/chat/completions", STREAM)
    assert seen.status == 200 and seen.ctype == "text/event-stream"
    assert (seen.attempts, seen.key) == (1, GOOD[0])
    events = seen.events()
    assert events[-1] == b"[DONE]"
    assert [e.count(b'"content"') for e in events[:-2]] == [1] * 5
    assert b'"usage":{"prompt_tokens":10' in events[-2]
    c = (await driver.counters())[GOOD[0]]
    assert (c.requests, c.successes, c.completion_tokens) == (1, 1, COMPLETION_TOKENS)


async def test_a_stream_whose_first_event_is_an_error_fails_over(driver: Driver) -> None:
    await driver.start({ERR: Behavior.STREAM_ERROR, GOOD[0]: Behavior.OK, GOOD[1]: Behavior.OK})
    seen = [await driver.stream("/chat/completions", STREAM) for _ in range(3)]
    assert [s.status for s in seen] == [200] * 3
    assert all(s.events()[-1] == b"[DONE]" and b"error" not in s.body for s in seen)
    assert sorted(s.attempts or 0 for s in seen) == [1, 1, 2]
    assert all(s.key in GOOD for s in seen)
    assert driver.up.keys_called().count(ERR) >= 1
    assert driver.state(ERR) == "active"  # a server error in the stream is not the key's fault
    assert (await driver.counters())[ERR].upstream_fault == driver.up.keys_called().count(ERR)


async def test_a_stream_cut_by_the_upstream_ends_with_an_error_event_and_faults_the_key(driver: Driver) -> None:
    await driver.start({CUT: Behavior.STREAM_CUT})
    seen = await driver.stream("/chat/completions", STREAM)
    assert seen.status == 200 and (seen.attempts, seen.key) == (1, CUT)
    events = seen.events()
    assert b'"content"' in events[0]  # what came before the cut was relayed
    assert b"[DONE]" not in events
    assert b'"error"' in events[-1]  # the dialect's error frame ends it
    await driver.idle()
    c = (await driver.counters())[CUT]
    assert (c.upstream_fault, c.successes, c.invalid_key) == (1, 0, 0)
    assert driver.state(CUT) == "active"


async def test_a_caller_closing_a_stream_early_costs_the_key_nothing(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK}, stream_chunks=40, chunk_delay=0.02)
    seen = await driver.stream("/chat/completions", STREAM, stop_after=1)
    assert seen.status == 200 and seen.events() and b"[DONE]" not in seen.body
    await driver.idle()
    c = (await driver.counters())[GOOD[0]]
    assert c.values() == (0,) * len(c.values())  # not a request, a success or a fault
    assert driver.state(GOOD[0]) == "active"


async def test_a_binary_answer_passes_through_unchanged(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK})
    seen = await driver.send("/audio/speech", {"model": "tts-1", "input": "hi", "voice": "alloy"})
    assert seen.status == 200 and seen.ctype == "audio/mpeg"
    assert seen.body == SPEECH_BYTES
    assert (seen.attempts, seen.key) == (1, GOOD[0])
    c = (await driver.counters())[GOOD[0]]
    assert (c.requests, c.successes) == (1, 1)


async def test_a_key_echoed_in_a_header_of_a_good_answer_never_reaches_the_caller(driver: Driver) -> None:
    await driver.start({GOOD[0]: Behavior.OK})
    seen = await driver.send("/echo-ok", {})
    assert seen.status == 200 and seen.json() == {"ok": True}
    assert "x-echo-key" in seen.headers  # passed on, redacted
    _no_secret_in(repr(seen.headers), [GOOD[0]])


async def test_a_redirect_to_another_host_is_not_followed_with_a_pool_key(driver: Driver) -> None:
    """An upstream's redirect to another host: in library mode the SDK's client would follow it
    (``follow_redirects=True``, as the openai SDK sets it) back through the key-rotating
    transport, which would add a pool key for the stranger. So the flow drops a ``Location`` that
    leaves the upstream (both modes): the caller gets the 307 itself and nobody follows it."""
    await driver.start({GOOD[0]: Behavior.OK})
    seen = await driver.send("/redirect-away", CHAT)
    assert seen.status == 307 and "location" not in seen.headers
    assert driver.up.stranger_saw == []
    _no_secret_in(seen.body.decode("latin-1") + repr(seen.headers), [GOOD[0]])


async def test_an_unreachable_upstream_is_a_502_at_the_gateway_and_a_connect_error_in_library_mode(
    driver: Driver,
) -> None:
    keys = GOOD[:2]
    await driver.start(dict.fromkeys(keys, Behavior.OK), base_url=dead_url())
    if driver.name.startswith("gateway"):
        seen = await driver.send("/chat/completions", CHAT)
        assert seen.status == 502 and seen.json()["error"]["code"] == "upstream_unreachable"
        assert seen.attempts == 2 and seen.key in keys
        _no_secret_in(seen.body.decode() + repr(seen.headers), keys)
    else:
        errors = (httpx.ConnectError,) if driver.name == "httpx" else (httpx2.ConnectError,)
        with pytest.raises(errors) as caught:
            await driver.send("/chat/completions", CHAT)
        _no_secret_in(str(caught.value), keys)
    assert [driver.state(k) for k in keys] == ["active", "active"]
    c = await driver.counters()
    assert [c[k].network_error for k in keys] == [1, 1]
