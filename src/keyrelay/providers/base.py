"""What every provider dialect offers: authentication for a key, classification of answers,
usage extraction and rebuilt (redacted) error bodies. Dialects are pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from keyrelay.core.model import Verdict

__all__ = ["Dialect", "OneToken", "Rule", "Usage", "chat_one_token", "rebase_url", "strip_query_param"]


def strip_query_param(query: str, name: str) -> str:
    """``query`` without any ``name=`` parameter (Gemini's ``key=``: a credential)."""
    if not query or name not in query:
        return query
    prefix = name + "="
    return "&".join(p for p in query.split("&") if p != name and not p.startswith(prefix))


def rebase_url(url: str, pool_base: str, key_base: str | None) -> str:
    """``url`` (made on the pool's ``base_url``) sent to a key's own base URL instead."""
    if not key_base:
        return url
    base = pool_base.rstrip("/")
    if not url.startswith(base) or url[len(base) : len(base) + 1] not in ("", "/", "?"):
        return url
    return key_base.rstrip("/") + url[len(base) :]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class OneToken:
    """The checker's 1-token request in a dialect's own API, sent to see whether an exhausted key
    can pay again (``providers/money.py``); the key's credential headers are added by the probe."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    #: the list a 2xx answer holds when it really is an answer (``choices``, ``content``, ``candidates``)
    answer_field: str


def chat_one_token(base_url: str, model: str) -> OneToken:
    """A 1-token chat completion (``POST {base}/chat/completions``, ``max_tokens: 1``): the
    OpenAI-compatible APIs' cheapest answer that costs money."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    return OneToken(f"{base_url.rstrip('/')}/chat/completions", {"Content-Type": "application/json"}, body, "choices")


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of a classification table.

    A rule matches when every given field matches: ``statuses`` (empty = any), ``codes``
    (the error's ``code``), ``types`` (the error's ``type``), ``message`` (a lower-case
    substring of the message). ``either`` matches when the code or the type is in it. Codes and
    types are compared lower-cased. Rows are tried in order; the first match decides.
    """

    outcome: str
    reason: str
    statuses: frozenset[int] = frozenset()
    codes: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    message: tuple[str, ...] = ()
    code_suffix: tuple[str, ...] = ()
    either: frozenset[str] = frozenset()


class Dialect(Protocol):
    """A provider's way of speaking: how a client presents its keyrelay token, how a pool key is
    presented upstream, which client headers go upstream, how answers are read and how errors
    (the upstream's, rebuilt, and keyrelay's own) are written. Pure: no I/O."""

    name: str
    #: request headers that carry credentials in this dialect (removed from client requests)
    auth_header_names: frozenset[str]
    #: a query parameter that carries credentials (Gemini's ``key``), removed before the
    #: request goes upstream; ``""`` when the dialect has none
    credential_query: str
    #: client headers forwarded upstream on top of the gateway's common allow-list (lower-case
    #: names, and name prefixes such as ``anthropic-``); never a credential header
    forward_headers: frozenset[str]
    forward_prefixes: tuple[str, ...]
    #: how a client is told to present its token (the 401's message)
    token_hint: str
    #: the upstream a pool of this provider uses when its config names none (``""``: required)
    default_base_url: str
    #: the bytes that start a usage object in this dialect's answers (found without decoding)
    usage_key: bytes
    #: bytes that show a stream reached its normal end (OpenAI's ``[DONE]``), so a caller that
    #: closes it right after still counts as a success
    stream_end: bytes
    #: path prefixes of this API: a path that names no pool but starts with one of these goes to
    #: the default pool when it speaks this dialect (Azure's ``/openai/deployments/…``)
    api_roots: tuple[str, ...]
    #: does :meth:`request_error` have anything to say (saves the call when not)
    checks_requests: bool
    #: may a request be answered with a streamed JSON array (Gemini's default stream)? Then
    #: :meth:`json_array_stream` says which requests are
    array_streams: bool
    #: the cheap model of the checker's 1-token request when neither the pool nor its host names one
    cheap_model: str

    def client_token(self, headers: Mapping[str, str], query_string: str) -> str:
        """The keyrelay token a client presented (``""`` when none)."""
        ...

    def request_error(self, method: str, path: str) -> tuple[int, str] | None:
        """(status, message) when a request cannot be served by any key (checked before a key is
        chosen; only called when :attr:`checks_requests`)."""
        ...

    def json_array_stream(self, path: str, query_string: str) -> bool:
        """Does this request ask for a streamed JSON array (``providers/json_stream.py``)? Only
        called when :attr:`array_streams`."""
        ...

    def local_error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
        """An error keyrelay itself answers (no token, no key left, …) in this dialect's envelope."""
        ...

    def stream_failure(self, data: bytes, secrets: tuple[str, ...] = ()) -> tuple[int, str, bytes]:
        """(status, content type, body) for a stream whose first event was an error and no key
        was left to try: ``data`` is that event's payload."""
        ...

    def stream_cut_event(self) -> bytes:
        """The SSE frame that ends a stream the upstream broke off after content had been sent."""
        ...

    def models_probe(self, base_url: str, secret: str) -> tuple[str, dict[str, str]]:
        """(URL, headers) of the request that lists models with ``secret``: proves a key valid."""
        ...

    def auth_headers(self, secret: str) -> dict[str, str]:
        """Headers that present ``secret`` upstream."""
        ...

    def one_token(self, base_url: str, model: str) -> OneToken:
        """The cheapest answer that costs money: a 1-token request to ``model`` in this API."""
        ...

    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Classify a complete (non-streamed, or error) answer."""
        ...

    def classify_event(self, data: bytes) -> Verdict | None:
        """Classify one SSE ``data:`` payload; ``None`` when it is an ordinary event."""
        ...

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        """Token usage from a decoded JSON answer or SSE event, if it has any."""
        ...

    def usage_at(self, data: bytes, at: int) -> Usage | None:
        """Token usage read straight off the raw bytes, where ``"usage"`` starts at ``at``, when
        they are in the provider's usual spelling; ``None`` means "decode to find out". Saves
        decoding a JSON document on every answer (the hot path)."""
        ...

    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        """An error body safe to hand to a client: rebuilt from the upstream one, keys redacted."""
        ...
