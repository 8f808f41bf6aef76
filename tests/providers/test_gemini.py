"""The Gemini dialect: google.rpc.Status bodies (native and through the OpenAI-compatible
endpoint), usageMetadata, the three ways a client presents its token, requests without a model."""

from __future__ import annotations

import orjson
import pytest
from fixtures.gemini_native_errors import GEMINI_NATIVE_FIXTURES
from fixtures.google_errors import GOOGLE_FIXTURES
from fixtures.openai_errors import Fixture

from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import get_dialect
from keyrelay.providers.base import Usage
from keyrelay.providers.gemini import GeminiDialect

NOW = 1_750_000_000.0
FIXTURES = GOOGLE_FIXTURES + GEMINI_NATIVE_FIXTURES
dialect = GeminiDialect()


def _classify(fx: Fixture) -> Verdict:
    if not fx.stream:
        return dialect.classify(fx.status, fx.headers, fx.body, NOW)
    verdicts = [v for v in map(dialect.classify_event, fx.events()) if v is not None]
    assert verdicts, f"{fx.name}: no event was classified as an error"
    return verdicts[0]


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fixture_is_classified_as_expected(fx: Fixture) -> None:
    verdict = _classify(fx)
    assert verdict.outcome is fx.expected_outcome, (fx.source, verdict)
    if fx.expected_retry_after is None:
        assert verdict.retry_after is None
    else:
        assert verdict.retry_after == pytest.approx(fx.expected_retry_after)
    assert verdict.reason


def test_get_dialect_knows_gemini() -> None:
    assert isinstance(get_dialect("gemini"), GeminiDialect)


@pytest.mark.parametrize(
    ("headers", "query", "token"),
    [
        ({"x-goog-api-key": "kr-a"}, "", "kr-a"),
        ({}, "alt=sse&key=kr-b", "kr-b"),
        ({"Authorization": "Bearer kr-c"}, "", "kr-c"),
        ({}, "alt=sse", ""),
    ],
)
def test_client_token(headers: dict[str, str], query: str, token: str) -> None:
    assert dialect.client_token(headers, query) == token


def test_upstream_auth_and_models_probe() -> None:
    assert dialect.auth_headers("AIzaXYZ") == {"x-goog-api-key": "AIzaXYZ"}
    assert dialect.models_probe("https://generativelanguage.googleapis.com", "k")[0] == (
        "https://generativelanguage.googleapis.com/v1beta/models"
    )
    assert dialect.models_probe("https://generativelanguage.googleapis.com/v1beta/openai/", "k")[0].endswith(
        "/v1beta/openai/models"
    )
    assert "key=" not in dialect.models_probe("https://x", "k")[0]  # the key never travels in a URL


@pytest.mark.parametrize(
    "path",
    ["/v1beta/models/:generateContent", "/v1beta/models:generateContent", "/v1/:streamGenerateContent"],
)
def test_a_call_without_a_model_is_refused_in_googles_shape(path: str) -> None:
    refused = dialect.request_error("POST", path)
    assert refused is not None and refused[0] == 400
    doc = orjson.loads(dialect.local_error(*refused))
    assert doc["error"]["code"] == 400 and doc["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1/models/gemini-2.5-flash:streamGenerateContent",
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        "/v1beta/models",
        "/v1beta/models/gemini-2.5-flash",
        "/v1beta/openai/chat/completions",
    ],
)
def test_calls_with_a_model_pass(path: str) -> None:
    assert dialect.request_error("POST", path) is None


def test_usage_from_usage_metadata_counts_thoughts_as_output() -> None:
    # python-genai GenerateContentResponseUsageMetadata; PROVIDER-ERRORS.md §10
    doc = {"usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 30, "thoughtsTokenCount": 8, "totalTokenCount": 50}}
    assert dialect.usage(doc) == Usage(12, 38)
    assert dialect.usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4)
    assert dialect.usage({"candidates": []}) is None


def test_a_success_is_ok_and_a_blocked_prompt_is_not_an_error() -> None:
    blocked = (
        b'{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":12559,'
        b'"totalTokenCount":12559},"modelVersion":"gemini-1.5-flash-002"}'
    )  # [V] vercel/ai#4236: the request's content, answered 200; no key is to blame
    assert dialect.classify(200, {}, blocked, NOW).outcome is Outcome.OK
    assert dialect.classify_event(b'{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}') is None


def test_rebuilt_errors_keep_googles_shape_and_drop_the_key() -> None:
    key = "AIzaSyD" + "x" * 32
    body = orjson.dumps(
        {"error": {"code": 403, "message": f"Permission denied: Consumer 'api_key:{key}' has been suspended.",
                   "status": "PERMISSION_DENIED",
                   "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED",
                                "metadata": {"consumer": f"api_key:{key}"}}]}}
    )
    out = dialect.error_body(403, body, (key,))
    assert key.encode() not in out
    doc = orjson.loads(out)
    assert doc["error"]["status"] == "PERMISSION_DENIED" and doc["error"]["code"] == 403
    assert doc["error"]["details"][0]["reason"] == "CONSUMER_SUSPENDED"


def test_a_failed_first_chunk_is_answered_with_its_status() -> None:
    status, ctype, body = dialect.stream_failure(b'{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}')
    assert (status, ctype) == (503, "application/json")
    assert orjson.loads(body)["error"]["status"] == "UNAVAILABLE"
