"""The OpenAI envelope's classification table (:data:`RULES`: status + code/type + message →
outcome) and how an answer is matched against it: reading the error object out of an answer, a
2xx body or a stream event, and the wait a message asks for. :class:`~keyrelay.providers.openai.OpenAIDialect`
turns the matched row into a verdict; other dialects match their own tables with :func:`match`.

Each row of :data:`RULES` is pinned by a test in ``tests/providers/test_openai_rules.py`` that feeds
it a real upstream body (see ``tests/fixtures/openai_errors.py`` for their sources).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from keyrelay.core.durations import parse_duration
from keyrelay.providers import classify_rules as cr
from keyrelay.providers.base import Rule
from keyrelay.providers.google_status import google_code

__all__ = [
    "LONG_WAIT",
    "QUOTA_CODES",
    "RULES",
    "as_text",
    "code_of",
    "evidence",
    "match",
    "parse_error",
    "rule_for",
    "wait_in_message",
]

_F = frozenset

QUOTA_CODES = _F(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "billing_hard_limit_reached",
        "billing_not_active",
        "organization_usage_limit_exceeded",
        "access_terminated",
    }
)

#: status + code/type + message → outcome. First match wins; order matters.
#: A body that is not a JSON error envelope is matched with its text as the message.
RULES: tuple[Rule, ...] = (
    # -- egress problems: every key fails alike, never the key's fault
    Rule("upstream_fault", "region not supported", _F({403}), codes=_F({"unsupported_country_region_territory"})),
    Rule("upstream_fault", "region not supported", _F({403}), message=("country, region, or territory",)),
    # an HTML 403 is a CDN/WAF blocking our address (Groq behind Cloudflare), not a verdict on the key
    Rule("upstream_fault", "blocked at the edge", _F({403}), message=("<html", "<!doctype", "cloudflare")),
    # -- a provider's money code, whatever the status (classify_rules.py)
    *cr.MONEY_CODE_RULES,
    # -- the key itself is bad
    Rule("invalid_key", "account deactivated", _F({401}), codes=_F({"account_deactivated"})),
    Rule("invalid_key", "account deactivated", _F({401}), message=("deactivated account", "has been deactivated")),
    Rule("invalid_key", "invalid api key", _F({401}), codes=_F({"invalid_api_key"})),
    Rule("invalid_key", "ip not authorized", _F({401}), message=("ip not authorized",)),
    Rule("invalid_key", "not a member of an organization", _F({401}), message=("member of an organization",)),
    # one-api / new-api (≤2025) answer a used-up token with 401
    Rule("quota_exhausted", "token quota used up", _F({401}), message=("额度已用尽", "tokenstatusexhausted")),
    # resellers (one-api / new-api family) answer a spent balance with 403
    Rule("quota_exhausted", "quota exhausted", _F({403}), codes=_F({"insufficient_user_quota", "pre_consume_token_quota_failed"})),
    # ... and a model the token may not use with 403: per (key, model), not the key
    Rule("client_error", cr.MODEL_ACCESS, _F({403}), message=("无权使用模型",)),
    # OpenRouter: a key's, guardrail's or workspace's budget is spent until it resets (403)
    Rule(
        "quota_exhausted",
        "budget spent",
        _F({403}),
        codes=_F({"openrouter_key_limit", "openrouter_guardrail_budget", "openrouter_workspace_budget"}),
    ),
    # -- region, moderation, a model this key may not use; bad keys recognised for sure
    *cr.NOT_THE_KEY_RULES,
    *cr.MONEY_BEFORE_KEY_RULES,
    *cr.KEY_RULES,
    # Groq bans an organisation with a 400
    Rule("invalid_key", "organization restricted", _F({400}), codes=_F({"organization_restricted"})),
    # Gemini answers a bad, expired or unknown key with 400 (google.rpc.Status: google_status.py)
    Rule("invalid_key", "invalid api key", _F({400}), codes=_F({"api_key_invalid"})),
    # ... our egress's country with 400: every key fails alike
    Rule("upstream_fault", "region not supported", _F({400}), message=("user location is not supported",)),
    # ... and a free-tier key used from a country without a free tier: its project needs billing
    Rule("quota_exhausted", "billing required", _F({400}), message=("free tier is not available in your country",)),
    # -- Gemini words every RESOURCE_EXHAUSTED "You exceeded your current quota": the quota id
    #    tells a per-minute limit (slow down) from a spent day or a tier with no access
    Rule("rate_limited", "per-minute quota", _F({429}), codes=_F({"quota_per_minute"})),
    Rule("rate_limited", "rate limited", _F({429}), codes=_F({"resource_exhausted"})),
    Rule("quota_exhausted", "daily quota used up", _F({429}), codes=_F({"quota_per_day"})),
    Rule("quota_exhausted", "no quota on this tier", _F({429}), codes=_F({"quota_none"})),
    *cr.LOOKALIKE_RATE_RULES,
    # OpenRouter's in-flight budget is full (402 + Retry-After): wait, the key is fine
    Rule("rate_limited", "in-flight budget full", _F({402}), codes=_F({"openrouter_in_flight_budget"})),
    # -- spent
    Rule("quota_exhausted", "payment required", _F({402})),
    Rule("quota_exhausted", "quota exhausted", _F({429}), codes=QUOTA_CODES),
    Rule("quota_exhausted", "spend limit reached", _F({429}), code_suffix=("_spend_limit_exceeded",)),
    Rule("quota_exhausted", "quota exhausted", _F({429}), types=_F({"insufficient_quota"})),
    Rule("quota_exhausted", "quota exhausted", _F({429}), message=("exceeded your current quota", "no credits remaining")),
    Rule("quota_exhausted", "daily limit reached", _F({429}), message=("per day (tpd)", "per day (rpd)")),
    Rule("quota_exhausted", "daily limit reached", _F({429}), codes=_F({"openrouter_free_tier_daily"})),
    Rule("quota_exhausted", "daily limit reached", _F({429}), message=("free-models-per-day",)),
    # -- a 429 that no key can serve: the request is bigger than the tier's TPM
    Rule("client_error", "request too large for rate limit", _F({429}), message=("request too large for",)),
    # -- slow down
    Rule("rate_limited", "slow down", _F({429, 503}), codes=_F({"slow_down"})),
    # -- capacity errors dressed as rate limits: the other keys fail alike
    Rule("upstream_fault", "upstream at capacity", _F({429, 498}), codes=_F({"capacity_exceeded"})),
    Rule(
        "upstream_fault",
        "upstream at capacity",
        _F({429}),
        message=("capacity exceeded", "experiencing high demand", "上游负载已饱和"),
    ),
    *cr.OVERLOAD_RULES,
    # -- money in words (no code said so), then the auth refusals nobody recognised: verified
    *cr.MONEY_WORD_RULES,
    *cr.VERIFY_RULES,
    Rule("rate_limited", "rate limited", _F({429})),
    # -- the request's own fault
    Rule("client_error", "bad request", _F({400, 404, 405, 409, 413, 415, 422})),
    # -- upstream sick
    Rule("upstream_fault", "upstream timeout", _F({408})),
    Rule("upstream_fault", "upstream error", _F(range(500, 600))),
)

#: The HTTP status an error ``code`` found inside a 200 answer (or a stream event) stands for.
_CODE_STATUS: dict[str, int] = {
    **dict.fromkeys(QUOTA_CODES, 429),
    **dict.fromkeys(("invalid_api_key", "account_deactivated"), 401),
    **dict.fromkeys(("rate_limit_exceeded", "slow_down"), 429),
    **dict.fromkeys(("unsupported_country_region_territory", "insufficient_user_quota"), 403),
    "pre_consume_token_quota_failed": 403,
    **dict.fromkeys(("context_length_exceeded", "invalid_prompt", "bio_policy", "image_content_policy_violation"), 400),
    "model_not_found": 404,
    **cr.IN_BODY_STATUS,
}

#: "Please try again in 9.816s." (OpenAI, Groq), "Please retry after 60 seconds." (Azure)
_WAIT = re.compile(
    r"(?:try again|retry) (?:in|after) ((?:\d+(?:\.\d+)?(?:ms|h|m|s)(?![a-z]))+|\d+(?:\.\d+)?)"
    r"(?: ?(seconds?|secs?|minutes?|mins?|milliseconds?)\b)?"
)
_WAIT_UNIT = {"min": 60.0, "mil": 1e-3}

#: A rate limit that asks to wait longer than this (seconds; the default ``max_cooldown``) is a
#: spent quota (a daily cap): the key is exhausted until it is rechecked, not cooling.
LONG_WAIT = 3600.0


def parse_error(body: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(whole decoded object, its ``error`` object) or Nones when the body is not that shape.

    Tolerates envelope drift: a one-element list around the object, a string ``error``.
    """
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        return None, None
    err = doc.get("error")
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        return doc, None
    return doc, err


