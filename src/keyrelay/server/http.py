"""HTTP helpers for the gateway: path joining, header allow-lists, OpenAI-shaped errors."""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from aiohttp import web

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
    }
)


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


def forward_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for k, v in headers.items():
        lk = k.lower()
        if lk in FORWARDED or lk.startswith("x-stainless-"):
            out[k] = v
    out["Accept-Encoding"] = "identity"
    return out


def response_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for k, v in upstream.items():
        if k.lower() not in _DROP_RESPONSE:
            out[k] = v
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
