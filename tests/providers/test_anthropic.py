"""The Anthropic dialect: real error bodies read by their ``error.type``, streams, usage, auth and
keyrelay's own errors in Anthropic's envelope."""

from __future__ import annotations

import orjson
import pytest
from fixtures.anthropic_errors import ANTHROPIC_FIXTURES
from fixtures.openai_errors import Fixture

from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import get_dialect
from keyrelay.providers.anthropic import AnthropicDialect
from keyrelay.providers.base import Usage

NOW = 1749826800.0  # 2025-06-13T15:00:00Z
dialect = AnthropicDialect()


def _classify(fx: Fixture) -> Verdict:
    if not fx.stream:
        return dialect.classify(fx.status, fx.headers, fx.body, NOW)
    verdicts = [v for v in map(dialect.classify_event, fx.events()) if v is not None]
    assert verdicts, f"{fx.name}: no event was classified as an error"
    return verdicts[0]


@pytest.mark.parametrize("fx", ANTHROPIC_FIXTURES, ids=[f.name for f in ANTHROPIC_FIXTURES])
def test_fixture_is_classified_as_expected(fx: Fixture) -> None:
    verdict = _classify(fx)
    assert verdict.outcome is fx.expected_outcome, (fx.source, verdict)
    if fx.expected_retry_after is None:
        assert verdict.retry_after is None
    else:
        assert verdict.retry_after == pytest.approx(fx.expected_retry_after)
    assert verdict.reason or verdict.outcome is Outcome.OK


def test_get_dialect_knows_anthropic() -> None:
    assert isinstance(get_dialect("anthropic"), AnthropicDialect)


def test_a_permission_error_is_never_a_bad_key_on_sight() -> None:
    body = b'{"type":"error","error":{"type":"permission_error","message":"Something new and unexplained."}}'
    v = dialect.classify(403, {}, body, NOW)
    assert v.outcome is Outcome.UPSTREAM_FAULT  # fails over, does not retire
    region = b'{"type":"error","error":{"type":"permission_error","message":"Request not allowed"}}'
    assert dialect.classify(403, {}, region, NOW).outcome is Outcome.UPSTREAM_FAULT


def test_a_week_long_wait_is_a_spent_quota_not_a_cooldown() -> None:
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    v = dialect.classify(429, {"retry-after": "604800"}, body, NOW)
    assert v.outcome is Outcome.QUOTA_EXHAUSTED


def test_ordinary_stream_events_are_not_errors() -> None:
    start = (
        b'{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],'
        b'"model":"claude-sonnet-4-5","stop_reason":null,"usage":{"input_tokens":11,"output_tokens":1}}}'
    )
    assert dialect.classify_event(start) is None
    assert dialect.classify_event(b'{"type": "ping"}') is None
    text = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the word \\"error\\""}}'
    assert dialect.classify_event(text) is None


def test_usage_from_an_answer_and_from_stream_events() -> None:
    # anthropics/anthropic-sdk-python:tests/lib/streaming/fixtures/basic_response.txt (message_start, message_delta)
    answer = orjson.loads(
        b'{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":2095,"cache_creation_input_tokens":5,'
        b'"cache_read_input_tokens":100,"output_tokens":503}}'
    )
    assert dialect.usage(answer) == Usage(2200, 503)
    assert dialect.usage({"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}}) == Usage(11, 1)
    assert dialect.usage({"type": "message_delta", "usage": {"output_tokens": 6}}) == Usage(0, 6)
    raw = b'{"usage":{"input_tokens":7,"output_tokens":3}}'
    assert dialect.usage_at(raw, raw.find(b'"usage"')) == Usage(7, 3)


def test_client_token_from_x_api_key_or_bearer() -> None:
    assert dialect.client_token({"x-api-key": "kr-1"}, "") == "kr-1"
    assert dialect.client_token({"Authorization": "Bearer kr-2"}, "") == "kr-2"
    assert dialect.client_token({}, "") == ""


def test_upstream_auth_is_x_api_key_never_authorization() -> None:
    assert dialect.auth_headers("sk-ant-api03-xyz") == {"x-api-key": "sk-ant-api03-xyz"}
    url, headers = dialect.models_probe("https://api.anthropic.com", "k")
    assert url == "https://api.anthropic.com/v1/models"
    assert headers == {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert dialect.models_probe("https://api.anthropic.com/v1/", "k")[0] == "https://api.anthropic.com/v1/models"


def test_errors_keyrelay_writes_are_in_anthropics_envelope() -> None:
    doc = orjson.loads(dialect.local_error(401, "no token"))
    assert doc == {"type": "error", "error": {"type": "authentication_error", "message": "no token"}}
    assert orjson.loads(dialect.local_error(503, "no key"))["error"]["type"] == "overloaded_error"
    assert orjson.loads(dialect.local_error(404, "no pool"))["error"]["type"] == "not_found_error"


def test_rebuilt_error_bodies_keep_the_type_and_lose_the_key() -> None:
    secret = "sk-ant-api03-" + "Q" * 40
    body = orjson.dumps({"type": "error", "error": {"type": "authentication_error", "message": f"bad key {secret}"}})
    out = orjson.loads(dialect.error_body(401, body, (secret,)))
    assert out["type"] == "error" and out["error"]["type"] == "authentication_error"
    assert secret not in out["error"]["message"]
    html = orjson.loads(dialect.error_body(502, b"<html>bad gateway</html>"))
    assert html["error"]["type"] == "api_error"


def test_a_failed_first_event_becomes_an_http_error_with_its_status() -> None:
    data = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    status, ctype, body = dialect.stream_failure(data)
    assert (status, ctype) == (529, "application/json")
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"
    cut = dialect.stream_cut_event()
    assert cut.startswith(b"event: error\ndata: ") and b'"type":"error"' in cut
