"""HTTP helpers for the gateway: path joining, header allow-lists, OpenAI-shaped errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from keyrelay.providers.base import Dialect, strip_query_param
from keyrelay.runtime.answers import local_error
from keyrelay.version import __version__

__all__ = [
    "FORWARDED",
    "error_response",
    "forward_request_headers",
    "forwarder",
    "join_upstream",
    "raw_forwarder",
    "strip_query_param",
]

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


def _forward_with(
    memo: dict[str, int], learn: Callable[[str], int]
) -> Callable[[Mapping[str, str]], dict[str, str]]:
    """A header filter over one memoised allow-list test (see :func:`forward_request_headers`)."""
    known = memo.get

    def forward(headers: Mapping[str, str]) -> dict[str, str]:
        out = {}
        ua = False
        for k, v in headers.items():
            keep = known(k)
            if keep is None:
                keep = learn(k)
            if keep:
                out[k] = v
                if keep == _KEEP_UA:
                    ua = True
        out["Accept-Encoding"] = "identity"
        if not ua:
            out["User-Agent"] = USER_AGENT
        return out

    return forward


#: The client's headers that may go upstream (the allow-list), plus ``Accept-Encoding:
#: identity`` so that what we relay is what we read, and our ``User-Agent`` if it sent none.
forward_request_headers = _forward_with(_FORWARD_MEMO, _forward_learn)


def _dialect_test(dialect: Dialect) -> Callable[[str], int] | None:
    """The allow-list test for a pool of ``dialect`` (``None``: the common one): the common list
    plus the dialect's own headers (Anthropic: ``anthropic-*``), never one of its credential headers."""
    names, prefixes, creds = dialect.forward_headers, dialect.forward_prefixes, dialect.auth_header_names
    if not names and not prefixes:
        return None

    def test(lk: str) -> int:
        if lk in creds:
            return _DROP
        if lk in names or lk.startswith(prefixes):
            return _KEEP
        return _forward_test(lk)

    return test


def forwarder(dialect: Dialect) -> Callable[[Mapping[str, str]], dict[str, str]]:
    """:func:`forward_request_headers` for a pool of ``dialect``: the common allow-list plus the
    dialect's own headers (Anthropic: ``anthropic-*``), never one of its credential headers."""
    test = _dialect_test(dialect)
    if test is None:
        return forward_request_headers
    memo, learn = _memo(test)
    return _forward_with(memo, learn)


_USER_AGENT_RAW = USER_AGENT.encode("latin-1")


def raw_forwarder(dialect: Dialect) -> Callable[[Iterable[tuple[bytes, bytes]]], dict[bytes, bytes]]:
    """:func:`forwarder` over header lines as parsed (bytes, as the lean server has them): the
    same decisions, the same lines in the same order, nothing decoded or encoded again."""
    test = _dialect_test(dialect) or _forward_test
    memo: dict[bytes, int] = {}
    known = memo.get

    def forward(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
        out = {}
        ua = False
        for k, v in raw:
            keep = known(k)
            if keep is None:
                if len(memo) >= 4096:
                    memo.clear()
                keep = memo[k] = test(k.decode("latin-1").lower())
            if keep:
                out[k] = v
                if keep == _KEEP_UA:
                    ua = True
        out[b"Accept-Encoding"] = b"identity"
        if not ua:
            out[b"User-Agent"] = _USER_AGENT_RAW
        return out

    return forward


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    dialect: Dialect | None = None,
) -> web.Response:
    """An error in the pool's dialect's shape; OpenAI's (``{"error": {"message", "type", "param",
    "code"}}``) when there is no pool."""
    body = local_error(status, message, type_, code, dialect)
    h = dict(headers or {})
    if retry_after is not None:
        h["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(status=status, body=body, content_type="application/json", headers=h)
