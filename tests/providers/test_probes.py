"""The probes are pure flows: fed recorded answers, they say what they found — and whatever
they cannot read is *unknown*, never a balance of 0."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.policy import CheckerPolicy, next_reset
from keyrelay.providers.openai import OpenAIDialect
from keyrelay.providers.probes import (
    BalanceProbe,
    BillingProbe,
    CompletionProbe,
    ModelsProbe,
    Probe,
    ProbeRequest,
    ProbeResponse,
    balance_base_url,
    build_probes,
)

NOW = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
SECRET = "sk-probe-0123456789abcdefghijklmnop"
BASE = "https://reseller.example/v1"
D = OpenAIDialect()
OK, EXHAUSTED, INVALID, UNKNOWN = ProbeKind.OK, ProbeKind.EXHAUSTED, ProbeKind.INVALID, ProbeKind.UNKNOWN


def j(status: int, doc: Any) -> ProbeResponse:
    return ProbeResponse(status, orjson.dumps(doc))


def drive(probe: Probe, *answers: ProbeResponse, now: float = NOW) -> tuple[list[ProbeRequest], ProbeResult]:
    """Run a probe's flow on canned answers: the requests it made and its result."""
    flow = probe.flow(SECRET, now)
    requests = [next(flow)]
    for answer in answers:
        try:
            requests.append(flow.send(answer))
        except StopIteration as stop:
            return requests, stop.value
    raise AssertionError(f"the flow wanted more than {len(answers)} answers")


def subscription(hard: Any = 18.0, access_until: Any = 0, **extra: Any) -> ProbeResponse:
    return j(200, {"object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": hard,
                   "hard_limit_usd": hard, "system_hard_limit_usd": hard, "access_until": access_until, **extra})


def usage(cents: Any) -> ProbeResponse:
    return j(200, {"object": "list", "total_usage": cents})


# -- billing --------------------------------------------------------------------------------------


def test_billing_asks_for_the_subscription_then_99_days_of_usage_to_tomorrow() -> None:
    requests, result = drive(BillingProbe(BASE, D), subscription(), usage(300))

    sub, use = requests
    assert (sub.method, sub.url) == ("GET", f"{BASE}/dashboard/billing/subscription")
    assert use.url == f"{BASE}/dashboard/billing/usage?start_date=2025-03-08&end_date=2025-06-16"
    assert sub.headers == use.headers == {"Authorization": f"Bearer {SECRET}"}
    assert (result.kind, result.balance, result.currency, result.funds) == (OK, 15.0, "USD", True)


def test_billing_an_expired_key_is_invalid_without_asking_for_usage() -> None:
    requests, result = drive(BillingProbe(BASE, D), subscription(access_until=NOW - 1))

    assert len(requests) == 1
    assert (result.kind, result.reason, result.probe) == (INVALID, "expired", "billing")
    assert "access until 2025-06-15" in result.describe()


@pytest.mark.parametrize("access_until", [0, 0.0, None, "0"])
def test_billing_access_until_zero_or_absent_means_never_expires(access_until: Any) -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(hard=20.0, access_until=access_until), usage(250))

    assert (result.kind, result.balance) == (OK, 17.5)


def test_billing_a_future_access_until_is_fine() -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(access_until=NOW + 86400), usage(0))

    assert result.kind is OK


@pytest.mark.parametrize("hard", [0, 0.0, -1])
def test_billing_no_allowance_is_exhausted(hard: float) -> None:
    requests, result = drive(BillingProbe(BASE, D), subscription(hard=hard))

    assert len(requests) == 1
    assert (result.kind, result.reason, result.balance) == (EXHAUSTED, "no allowance", 0.0)


@pytest.mark.parametrize(("cents", "left"), [(500, 0.0), (501, 0.0), (10_000, 0.0)])
def test_billing_usage_at_or_over_the_hard_limit_is_exhausted(cents: float, left: float) -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(hard=5.0), usage(cents))

    assert (result.kind, result.reason, result.balance, result.funds) == (
        EXHAUSTED, "usage reached the hard limit", left, True)
    assert f"used {cents / 100:g} of 5 USD" in result.message


def test_billing_an_unlimited_reseller_token_has_plenty_left() -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(hard=100000000), usage(12345))

    assert result.kind is OK and result.balance == pytest.approx(100000000 - 123.45)