def as_text(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _status_in_body(err: Mapping[str, Any] | None) -> int:
    """The HTTP status an error object found inside a 200 answer stands for."""
    if not err:
        return 500
    raw = err.get("code")
    if isinstance(raw, int) and 400 <= raw < 600:
        return raw
    code, etype = as_text(raw).lower(), as_text(err.get("type")).lower()
    if code.isdigit() and 400 <= int(code) < 600:
        return int(code)
    if code in _CODE_STATUS:
        return _CODE_STATUS[code]
    if etype in cr.IN_BODY_STATUS:
        return cr.IN_BODY_STATUS[etype]
    if etype == "insufficient_quota" or code.endswith("_spend_limit_exceeded"):
        return 429
    return 500


def _error_of(body: bytes) -> dict[str, Any] | None:
    """The error object of a non-2xx answer: the ``error`` envelope, a bare top-level
    ``message``/``detail`` (Mistral), or for a body that is not JSON at all its text."""
    doc, err = parse_error(body)
    if err is not None:
        return err
    if doc is not None:
        if "message" in doc or "detail" in doc:
            return {"message": doc.get("message", doc.get("detail")), "type": doc.get("type"), "code": doc.get("code")}
        return None
    text = body[:512].decode("utf-8", "replace").strip()
    return {"message": text} if text else None


def _event_error(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Responses API stream errors: ``{"type":"error","code",…}`` and ``response.failed``."""
    kind = doc.get("type")
    if kind == "error":
        return {"message": doc.get("message"), "type": None, "param": doc.get("param"), "code": doc.get("code")}
    if kind == "response.failed":
        resp = doc.get("response")
        err = resp.get("error") if isinstance(resp, dict) else None
        return err if isinstance(err, dict) and err else None
    return None


def evidence(status: int, body: bytes, event: bool = False) -> tuple[int, dict[str, Any] | None] | None:
    """(status to match on, error object) for an answer or SSE event; ``None`` when it is a success.

    An error object inside a 2xx answer or a stream event is matched by the status it stands for.
    """
    if event or 200 <= status < 300:
        if b'"error"' not in body or (not event and body.lstrip()[:1] not in (b"{", b"[")):
            return None
        doc, err = parse_error(body)
        if err is None and event and doc is not None:
            err = _event_error(doc)
        if not err:
            return None
        return _status_in_body(err), err
    return status, _error_of(body)


def code_of(err: Mapping[str, Any]) -> str:
    """The error's code as the table matches it: google.rpc.Status from its status and details,
    OpenRouter's from ``metadata.limit_source`` (its ``code`` is the HTTP status again),
    Anthropic's from ``details.error_code`` (it sends no ``code``)."""
    google = google_code(err)
    if google:
        return google
    for holder, name in (("metadata", "limit_source"), ("details", "error_code")):
        box = err.get(holder)
        value = box.get(name) if isinstance(box, dict) else None
        if isinstance(value, str) and value:
            return value
    return as_text(err.get("code"))


def match(
    status: int, err: Mapping[str, Any] | None, code: str | None = None, rules: tuple[Rule, ...] | None = None
) -> Rule | None:
    """The first row of ``rules`` (default :data:`RULES`) for this status and error object
    (``code``: its :func:`code_of`, when the caller has it already)."""
    if code is None:
        code = code_of(err) if err else ""
    code_l = code.lower()  # rows name codes lower-cased (a dialect's own rows may keep the provider's case)
    etype = as_text(err.get("type")) if err else ""
    etype_l = etype.lower()
    msg = as_text(err.get("message")).lower() if err else ""
    for rule in RULES if rules is None else rules:
        if rule.statuses and status not in rule.statuses:
            continue
        if rule.codes and code_l not in rule.codes and code not in rule.codes:
            continue
        if rule.types and etype_l not in rule.types and etype not in rule.types:
            continue
        if rule.either and code_l not in rule.either and etype_l not in rule.either:
            continue
        if rule.code_suffix and not code.endswith(rule.code_suffix):
            continue
        if rule.message and not any(m in msg for m in rule.message):
            continue
        return rule
    return None


def rule_for(status: int, body: bytes, *, event: bool = False, rules: tuple[Rule, ...] | None = None) -> Rule | None:
    """The row of ``rules`` (default :data:`RULES`) that decides this answer (or SSE event
    payload); ``None`` for a success or when no row matches."""
    ev = evidence(status, body, event)
    return None if ev is None else match(ev[0], ev[1], None, rules)



def wait_in_message(message: str) -> float | None:
    m = _WAIT.search(message.lower())
    if m is None:
        return None
    value, unit = m.groups()
    if unit is None:
        return parse_duration(value)
    return float(value) * _WAIT_UNIT.get(unit[:3], 1.0)
