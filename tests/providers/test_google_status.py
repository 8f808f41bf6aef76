"""google.rpc.Status errors read for the table: the code they are matched by, and their retry delay."""

from __future__ import annotations

from keyrelay.providers.google_status import google_code, google_retry_delay

QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"


def _exhausted(*details: object, message: str = "You exceeded your current quota") -> dict[str, object]:
    return {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": list(details)}


def test_openai_errors_are_not_google_ones() -> None:
    assert google_code({"message": "x", "type": "tokens", "code": "rate_limit_exceeded"}) == ""
    assert google_code({"message": "x", "code": 429}) == ""  # no status: not google.rpc.Status
    assert google_code({"message": "x", "status": "RESOURCE_EXHAUSTED", "code": "429"}) == ""


def test_the_quota_id_tells_a_rate_limit_from_a_spent_day() -> None:
    per_minute = {"@type": QUOTA_FAILURE, "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]}
    per_day = {"@type": QUOTA_FAILURE, "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}
    assert google_code(_exhausted(per_minute)) == "quota_per_minute"
    assert google_code(_exhausted(per_day)) == "quota_per_day"
    assert google_code(_exhausted(per_minute, per_day)) == "quota_per_day"  # any spent day decides
    assert google_code(_exhausted()) == "resource_exhausted"
    assert google_code(_exhausted(message="Quota exceeded for metric: …, limit: 0, model: gemini-2.5-pro")) == "quota_none"
    assert google_code(_exhausted(message="Quota exceeded for metric: …, limit: 20, model: x")) == "resource_exhausted"


def test_the_error_info_reason_comes_first() -> None:
    err = {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
    assert google_code(err) == "api_key_invalid"
    assert google_code({**err, "details": [None, "odd", {"@type": 3}]}) == ""  # malformed details: ignored


def test_retry_delay() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}
    assert google_retry_delay(_exhausted(info)) == 26.0
    assert google_retry_delay(_exhausted({**info, "retryDelay": "1.5s"})) == 1.5
    assert google_retry_delay(_exhausted()) is None
    assert google_retry_delay(_exhausted({**info, "retryDelay": "soon"})) is None