def test_billing_numbers_sent_as_strings_are_read() -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(hard="10.5", access_until="0"), usage("50"))

    assert (result.kind, result.balance) == (OK, 10.0)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # one-api / new-api: a failure is HTTP 200 with an error object (controller/billing.go)
        (j(200, {"error": {"message": "record not found", "type": "upstream_error"}}), "error in a 200 answer"),
        # LM Studio answers unknown paths with 200 (new-api #1641)
        (j(200, {"error": "Unexpected endpoint or method. (GET /v1/dashboard/billing/subscription)"}),
         "error in a 200 answer"),
        (j(200, {"object": "list", "data": []}), "not a billing answer"),
        (j(200, []), "not a billing answer"),
        (ProbeResponse(200, b"<html>welcome</html>"), "not a billing answer"),
        (ProbeResponse(200, b""), "not a billing answer"),
        (subscription(hard=None), "unreadable billing answer"),
        (subscription(hard=True), "unreadable billing answer"),
        (subscription(access_until="soon"), "unreadable billing answer"),
        (ProbeResponse(404, b"404 page not found"), "endpoint not found"),
        (j(500, {"error": {"message": "boom", "type": "server_error"}}), "upstream error"),
        (j(503, {"error": {"message": "overloaded"}}), "upstream error"),
        # OpenAI itself: the endpoints refuse API keys; not a verdict on the key
        (j(403, {"error": {"message": "Your request to GET /v1/dashboard/billing/subscription must be made with a "
                                      "session key (that is, it can only be made from the browser).",
                           "type": "server_error"}}), "unexpected answer"),
        (j(401, {"error": {"message": "无效的令牌", "type": "one_api_error"}}), "unexpected answer"),
    ],
)
def test_billing_an_answer_that_cannot_be_read_is_unknown_never_zero(answer: ProbeResponse, reason: str) -> None:
    _, result = drive(BillingProbe(BASE, D), answer)

    assert (result.kind, result.reason, result.balance) == (UNKNOWN, reason, None)
    assert result.status == answer.status


@pytest.mark.parametrize(
    "answer",
    [
        j(200, {"error": {"message": "quota query failed", "type": "new_api_error"}}),
        j(200, {"object": "list"}),
        usage(None),
        usage(-5),
        ProbeResponse(404, b"not found"),
        ProbeResponse(502, b"bad gateway"),
    ],
)
def test_billing_an_unreadable_usage_answer_is_unknown(answer: ProbeResponse) -> None:
    _, result = drive(BillingProbe(BASE, D), subscription(hard=5.0), answer)

    assert (result.kind, result.balance) == (UNKNOWN, None)


def test_billing_evidence_names_the_error_code_but_never_the_key() -> None:
    answer = j(200, {"error": {"message": f"token {SECRET} not found", "code": "token_not_found"}})

    _, result = drive(BillingProbe(BASE, D), answer)

    assert result.code == "token_not_found"
    assert SECRET not in result.describe()


# -- models ---------------------------------------------------------------------------------------


def test_models_a_200_shows_the_key_valid_but_not_that_it_can_pay() -> None:
    requests, result = drive(ModelsProbe(BASE, D), j(200, {"object": "list", "data": [{"id": "gpt-4o"}]}))

    assert requests[0].url == f"{BASE}/models"
    assert (result.kind, result.funds, result.status) == (OK, False, 200)


@pytest.mark.parametrize(
    ("code", "reason"), [("invalid_api_key", "invalid api key"), ("account_deactivated", "account deactivated")]
)
def test_models_a_401_is_invalid_with_the_dialects_reason(code: str, reason: str) -> None:
    answer = j(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": code}})

    _, result = drive(ModelsProbe(BASE, D), answer)

    assert (result.kind, result.reason, result.status, result.code) == (INVALID, reason, 401, code)


@pytest.mark.parametrize(
    "answer",
    [
        # a restricted OpenAI key without the model.read scope still serves chat
        j(403, {"error": {"message": "You have insufficient permissions for this operation. Missing scopes: "
                                     "api.model.read.", "type": "invalid_request_error"}}),
        j(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}),
        j(500, {"error": {"message": "The server had an error"}}),
        ProbeResponse(502, b"<html>bad gateway</html>"),
        ProbeResponse(404, b"not found"),
    ],
)
def test_models_other_answers_are_unknown(answer: ProbeResponse) -> None:
    _, result = drive(ModelsProbe(BASE, D), answer)

    assert result.kind is UNKNOWN


