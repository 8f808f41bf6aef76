"""The OpenAI dialect (and every OpenAI-compatible service): Bearer auth, the
``{"error": {message, type, param, code}}`` envelope, usage, streams' error events. Its
classification table and the reading of error objects are in :mod:`keyrelay.providers.openai_rules`
(``RULES``, ``parse_error``, ``rule_for`` and ``match`` are importable from here too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from keyrelay.core.durations import retry_after_from_headers
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import classify_rules as cr
from keyrelay.providers.base import OneToken, Rule, Usage, chat_one_token
from keyrelay.providers.google_status import google_retry_delay
from keyrelay.providers.openai_rules import (
    LONG_WAIT,
    RULES,
    as_text,
    code_of,
    evidence,
    match,
    parse_error,
    rule_for,
    wait_in_message,
)

__all__ = ["LONG_WAIT", "RULES", "OpenAIDialect", "match", "parse_error", "rule_for"]

#: ``usage`` as OpenAI (and DeepSeek, OpenRouter, …) write it, compact, the counts first
_COMPACT_USAGE = re.compile(rb'"usage":\{"prompt_tokens":(\d{1,15}),"completion_tokens":(\d{1,15})[,}]')

_OUTCOMES = {o.value: o for o in Outcome}

#: How long a key whose auth refusal no rule recognised is set aside while a probe decides
#: (seconds): long enough for the probe, short enough that a healthy key is soon back anyway.
VERIFY_HOLD = 30.0

_CUT_EVENT = (
    b"data: "
    + orjson.dumps({"error": {"message": "upstream stream broke off", "type": "upstream_error", "param": None, "code": "stream_cut"}})
    + b"\n\n"
)


class OpenAIDialect:
    """OpenAI and OpenAI-compatible upstreams."""

    name = "openai"
    auth_header_names = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
    credential_query = ""
    forward_headers: frozenset[str] = frozenset()
    forward_prefixes: tuple[str, ...] = ()
    token_hint = "Send 'Authorization: Bearer <token>'"
    default_base_url = "https://api.openai.com/v1"
    usage_key = b'"usage"'
    stream_end = b"[DONE]"
    api_roots: tuple[str, ...] = ("/v1/",)
    checks_requests = False
    array_streams = False
    cheap_model = "gpt-4o-mini"
    #: the classification table (``None``: :data:`RULES`); a subclass may put its own rows first
    rules: tuple[Rule, ...] | None = None

    def client_token(self, headers: Mapping[str, str], query_string: str) -> str:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:]
        return auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")

    def request_error(self, method: str, path: str) -> tuple[int, str] | None:
        return None

    def json_array_stream(self, path: str, query_string: str) -> bool:
        return False

    def local_error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})

    def stream_failure(self, data: bytes, secrets: tuple[str, ...] = ()) -> tuple[int, str, bytes]:
        return 200, "text/event-stream", b"data: " + self.error_body(200, data, secrets) + b"\n\ndata: [DONE]\n\n"

    def stream_cut_event(self) -> bytes:
        return _CUT_EVENT

    def models_probe(self, base_url: str, secret: str) -> tuple[str, dict[str, str]]:
        return f"{base_url.rstrip('/')}/models", self.auth_headers(secret)

    def one_token(self, base_url: str, model: str) -> OneToken:
        return chat_one_token(base_url, model)

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        ev = evidence(status, body)
        if ev is None:
            return Verdict.ok(status)
        return self._verdict(status, ev[0], ev[1], headers, now)

    def _verdict(
        self,
        status: int,
        eff: int,
        err: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        now: float,
    ) -> Verdict:
        code = code_of(err) if err else ""
        raw_message = as_text(err.get("message")) if err else ""
        message = redact(raw_message)[:300]
        rule = match(eff, err, code, self.rules)
        if rule is None:
            return Verdict(Outcome.CLIENT_ERROR if 400 <= eff < 500 else Outcome.UPSTREAM_FAULT, status, code or None, message)
        outcome = _OUTCOMES[rule.outcome]
        retry_after = None
        if rule.reason == cr.UNVERIFIED:
            retry_after = VERIFY_HOLD  # a short hold while a probe decides (keypool: verify)
        elif outcome is Outcome.RATE_LIMITED:
            retry_after = retry_after_from_headers(headers, now)
            if retry_after is None and err:
                retry_after = google_retry_delay(err)
            if retry_after is None:
                retry_after = wait_in_message(raw_message)
        reason = rule.reason
        if outcome is Outcome.RATE_LIMITED and retry_after is not None and retry_after > LONG_WAIT:
            outcome, reason = Outcome.QUOTA_EXHAUSTED, "limit reached for hours"  # Azure's "retry after 86400 seconds"
        return Verdict(outcome, status, code or None, message, retry_after, reason)

    def classify_event(self, data: bytes) -> Verdict | None:
        ev = evidence(200, data, event=True)
        if ev is None:
            return None
        return self._verdict(200, ev[0], ev[1], {}, 0.0)

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        u = payload.get("usage")
        if not isinstance(u, dict):
            return None
        p = u.get("prompt_tokens", u.get("input_tokens", 0))
        c = u.get("completion_tokens", u.get("output_tokens", 0))
        return Usage(p if isinstance(p, int) else 0, c if isinstance(c, int) else 0)

    def usage_at(self, data: bytes, at: int) -> Usage | None:
        m = _COMPACT_USAGE.match(data, at)
        return None if m is None else Usage(int(m[1]), int(m[2]))

    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        _doc, err = parse_error(body)
        if err is None:
            text = redact(body.decode("utf-8", "replace"), secrets)[:2000] if body else ""
            err = {"message": text or f"upstream answered HTTP {status}", "type": "upstream_error", "param": None, "code": None}
        return orjson.dumps(
            {
                "error": {
                    "message": redact(as_text(err.get("message")), secrets),
                    "type": err.get("type"),
                    "param": err.get("param"),
                    "code": err.get("code"),
                }
            }
        )

