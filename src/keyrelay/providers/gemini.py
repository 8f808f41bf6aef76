"""The Gemini dialect: the native API (``/v1beta/models/{model}:generateContent``,
``:streamGenerateContent``, ``:countTokens``, ``:embedContent``, ``:batchEmbedContents``,
``GET /v1beta/models``, the same under ``/v1/``) and Gemini's OpenAI-compatible endpoint
(``/v1beta/openai/…``), with ``x-goog-api-key`` auth upstream.

Clients present their keyrelay token the ways Google's SDKs present a key: ``x-goog-api-key``
(``google-genai``), ``?key=`` (REST examples, older SDKs) or ``Authorization: Bearer`` (the
OpenAI-compatible endpoint). ``key=`` never goes upstream.

Errors are google.rpc.Status (``{"error": {"code", "message", "status", "details"}}``, sometimes
wrapped in a one-element array). :func:`keyrelay.providers.google_status.google_code` reads the
``ErrorInfo`` reason and which quota ran out; :data:`RULES` decides (PROVIDER-ERRORS.md §4,
``tests/fixtures/google_errors.py``, ``tests/fixtures/gemini_native_errors.py``). Usage comes from
``usageMetadata`` (completion = candidates + thoughts). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from keyrelay.core.durations import retry_after_from_headers
from keyrelay.core.masking import redact
from keyrelay.core.model import Verdict
from keyrelay.providers.base import OneToken, Rule, Usage, chat_one_token
from keyrelay.providers.envelope import error_or_text, rule_verdict
from keyrelay.providers.google_status import google_code, google_retry_delay
from keyrelay.providers.openai_rules import wait_in_message

__all__ = ["RULES", "GeminiDialect"]

_F = frozenset

#: status + code (ErrorInfo reason / quota kind / rpc status, lower-case) + message → outcome.
RULES: tuple[Rule, ...] = (
    # -- the key itself
    Rule("invalid_key", "invalid api key", codes=_F({"api_key_invalid", "api_key_expired"})),
    Rule("invalid_key", "invalid api key", _F({400}), message=("api key not valid", "api key expired", "api key not found")),
    Rule("invalid_key", "key suspended", codes=_F({"consumer_suspended"})),
    Rule("invalid_key", "key blocked for this api", codes=_F({"api_key_service_blocked", "api_key_http_referrer_blocked",
                                                            "api_key_ip_address_blocked", "service_disabled",
                                                            "consumer_invalid"})),
    Rule("invalid_key", "key reported as leaked", _F({403}), message=("reported as leaked",)),
    Rule("invalid_key", "unauthenticated", _F({401})),
    # -- the egress: every key fails alike
    Rule("upstream_fault", "region not supported", _F({400, 403}), message=("user location is not supported",)),
    Rule("quota_exhausted", "billing required", _F({400}), message=("free tier is not available in your country",)),
    Rule("quota_exhausted", "billing required", message=("enable billing", "billing account")),
    # -- a model this key's project or tier cannot use: not the key
    Rule("client_error", "no access to this model", _F({403}), message=("caller does not have permission",)),
    Rule("upstream_fault", "permission denied (unrecognised)", _F({403})),
    # -- RESOURCE_EXHAUSTED: which quota ran out decides (google_status.py)
    Rule("rate_limited", "per-minute quota", _F({429}), codes=_F({"quota_per_minute"})),
    Rule("quota_exhausted", "daily quota used up", _F({429}), codes=_F({"quota_per_day"})),
    Rule("quota_exhausted", "no quota on this tier", _F({429}), codes=_F({"quota_none"})),
    Rule("rate_limited", "rate limited", _F({429})),
    # -- the request's own fault
    Rule("client_error", "bad request", _F({400, 404, 405, 409, 413, 415, 422})),
    # -- Google's trouble
    Rule("upstream_fault", "upstream at capacity", _F({503})),
    Rule("upstream_fault", "upstream timeout", _F({408, 504})),
    Rule("upstream_fault", "upstream error", _F(range(500, 600))),
)

#: google.rpc.Code names by HTTP status, for the errors keyrelay writes itself
_RPC = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: a native call: ``/v1beta/models/{model}:{method}`` (also tunedModels, ``/v1/``, ``/v1alpha/``)
_NATIVE_CALL = re.compile(r"/v1(?:beta|alpha)?/(?:models|tunedModels)/[^/:]+:[A-Za-z]+")
_CUT_EVENT = (
    b"data: "
    + orjson.dumps({"error": {"code": 502, "message": "upstream stream broke off", "status": "UNAVAILABLE"}})
    + b"\n\n"
)


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _error_in(doc: Any) -> dict[str, Any] | None:
    """The ``error`` of a google.rpc.Status answer: the object, a one-element array of it, or (a
    streamed JSON array) any element that carries one."""
    if isinstance(doc, list):
        for item in doc:
            err = _error_in(item)
            if err is not None:
                return err
        return None
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    if isinstance(err, str):
        return {"message": err}
    return err if isinstance(err, dict) else None


def parse_error(body: bytes) -> dict[str, Any] | None:
    try:
        return _error_in(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        return None


def _code(err: Mapping[str, Any]) -> str:
    """What the table matches: the ErrorInfo reason or quota kind, else the rpc status, else an
    OpenAI-style ``code`` (the OpenAI-compatible endpoint)."""
    code = google_code(err)
    if code:
        return code
    status = err.get("status")
    if isinstance(status, str) and status:
        return status.lower()
    return _s(err.get("code"))


def _status_of(err: Mapping[str, Any]) -> int:
    raw = err.get("code")
    if isinstance(raw, int) and 400 <= raw < 600:
        return raw
    if isinstance(raw, str) and raw.isdigit() and 400 <= int(raw) < 600:
        return int(raw)
    by_name = {v: k for k, v in _RPC.items() if k not in (413, 502)}
    return by_name.get(_s(err.get("status")), 500)


class GeminiDialect:
    """Google's Gemini API (Generative Language API)."""

    name = "gemini"
    auth_header_names = frozenset({"authorization", "x-goog-api-key", "api-key", "x-api-key"})
    credential_query = "key"
    forward_headers: frozenset[str] = frozenset({"x-goog-api-client", "x-server-timeout"})
    forward_prefixes: tuple[str, ...] = ()
    token_hint = "Send 'x-goog-api-key: <token>' (or '?key=<token>', or 'Authorization: Bearer <token>')"
    default_base_url = "https://generativelanguage.googleapis.com"
    usage_key = b'"usage'  # "usageMetadata" (native) and "usage" (the OpenAI-compatible endpoint)
    stream_end = b'"finishReason"'
    api_roots: tuple[str, ...] = ("/v1beta/", "/v1/", "/v1alpha/")
    checks_requests = True
    array_streams = True
    #: a Flash-Lite model: gemini-2.0-flash-lite was shut down on 2026-06-01 and 2.5 follows
    #: (ai.google.dev/gemini-api/docs/deprecations); 3.1 Flash-Lite went GA in April 2026
    cheap_model = "gemini-3.1-flash-lite"

    # -- auth ------------------------------------------------------------------------------
    def client_token(self, headers: Mapping[str, str], query_string: str) -> str:
        token = headers.get("x-goog-api-key")
        if token:
            return token.strip()
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        if "key=" in query_string:
            for name, value in parse_qsl(query_string, keep_blank_values=True):
                if name == "key":
                    return value.strip()
        return ""

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"x-goog-api-key": secret}

    def request_error(self, method: str, path: str) -> tuple[int, str] | None:
        """A generate / count / embed call must name its model: ``…/models/{model}:method``."""
        if "/openai/" in path:
            return None
        last = path.rsplit("/", 1)[-1]
        if ":" in last and _NATIVE_CALL.fullmatch(path) is None:
            return 400, f"no model in the request path {path!r}: expected /v1beta/models/{{model}}:{last.partition(':')[2]}"
        return None

    def json_array_stream(self, path: str, query_string: str) -> bool:
        """Does this request ask for the streamed JSON array (``:streamGenerateContent`` with no
        ``alt``, or ``alt=json``; Google's generated REST clients send ``$alt=json;enum-encoding=int``)
        rather than SSE (``alt=sse``) or protobuf (``alt=proto``)? Its answer is read with
        :mod:`keyrelay.providers.json_stream`."""
        if not path.endswith(":streamGenerateContent") or "/openai/" in path:
            return False
        if "alt=" not in query_string:
            return True
        alts = [v for k, v in parse_qsl(query_string, keep_blank_values=True) if k in ("alt", "$alt")]
        return not alts or alts[-1].partition(";")[0].strip().lower() in ("", "json")

    # -- reading answers -------------------------------------------------------------------
    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        if 200 <= status < 300:
            if b'"error"' not in body:
                return Verdict.ok(status)
            err = parse_error(body)
            if err is None:
                return Verdict.ok(status)
            return self._verdict(status, _status_of(err), err, headers, now)
        return self._verdict(status, status, error_or_text(parse_error(body), body), headers, now)

    def _verdict(
        self, status: int, eff: int, err: Mapping[str, Any] | None, headers: Mapping[str, str], now: float
    ) -> Verdict:
        def wait() -> float | None:
            w = retry_after_from_headers(headers, now)
            if w is None and err:
                w = google_retry_delay(err)
            if w is None and err:
                w = wait_in_message(_s(err.get("message")))  # "Please retry in 58.8s."
            return w

        return rule_verdict(status, eff, err, _code(err) if err else "", RULES, wait)

    def classify_event(self, data: bytes) -> Verdict | None:
        if b'"error"' not in data:
            return None
        err = parse_error(data)
        if err is None:
            return None
        return self._verdict(200, _status_of(err), err, {}, 0.0)

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        u = payload.get("usageMetadata")
        if isinstance(u, dict):
            p = u.get("promptTokenCount", 0)
            c = u.get("candidatesTokenCount", 0)
            t = u.get("thoughtsTokenCount", 0)
            c = (c if isinstance(c, int) else 0) + (t if isinstance(t, int) else 0)
            return Usage(p if isinstance(p, int) else 0, c)
        u = payload.get("usage")  # the OpenAI-compatible endpoint
        if isinstance(u, dict):
            p, c = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
            return Usage(p if isinstance(p, int) else 0, c if isinstance(c, int) else 0)
        return None

    def usage_at(self, data: bytes, at: int) -> Usage | None:
        return None  # Google pretty-prints its answers: decode

    # -- writing errors --------------------------------------------------------------------
    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        err = parse_error(body)
        if err is None:
            text = redact(body.decode("utf-8", "replace"), secrets)[:2000] if body else ""
            return self.local_error(status, text or f"upstream answered HTTP {status}")
        code = err.get("code") if isinstance(err.get("code"), int) else status
        out: dict[str, Any] = {
            "code": code,
            "message": redact(_s(err.get("message")), secrets),
            "status": _s(err.get("status")) or _RPC.get(status, "UNKNOWN"),
        }
        details = err.get("details")
        if isinstance(details, list):  # reasons and retry delays help the client; keys are scrubbed
            out["details"] = orjson.loads(redact(orjson.dumps(details).decode(), secrets))
        return orjson.dumps({"error": out})

    def local_error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
        return orjson.dumps({"error": {"code": status, "message": message, "status": _RPC.get(status, "UNKNOWN")}})

    def stream_failure(self, data: bytes, secrets: tuple[str, ...] = ()) -> tuple[int, str, bytes]:
        err = parse_error(data) or {}
        status = _status_of(err)
        return status, "application/json", self.error_body(status, data, secrets)

    def stream_cut_event(self) -> bytes:
        return _CUT_EVENT

    def models_probe(self, base_url: str, secret: str) -> tuple[str, dict[str, str]]:
        base = base_url.rstrip("/")
        if base.endswith(("/v1beta", "/v1", "/v1alpha")):
            return f"{base}/models", self.auth_headers(secret)
        if base.endswith("/openai"):  # the OpenAI-compatible endpoint as the base
            return f"{base}/models", self.auth_headers(secret)
        return f"{base}/v1beta/models", self.auth_headers(secret)

    def one_token(self, base_url: str, model: str) -> OneToken:
        """``:generateContent`` with ``maxOutputTokens: 1`` (on the OpenAI-compatible endpoint
        as the base: a 1-token chat completion)."""
        base = base_url.rstrip("/")
        if base.endswith("/openai"):
            return chat_one_token(base, model)
        root = base if base.endswith(("/v1beta", "/v1", "/v1alpha")) else f"{base}/v1beta"
        name = model.removeprefix("models/")
        body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                             "generationConfig": {"maxOutputTokens": 1}})
        return OneToken(f"{root}/models/{name}:generateContent", {"Content-Type": "application/json"}, body,
                        "candidates")
