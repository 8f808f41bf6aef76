"""The Anthropic dialect: the Messages API (``/v1/messages``, ``/v1/messages/count_tokens``,
``/v1/models``, batches), ``x-api-key`` auth, the ``{"type":"error","error":{"type","message"}}``
envelope and its classification table.

Anthropic's error ``type`` says what went wrong (docs: platform.claude.com/docs/en/api/errors):
``authentication_error`` (401) is a bad key; ``permission_error`` (403) is read by its message —
a key may lack one model or feature, the request may come from an unsupported region; spent
credit and spend limits come as 400 ``invalid_request_error`` or 429 ``rate_limit_error`` and are
told apart by their words or ``details.error_code``; ``overloaded_error`` (529), ``api_error``
(500) and ``timeout_error`` (504) are Anthropic's own trouble, never the key's. Rate limits carry
``retry-after`` and ``anthropic-ratelimit-*-reset`` (RFC 3339 times).

Each row of :data:`RULES` is pinned by a real body in ``tests/fixtures/anthropic_errors.py``. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from keyrelay.core.durations import retry_after_from_headers
from keyrelay.core.masking import redact
from keyrelay.core.model import Verdict
from keyrelay.providers.base import OneToken, Rule, Usage
from keyrelay.providers.envelope import error_or_text, rule_verdict

__all__ = ["RULES", "AnthropicDialect"]

_F = frozenset

#: type + status + message → outcome. First match wins.
RULES: tuple[Rule, ...] = (
    Rule("invalid_key", "invalid api key", types=_F({"authentication_error"})),
    # -- spent: a balance at zero, a user-set spend limit (400), the monthly tier cap (429)
    Rule("quota_exhausted", "billing problem", types=_F({"billing_error"})),
    Rule("quota_exhausted", "credit balance too low", message=("credit balance is too low",)),
    Rule(
        "quota_exhausted",
        "spend limit reached",
        message=("reached your specified api usage limits", "reached your specified workspace api usage limits"),
    ),
    Rule("quota_exhausted", "spend limit reached", codes=_F({"enforced_spend_limit_reached"})),
    Rule("quota_exhausted", "spend limit reached", _F({429}), message=("reached your api usage limits",)),
    Rule("invalid_key", "organization disabled", message=("this organization has been disabled",)),
    # a Claude subscription's OAuth credential: it never serves API requests
    Rule(
        "invalid_key",
        "credential not valid for the api",
        message=("only authorized for use with claude code", "does not meet scope requirement"),
    ),
    # -- permission_error: by its message, never a bad key on sight
    Rule(
        "upstream_fault",
        "region not supported",
        types=_F({"permission_error"}),
        message=("country, region, or territory", "request not allowed"),
    ),
    Rule("invalid_key", "organization disabled", types=_F({"permission_error"}), message=("organization has been disabled",)),
    Rule(
        "client_error",
        "no access to this model or feature",
        types=_F({"permission_error"}),
        message=("does not have permission", "not have access", "not allowed to use"),
    ),
    Rule("upstream_fault", "permission refused (unrecognised)", types=_F({"permission_error"})),
    Rule("upstream_fault", "upstream at capacity", types=_F({"overloaded_error"})),
    Rule("upstream_fault", "upstream error", types=_F({"api_error", "timeout_error"})),
    Rule("rate_limited", "rate limited", types=_F({"rate_limit_error"})),
    Rule("rate_limited", "rate limited", _F({429})),
    Rule("client_error", "bad request", _F({400, 404, 405, 409, 413, 415, 422})),
    Rule("invalid_key", "unauthorized", _F({401})),
    Rule("upstream_fault", "upstream timeout", _F({408})),
    Rule("upstream_fault", "upstream error", _F(range(500, 600))),
)

#: the status an error type stands for (an ``event: error`` in a 200 stream has none of its own)
TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_STATUS_TYPE = {v: k for k, v in TYPE_STATUS.items()} | {503: "overloaded_error", 502: "api_error"}

_RESETS = (
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
)
_COMPACT_USAGE = re.compile(rb'"usage":\{"input_tokens":(\d{1,15}),"output_tokens":(\d{1,15})[,}]')
_CUT_EVENT = (
    b"event: error\ndata: "
    + orjson.dumps({"type": "error", "error": {"type": "api_error", "message": "upstream stream broke off"}})
    + b"\n\n"
)


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def parse_error(body: bytes) -> dict[str, Any] | None:
    """The ``error`` object of an Anthropic envelope (or of any ``{"error": …}``), else ``None``."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    if isinstance(err, str):
        return {"message": err}
    return err if isinstance(err, dict) else None


def _code(err: Mapping[str, Any]) -> str:
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else _s(err.get("code"))