def test_models_an_invalid_key_error_inside_a_200_is_invalid() -> None:
    answer = j(200, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}})

    _, result = drive(ModelsProbe(BASE, D), answer)

    assert result.kind is INVALID


# -- provider balances ----------------------------------------------------------------------------


def balance(api: str, threshold: float = 0.0) -> BalanceProbe:
    return BalanceProbe(api, "https://api.example.com", D, threshold)


def deepseek(available: bool, *infos: tuple[str, str]) -> ProbeResponse:
    return j(200, {"is_available": available, "balance_infos": [
        {"currency": c, "total_balance": b, "granted_balance": "0.00", "topped_up_balance": b} for c, b in infos]})


@pytest.mark.parametrize(
    ("api", "url"),
    [
        ("deepseek", "https://api.example.com/user/balance"),
        ("openrouter", "https://api.example.com/v1/key"),
        ("siliconflow", "https://api.example.com/v1/user/info"),
        ("moonshot", "https://api.example.com/v1/users/me/balance"),
    ],
)
def test_balance_endpoints(api: str, url: str) -> None:
    requests, _ = drive(balance(api), j(200, {}))

    assert requests[0].url == url
    assert requests[0].headers == {"Authorization": f"Bearer {SECRET}"}


def test_deepseek_reads_the_cny_balance_sent_as_a_string() -> None:
    _, result = drive(balance("deepseek"), deepseek(True, ("USD", "1.00"), ("CNY", "110.00")))

    assert (result.kind, result.balance, result.currency, result.funds) == (OK, 110.0, "CNY", True)


def test_deepseek_not_available_is_exhausted() -> None:
    _, result = drive(balance("deepseek"), deepseek(False, ("CNY", "0.00")))

    assert (result.kind, result.reason, result.balance) == (EXHAUSTED, "balance not available", 0.0)


def test_deepseek_money_in_another_currency_keeps_the_key() -> None:
    _, result = drive(balance("deepseek"), deepseek(True, ("CNY", "0.00"), ("USD", "3.00")))

    assert (result.kind, result.balance, result.currency) == (OK, 3.0, "USD")


@pytest.mark.parametrize(
    "doc", [{"is_available": True}, {"is_available": True, "balance_infos": []}, {"balance_infos": "x"},
            {"is_available": "yes", "balance_infos": [{"currency": "CNY", "total_balance": "1"}]},
            {"is_available": True, "balance_infos": [{"currency": "CNY", "total_balance": "n/a"}]}],
)
def test_deepseek_an_unreadable_answer_is_unknown(doc: dict[str, Any]) -> None:
    _, result = drive(balance("deepseek"), j(200, doc))

    assert (result.kind, result.balance) == (UNKNOWN, None)


@pytest.mark.parametrize(("value", "kind"), [(1.0, EXHAUSTED), (0.99, EXHAUSTED), (1.01, OK)])
def test_a_balance_at_or_below_the_threshold_is_exhausted(value: float, kind: ProbeKind) -> None:
    _, result = drive(balance("moonshot", threshold=1.0), j(200, {"code": 0, "data": {"available_balance": value}}))

    assert (result.kind, result.balance, result.currency) == (kind, value, "CNY")


def openrouter(**data: Any) -> ProbeResponse:
    base = {"label": "sk-or-v1-…", "limit": 10, "limit_remaining": 7.5, "limit_reset": None, "usage": 2.5,
            "is_free_tier": False, "expires_at": None}
    return j(200, {"data": {**base, **data}})


def test_openrouter_reads_the_keys_remaining_limit() -> None:
    _, result = drive(balance("openrouter"), openrouter())

    assert (result.kind, result.balance, result.currency) == (OK, 7.5, "USD")


def test_openrouter_a_spent_key_limit_is_rechecked_at_its_reset() -> None:
    _, result = drive(balance("openrouter"), openrouter(limit_remaining=0, limit_reset="monthly"))

    assert result.kind is EXHAUSTED
    assert result.reset_at == next_reset("monthly", NOW) == 1751328000.0  # 2025-07-01 00:00 UTC


def test_openrouter_a_key_without_a_limit_is_valid_but_says_nothing_of_money() -> None:
    _, result = drive(balance("openrouter"), openrouter(limit=None, limit_remaining=None))

    assert (result.kind, result.funds, result.balance) == (OK, False, None)


def test_openrouter_an_expired_key_is_invalid() -> None:
    _, result = drive(balance("openrouter"), openrouter(expires_at="2025-06-01T00:00:00Z"))

    assert (result.kind, result.reason) == (INVALID, "expired")


