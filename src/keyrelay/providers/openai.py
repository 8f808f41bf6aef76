"""The OpenAI dialect (and every OpenAI-compatible service): Bearer auth, the
``{"error": {message, type, param, code}}`` envelope and its classification table.

Each row of :data:`RULES` is pinned by a test in ``tests/providers/test_openai.py`` that feeds
it a real upstream body (see ``tests/fixtures/openai_errors.py`` for their sources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from keyrelay.core.durations import retry_after_from_headers
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers.base import Rule, Usage

__all__ = ["OpenAIDialect", "RULES", "parse_error"]

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
RULES: tuple[Rule, ...] = (
    # -- egress problems: every key fails alike, never the key's fault
    Rule("upstream_fault", "region not supported", _F({403}), codes=_F({"unsupported_country_region_territory"})),
    Rule("upstream_fault", "region not supported", _F({403}), message=("country, region, or territory",)),
    # -- the key itself is bad
    Rule("invalid_key", "account deactivated", _F({401}), codes=_F({"account_deactivated"})),
    Rule("invalid_key", "account deactivated", _F({401}), message=("deactivated account", "has been deactivated")),
    Rule("invalid_key", "invalid api key", _F({401}), codes=_F({"invalid_api_key"})),
    Rule("invalid_key", "ip not authorized", _F({401}), message=("ip not authorized",)),
    Rule("invalid_key", "not a member of an organization", _F({401}), message=("member of an organization",)),
    Rule("invalid_key", "unauthorized", _F({401})),
    # resellers (one-api / new-api family) answer a spent balance with 403
    Rule("quota_exhausted", "quota exhausted", _F({403}), codes=_F({"insufficient_user_quota", "pre_consume_token_quota_failed"})),
    Rule("invalid_key", "key revoked or suspended", _F({403})),
    # -- spent
    Rule("quota_exhausted", "payment required", _F({402})),
    Rule("quota_exhausted", "quota exhausted", _F({429}), codes=QUOTA_CODES),
    Rule("quota_exhausted", "spend limit reached", _F({429}), code_suffix=("_spend_limit_exceeded",)),
    Rule("quota_exhausted", "quota exhausted", _F({429}), types=_F({"insufficient_quota"})),
    Rule("quota_exhausted", "quota exhausted", _F({429}), message=("exceeded your current quota", "no credits remaining")),
    # -- a 429 that no key can serve: the request is bigger than the tier's TPM
    Rule("client_error", "request too large for rate limit", _F({429}), message=("request too large for",)),
    # -- slow down
    Rule("rate_limited", "slow down", _F({429, 503}), codes=_F({"slow_down"})),
    Rule("rate_limited", "rate limited", _F({429})),
    # -- the request's own fault
    Rule("client_error", "bad request", _F({400, 404, 405, 409, 413, 415, 422})),
    # -- upstream sick
    Rule("upstream_fault", "upstream timeout", _F({408})),
    Rule("upstream_fault", "upstream error", _F(range(500, 600))),
)

_OUTCOMES = {o.value: o for o in Outcome}


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


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _status_in_body(err: Mapping[str, Any] | None) -> int:
    """The HTTP status an error object found inside a 200 answer stands for."""
    if not err:
        return 500
    raw = err.get("code")
    if isinstance(raw, int) and 400 <= raw < 600:
        return raw
    code, etype = _s(raw), _s(err.get("type"))
    if code.isdigit() and 400 <= int(code) < 600:
        return int(code)
    if code in QUOTA_CODES or etype == "insufficient_quota" or code.endswith("_spend_limit_exceeded"):
        return 429
    if code in ("invalid_api_key", "account_deactivated"):
        return 401
    if code in ("rate_limit_exceeded", "slow_down"):
        return 429
    return 500


def match(status: int, err: Mapping[str, Any] | None) -> Rule | None:
    code = _s(err.get("code")) if err else ""
    etype = _s(err.get("type")) if err else ""
    msg = _s(err.get("message")).lower() if err else ""
    for rule in RULES:
        if rule.statuses and status not in rule.statuses:
            continue
        if rule.codes and code not in rule.codes:
            continue
        if rule.types and etype not in rule.types:
            continue
        if rule.code_suffix and not code.endswith(rule.code_suffix):
            continue
        if rule.message and not any(m in msg for m in rule.message):
            continue
        return rule
    return None


class OpenAIDialect:
    """OpenAI and OpenAI-compatible upstreams."""

    name = "openai"
    auth_header_names = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        if 200 <= status < 300:
            if body[:1] not in (b"{", b"[") or b'"error"' not in body:
                return Verdict(Outcome.OK, status)
            _, err = parse_error(body)
            if err is None:
                return Verdict(Outcome.OK, status)
            return self._from_error(status, err, headers, now, in_body=True)
        _, err = parse_error(body)
        return self._from_error(status, err, headers, now)

    def _from_error(
        self,
        status: int,
        err: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        now: float,
        in_body: bool = False,
    ) -> Verdict:
        code = _s(err.get("code")) if err else ""
        message = redact(_s(err.get("message")))[:300] if err else ""
        # An error object inside an HTTP 200 is classified by the status it carries, or as a fault.
        eff = status
        if in_body:
            eff = _status_in_body(err)
        rule = match(eff, err)
        if rule is None:
            return Verdict(Outcome.CLIENT_ERROR if 400 <= eff < 500 else Outcome.UPSTREAM_FAULT, status, code or None, message)
        outcome = _OUTCOMES[rule.outcome]
        retry_after = retry_after_from_headers(headers, now) if outcome is Outcome.RATE_LIMITED else None
        return Verdict(outcome, status, code or None, message, retry_after, rule.reason)

    def classify_event(self, data: bytes) -> Verdict | None:
        if b'"error"' not in data:
            return None
        doc, err = parse_error(data)
        if err is None or not err:
            return None
        return self._from_error(200, err, {}, 0.0, in_body=True)

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        u = payload.get("usage")
        if not isinstance(u, dict):
            return None
        p = u.get("prompt_tokens", u.get("input_tokens", 0))
        c = u.get("completion_tokens", u.get("output_tokens", 0))
        return Usage(p if isinstance(p, int) else 0, c if isinstance(c, int) else 0)

    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        doc, err = parse_error(body)
        if err is None:
            text = redact(body.decode("utf-8", "replace"), secrets)[:2000] if body else ""
            err = {"message": text or f"upstream answered HTTP {status}", "type": "upstream_error", "param": None, "code": None}
        return orjson.dumps(
            {
                "error": {
                    "message": redact(_s(err.get("message")), secrets),
                    "type": err.get("type"),
                    "param": err.get("param"),
                    "code": err.get("code"),
                }
            }
        )