def reset_wait(headers: Mapping[str, str], now: float) -> float | None:
    """The longest wait named by ``anthropic-ratelimit-*-reset`` (RFC 3339 times), in seconds."""
    waits = []
    for h in _RESETS:
        value = headers.get(h)
        if not value:
            continue
        try:
            at = datetime.fromisoformat(value.strip())  # 3.11 reads "Z"
        except ValueError:
            continue
        if at.tzinfo is not None:
            waits.append(max(0.0, at.timestamp() - now))
    return max(waits) if waits else None


class AnthropicDialect:
    """Anthropic's Messages API."""

    name = "anthropic"
    auth_header_names = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
    credential_query = ""
    forward_headers: frozenset[str] = frozenset({"anthropic-version", "anthropic-beta"})
    forward_prefixes: tuple[str, ...] = ("anthropic-",)
    token_hint = "Send 'x-api-key: <token>' (or 'Authorization: Bearer <token>')"
    default_base_url = "https://api.anthropic.com"
    usage_key = b'"usage"'
    stream_end = b'"message_stop"'
    api_roots: tuple[str, ...] = ("/v1/",)
    checks_requests = False
    array_streams = False
    #: the API version the checker's probe asks for (clients send their own)
    probe_version = "2023-06-01"
    #: Claude 3.5 Haiku was retired on 2026-02-19 (docs.claude.com model-deprecations;
    #: coder/coder#22304 moved to this replacement)
    cheap_model = "claude-haiku-4-5"

    # -- auth ------------------------------------------------------------------------------
    def client_token(self, headers: Mapping[str, str], query_string: str) -> str:
        token = headers.get("x-api-key")
        if token:
            return token.strip()
        auth = headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else ""

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"x-api-key": secret}

    def request_error(self, method: str, path: str) -> tuple[int, str] | None:
        return None

    def json_array_stream(self, path: str, query_string: str) -> bool:
        return False

    # -- reading answers -------------------------------------------------------------------
    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        if 200 <= status < 300:
            if b'"error"' not in body[:256]:
                return Verdict.ok(status)
            err = parse_error(body)
            if err is None:
                return Verdict.ok(status)
            return self._verdict(status, TYPE_STATUS.get(_s(err.get("type")), 500), err, headers, now)
        return self._verdict(status, status, error_or_text(parse_error(body), body), headers, now)

    def _verdict(
        self, status: int, eff: int, err: Mapping[str, Any] | None, headers: Mapping[str, str], now: float
    ) -> Verdict:
        def wait() -> float | None:
            w = retry_after_from_headers(headers, now)
            return reset_wait(headers, now) if w is None else w

        etype = _s(err.get("type")) if err else ""
        return rule_verdict(status, eff, err, _code(err) if err else "", RULES, wait, etype)

    def classify_event(self, data: bytes) -> Verdict | None:
        if b'"error"' not in data:
            return None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or doc.get("type") != "error" or not isinstance(doc.get("error"), dict):
            return None
        err = doc["error"]
        return self._verdict(200, TYPE_STATUS.get(_s(err.get("type")), 500), err, {}, 0.0)

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        u = payload.get("usage")
        if not isinstance(u, dict):
            message = payload.get("message")  # the stream's message_start
            u = message.get("usage") if isinstance(message, dict) else None
            if not isinstance(u, dict):
                return None
        prompt = 0
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            v = u.get(name)
            prompt += v if isinstance(v, int) else 0
        out = u.get("output_tokens")
        return Usage(prompt, out if isinstance(out, int) else 0)

    def usage_at(self, data: bytes, at: int) -> Usage | None:
        m = _COMPACT_USAGE.match(data, at)
        return None if m is None else Usage(int(m[1]), int(m[2]))

    # -- writing errors --------------------------------------------------------------------
    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        err = parse_error(body)
        if err is None:
            text = redact(body.decode("utf-8", "replace"), secrets)[:2000] if body else ""
            return self.local_error(status, text or f"upstream answered HTTP {status}")
        etype = _s(err.get("type")) or _STATUS_TYPE.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": etype, "message": redact(_s(err.get("message")), secrets)}})

    def local_error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
        etype = _STATUS_TYPE.get(status) or ("invalid_request_error" if status < 500 else "api_error")
        return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})

    def stream_failure(self, data: bytes, secrets: tuple[str, ...] = ()) -> tuple[int, str, bytes]:
        err = parse_error(data) or {}
        status = TYPE_STATUS.get(_s(err.get("type")), 500)
        return status, "application/json", self.error_body(status, data, secrets)

    def stream_cut_event(self) -> bytes:
        return _CUT_EVENT

    def models_probe(self, base_url: str, secret: str) -> tuple[str, dict[str, str]]:
        base = base_url.rstrip("/")
        url = f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"
        return url, {"x-api-key": secret, "anthropic-version": self.probe_version}

    def one_token(self, base_url: str, model: str) -> OneToken:
        """A Messages request with ``max_tokens: 1`` (``POST /v1/messages``, ``anthropic-version``)."""
        base = base_url.rstrip("/")
        url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        body = orjson.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        headers = {"anthropic-version": self.probe_version, "Content-Type": "application/json"}
        return OneToken(url, headers, body, "content")
