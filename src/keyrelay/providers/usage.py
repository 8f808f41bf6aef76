"""Token usage out of a whole JSON answer, without decoding the whole answer.

An embeddings answer can be megabytes; only its ``"usage"`` object is decoded here (the client
decodes the rest anyway). Pure: used by the gateway and by library mode alike.
"""

from __future__ import annotations

import re

import orjson

from keyrelay.providers.base import Dialect, Usage

__all__ = ["usage_of_json"]

#: ``"usage": {…}`` with objects nested two deep (``prompt_tokens_details``)
_SMALL = 8192
_USAGE = re.compile(rb'"usage"\s*:\s*\{(?:[^{}"]|"(?:[^"\\]|\\.)*"|\{(?:[^{}"]|"(?:[^"\\]|\\.)*"|\{[^{}]*\})*\})*\}')


def usage_of_json(dialect: Dialect, ctype: str, data: bytes) -> Usage | None:
    """The usage a JSON answer reports, or ``None``."""
    at = data.rfind(dialect.usage_key)
    if at < 0 or "json" not in ctype:
        return None
    quick = dialect.usage_at(data, at)
    if quick is not None:
        return quick
    # a small answer is cheaper to decode whole; so is any with Gemini's usageMetadata
    m = _USAGE.match(data, at) if len(data) > _SMALL else None
    try:
        doc = orjson.loads(b"{" + m.group() + b"}") if m else orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list) and doc and isinstance(doc[-1], dict):  # Gemini's streamed JSON array
        doc = doc[-1]
    return dialect.usage(doc) if isinstance(doc, dict) else None