def test_openrouter_a_future_expiry_is_fine() -> None:
    _, result = drive(balance("openrouter"), openrouter(expires_at="2027-01-01T00:00:00Z"))

    assert result.kind is OK


def test_siliconflow_reads_total_balance_and_its_code() -> None:
    ok = j(200, {"code": 20000, "message": "OK", "status": True, "data": {"totalBalance": "88.88"}})
    bad = j(200, {"code": 30001, "message": "invalid token", "status": False, "data": None})

    assert drive(balance("siliconflow"), ok)[1].balance == 88.88
    result = drive(balance("siliconflow"), bad)[1]
    assert (result.kind, result.code, result.balance) == (UNKNOWN, "30001", None)


@pytest.mark.parametrize("api", ["deepseek", "openrouter", "siliconflow", "moonshot"])
def test_a_balance_endpoint_refusing_the_key_with_401_is_invalid(api: str) -> None:
    answer = j(401, {"error": {"message": "Authentication Fails, Your api key: ****abcd is invalid",
                               "type": "authentication_error"}})

    _, result = drive(balance(api), answer)

    assert (result.kind, result.status) == (INVALID, 401)


@pytest.mark.parametrize("api", ["deepseek", "openrouter", "siliconflow", "moonshot"])
@pytest.mark.parametrize(
    "answer", [ProbeResponse(404, b"nope"), ProbeResponse(503, b""), j(200, {"error": {"message": "x"}}),
               ProbeResponse(200, b"not json")],
)
def test_a_balance_answer_that_cannot_be_read_is_unknown(api: str, answer: ProbeResponse) -> None:
    _, result = drive(balance(api), answer)

    assert (result.kind, result.balance) == (UNKNOWN, None)


def test_the_balance_base_url_defaults_to_the_pools_without_v1() -> None:
    policy = CheckerPolicy()

    assert balance_base_url(policy, "https://openrouter.ai/api/v1") == "https://openrouter.ai/api"
    assert balance_base_url(policy, "https://api.deepseek.com/v1/") == "https://api.deepseek.com"
    assert balance_base_url(policy, "https://api.deepseek.com") == "https://api.deepseek.com"
    given = CheckerPolicy(balance_base_url="https://billing.example.com/")
    assert balance_base_url(given, "https://api.deepseek.com/v1") == "https://billing.example.com"


# -- completion -----------------------------------------------------------------------------------


def test_completion_sends_a_one_token_request_to_the_model() -> None:
    requests, result = drive(CompletionProbe(BASE, D, "gpt-4o-mini"), j(200, {"choices": [], "usage": {}}))

    req = requests[0]
    assert (req.method, req.url) == ("POST", f"{BASE}/chat/completions")
    assert orjson.loads(req.body or b"") == {"model": "gpt-4o-mini", "max_tokens": 1,
                                             "messages": [{"role": "user", "content": "hi"}]}
    assert req.headers["Content-Type"] == "application/json"
    assert (result.kind, result.funds) == (OK, True)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (j(429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                           "code": "insufficient_quota"}}), EXHAUSTED),
        (j(402, {"error": {"message": "Insufficient Balance", "type": "unknown_error"}}), EXHAUSTED),
        (j(401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}), INVALID),
        (j(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}), UNKNOWN),
        (j(503, {"error": {"message": "overloaded"}}), UNKNOWN),
        (j(404, {"error": {"message": "The model does not exist", "code": "model_not_found"}}), UNKNOWN),
    ],
)
def test_completion_is_classified_by_the_dialect(answer: ProbeResponse, kind: ProbeKind) -> None:
    _, result = drive(CompletionProbe(BASE, D, "gpt-4o-mini"), answer)

    assert result.kind is kind


# -- a pool's probes ------------------------------------------------------------------------------


def test_build_probes_follows_the_configured_order() -> None:
    policy = CheckerPolicy(probes=("balance", "models", "billing", "completion"), balance_api="deepseek",
                           completion_model="m")

    assert [p.name for p in build_probes(policy, BASE, D)] == ["balance", "models", "billing", "completion"]
    assert [p.name for p in build_probes(policy, BASE, D, ("models",))] == ["models"]


@pytest.mark.parametrize("names", [("balance",), ("completion",), ("telepathy",)])
def test_build_probes_refuses_what_the_pool_cannot_run(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        build_probes(CheckerPolicy(), BASE, D, names)
