"""The OpenAI dialect: retry hints, stream events, usage and the error bodies clients get (the
classification table is pinned in test_openai_rules.py)."""

from __future__ import annotations

from email.utils import formatdate

import orjson
import pytest
from fixtures.openai_errors import by_name

from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers.base import Usage
from keyrelay.providers.openai import OpenAIDialect

NOW = 1_750_000_000.0
dialect = OpenAIDialect()


# ------------------------------------------------------------------ retry hints


def _rate_limited(headers: dict[str, str], body: bytes | None = None) -> Verdict:
    body = body or by_name("mistral_429_rate_limited").body  # no wait in its message
    return dialect.classify(429, headers, body, NOW)


def test_retry_after_seconds() -> None:
    assert _rate_limited({"retry-after": "7"}).retry_after == 7.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert _rate_limited({"retry-after-ms": "250", "retry-after": "7"}).retry_after == pytest.approx(0.25)


def test_retry_after_http_date() -> None:
    assert _rate_limited({"retry-after": formatdate(NOW + 20, usegmt=True)}).retry_after == pytest.approx(20.0)


def test_reset_requests_in_go_duration() -> None:
    assert _rate_limited({"x-ratelimit-reset-requests": "6m0s"}).retry_after == 360.0


def test_longest_of_reset_requests_and_reset_tokens() -> None:
    v = _rate_limited({"x-ratelimit-reset-requests": "12ms", "x-ratelimit-reset-tokens": "1m30s"})
    assert v.retry_after == 90.0
    v = _rate_limited({"x-ratelimit-reset-requests": "2.5s", "x-ratelimit-reset-tokens": "9ms"})
    assert v.retry_after == 2.5


def test_unreadable_headers_fall_back_to_no_hint() -> None:
    assert _rate_limited({"retry-after": "soon"}).retry_after is None


def test_wait_named_in_the_message_when_headers_are_silent() -> None:
    body = by_name("openai_429_rate_limit_no_headers").body
    assert _rate_limited({}, body).retry_after == pytest.approx(9.816)
    assert _rate_limited({"retry-after": "3"}, body).retry_after == 3.0


def test_retry_hints_are_ignored_for_quota() -> None:
    body = by_name("openai_429_insufficient_quota").body
    v = dialect.classify(429, {"retry-after": "20"}, body, NOW)
    assert v.outcome is Outcome.QUOTA_EXHAUSTED and v.retry_after is None


# ------------------------------------------------------------------ stream events


def test_in_stream_error_frame_is_an_upstream_fault() -> None:
    (_, err) = by_name("openai_stream_error_event").events()
    v = dialect.classify_event(err)
    assert v is not None
    assert v.outcome is Outcome.UPSTREAM_FAULT and v.status == 200


def test_ordinary_chunks_are_not_errors() -> None:
    chunk, _ = by_name("openai_stream_error_event").events()
    assert dialect.classify_event(chunk) is None
    assert dialect.classify_event(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}') is None
    assert dialect.classify_event(b'{"choices":[{"delta":{"content":"an \\"error\\" here"}}]}') is None
    assert dialect.classify_event(b'{"type":"response.completed","response":{"error":null}}') is None
    assert dialect.classify_event(b'{"object":"chat.completion.chunk","error":null}') is None


def test_in_stream_error_with_a_key_code_names_the_key() -> None:
    v = dialect.classify_event(b'{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}')
    assert v is not None and v.outcome is Outcome.QUOTA_EXHAUSTED


# ------------------------------------------------------------------ usage


def test_usage_of_a_chat_completion() -> None:
    payload = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert dialect.usage(payload) == Usage(19, 10)


def test_usage_of_an_embeddings_response() -> None:
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert dialect.usage(payload) == Usage(8, 0)


def test_usage_of_a_responses_answer() -> None:
    payload = {"object": "response", "usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}}
    assert dialect.usage(payload) == Usage(12, 5)


def test_no_usage() -> None:
    assert dialect.usage({"object": "chat.completion.chunk", "usage": None}) is None
    assert dialect.usage({"choices": []}) is None


# ------------------------------------------------------------------ error bodies for clients


def test_error_body_redacts_the_masked_key_openai_echoes() -> None:
    body = by_name("openai_401_invalid_api_key").body
    assert b"PMafP" in body
    out = dialect.error_body(401, body)
    assert b"PMafP" not in out and b"E873" not in out
    err = orjson.loads(out)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_api_key"
    assert err["message"].startswith("Incorrect API key provided")


def test_error_body_redacts_known_secrets() -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    body = orjson.dumps({"error": {"message": f"bad key {secret}", "type": "x", "param": None, "code": None}})
    out = dialect.error_body(401, body, (secret,))
    assert secret.encode() not in out and b"abcdefghij" not in out


def test_error_body_of_a_non_json_answer() -> None:
    out = dialect.error_body(502, b"<html><body>502 Bad Gateway</body></html>")
    err = orjson.loads(out)["error"]
    assert err["type"] == "upstream_error"
    assert "502 Bad Gateway" in err["message"]
    empty = orjson.loads(dialect.error_body(503, b""))["error"]
    assert empty["message"] == "upstream answered HTTP 503"


def test_a_wait_of_an_hour_is_a_rate_limit_and_a_longer_one_a_spent_quota() -> None:
    body = b'{"error":{"code":"429","message":"Rate limit is exceeded."}}'
    hour = dialect.classify(429, {"retry-after": "3600"}, body, NOW)
    assert (hour.outcome, hour.retry_after) == (Outcome.RATE_LIMITED, 3600.0)
    day = dialect.classify(429, {"retry-after": "3601"}, body, NOW)
    assert (day.outcome, day.reason) == (Outcome.QUOTA_EXHAUSTED, "limit reached for hours")
