"""HTTP helpers for the gateway: path joining, header allow-lists, OpenAI-shaped errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

from keyrelay import __version__, redactor

__all__ = ["FORWARDED", "error_response", "forward_request_headers", "join_upstream", "response_headers"]

#: Request headers a client may send upstream. Everything else — above all the client's own
#: ``Authorization``, ``api-key``, ``x-api-key``, cookies — is dropped.
FORWARDED = frozenset(
    {
        "content-type",
        "accept",
        "user-agent",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "idempotency-key",
        "x-request-id",
        "anthropic-version",
        "anthropic-beta",
    }
)

#: Response headers never passed back (hop-by-hop, or recomputed by aiohttp).
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "set-cookie",
        "server",
        "date",
        "proxy-authenticate",
        "upgrade",
        "alt-svc",
        # credentials echoed back, and what only an upstream's own debugging needs (hosts,
        # routes, traces, the key or account it saw): never the client's business
        "authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "proxy-authorization",
        "via",
        "x-powered-by",
        "x-real-ip",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "x-envoy-upstream-service-time",
        "x-served-by",
    }
)
#: name prefixes of debugging-only response headers (dropped like ``_DROP_RESPONSE``)
_DROP_PREFIXES = ("x-debug", "x-envoy-", "x-upstream", "x-backend", "x-forwarded-", "x-amz-", "x-cache", "x-key")


def join_upstream(base_url: str, rest: str, query: str) -> str:
    """``base_url`` + ``rest`` (+ ``?query``).

    When the base URL ends in ``/v1`` and ``rest`` starts with ``/v1`` too, the duplicate is
    dropped: ``/openai/v1/chat/completions`` on ``https://api.openai.com/v1`` goes to
    ``https://api.openai.com/v1/chat/completions``. Otherwise ``rest`` is appended as is.
    """
    if base_url.endswith("/v1") and (rest == "/v1" or rest.startswith("/v1/")):
        rest = rest[3:]
    url = base_url + rest
    return f"{url}?{query}" if query else url


_DROP, _KEEP, _KEEP_UA = 0, 1, 2

#: Sent as ``User-Agent`` when the client sent none (instead of aiohttp's own).
USER_AGENT = f"keyrelay/{__version__}"


def _memo(test: Callable[[str], int]) -> tuple[dict[str, int], Callable[[str], int]]:
    """A per-name decision, memoised: clients and upstreams send the same dozen header names on
    every request, so the test (lower-casing, set lookups, prefixes) runs once per name. The memo
    is keyed by the name as sent, and bounded (odd names from many clients start it over)."""
    memo: dict[str, int] = {}

    def learn(name: str) -> int:
        if len(memo) >= 4096:
            memo.clear()
        keep = memo[name] = test(name.lower())
        return keep

    return memo, learn


def _forward_test(lk: str) -> int:
    if lk == "user-agent":
        return _KEEP_UA
    return _KEEP if lk in FORWARDED or lk.startswith("x-stainless-") else _DROP


_FORWARD_MEMO, _forward_learn = _memo(_forward_test)
_BACK_MEMO, _back_learn = _memo(lambda lk: _DROP if lk in _DROP_RESPONSE or lk.startswith(_DROP_PREFIXES) else _KEEP)


def forward_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that may go upstream (the allow-list), plus ``Accept-Encoding:
    identity`` so that what we relay is what we read, and our ``User-Agent`` if it sent none."""
    out = {}
    ua = False
    known = _FORWARD_MEMO.get
    for k, v in headers.items():
        keep = known(k)
        if keep is None:
            keep = _forward_learn(k)
        if keep:
            out[k] = v
            if keep == _KEEP_UA:
                ua = True
    out["Accept-Encoding"] = "identity"
    if not ua:
        out["User-Agent"] = USER_AGENT
    return out


def response_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """Upstream's answer headers minus hop-by-hop ones, those aiohttp computes again and
    debugging-only ones; every value kept is redacted (``WWW-Authenticate`` may name the key;
    values seen clean before cost a dict lookup: docs/design.md, "Secrets")."""
    out = {}
    known = _BACK_MEMO.get
    r = redactor.current()
    clean, seen = r.value, r.memo  # values seen clean before: one dict lookup, no call
    for k, v in upstream.items():
        keep = known(k)
        if keep is None:
            keep = _back_learn(k)
        if keep:
            out[k] = v if v in seen else clean(v)
    return out


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    h = dict(headers or {})
    if retry_after is not None:
        h["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(status=status, body=body, content_type="application/json", headers=h)
