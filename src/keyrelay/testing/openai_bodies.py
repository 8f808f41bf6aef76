"""What the fake upstream sends, as OpenAI sends it: verbatim error bodies (PROVIDER-ERRORS.md
§1; ids replaced), the headers and pieces of success answers, and how a request is sized."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from keyrelay.testing.key_specs import go_duration


def _err(message: str, type_: str | None, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


# Verbatim bodies from PROVIDER-ERRORS.md §1 (ids replaced).
_KEY_PAGE = "https://platform.openai.com/account/api-keys."
_NO_KEY = _err(
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the "
    f"API from your browser and are prompted for a username and password. You can obtain an API key from {_KEY_PAGE}",
    "invalid_request_error",
    None,
)
_DEACTIVATED = (
    b'{"error":{"message":"The OpenAI account associated with this API key has been deactivated. If you are the '
    b"developer for this OpenAI app, please check your email for more information. If you are seeing this error while "
    b'using another app or site, please reach out to them for more help.","type":"invalid_request_error","param":null,'
    b'"code":"account_deactivated"}}'
)
_REGION = (
    b'{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported",'
    b'"param":null,"type":"request_forbidden"}}'
)
_QUOTA = (
    b'{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more '
    b'information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",'
    b'"type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'
)
_CREDIT = (
    b'{"error":{"message":"You have no credits remaining. Add credits to continue using the API at '
    b'https://platform.openai.com/settings/organization/billing/.","type":"insufficient_quota","param":null,'
    b'"code":"credit_balance_exhausted"}}'
)
_RATE = (
    b'{"error":{"message":"Rate limit reached for gpt-4 in organization org-fake on tokens per min (TPM): Limit 10000, '
    b"Used 8554, Requested 3082. Please try again in 9.816s. Visit https://platform.openai.com/account/rate-limits to "
    b'learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}'
)


def gemini_rate_limit(delay: float) -> bytes:
    """Gemini's per-minute 429 (google.rpc.Status; RooCodeInc/Roo-Code#3883), ``delay`` in RetryInfo."""
    return (
        b'{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. '
        b'For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",'
        b'"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure",'
        b'"violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",'
        b'"quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier","quotaDimensions":{"location":"global",'
        b'"model":"gemini-2.5-flash"},"quotaValue":"250000"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo",'
        b'"retryDelay":"' + f"{delay:g}s".encode() + b'"}]}}'
    )


_SERVER = (
    b'{"error":{"message":"The server had an error while processing your request. Sorry about that!",'
    b'"type":"server_error","param":null,"code":null}}'
)
_OVERLOADED = (
    b'{"error":{"message":"That model is currently overloaded with other requests. You can retry your request, or '
    b"contact us through our help center at help.openai.com if the error persists. (Please include the request ID "
    b'169bee8d in your message.)","type":"server_error","param":null,"code":null}}'
)
_BAD_GATEWAY = b'{"error":{"code":502,"message":"Bad gateway.","param":null,"type":"cf_bad_gateway"}}'
_BAD_JSON = (
    b'{"error":{"message":"We could not parse the JSON body of your request. (HINT: This likely means you aren\'t '
    b"using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    b"If you have trouble figuring out how to fix this, please contact us through our help center at "
    b'help.openai.com.)","type":"invalid_request_error","param":null,"code":null}}'
)
_MODEL_NOT_FOUND = (
    b'{"error":{"message":"The model `no-such-model` does not exist or you do not have access to it.",'
    b'"type":"invalid_request_error","param":null,"code":"model_not_found"}}'
)
_CONTEXT = (
    b'{"error":{"message":"This model\'s maximum context length is 8192 tokens. However, your messages resulted in '
    b'8227 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages",'
    b'"code":"context_length_exceeded"}}'
)
_STREAM_ERR = (
    b'{"error":{"message":"The server experienced an error while processing your request. We apologize for the '
    b'inconvenience!","type":"server_error","param":null,"code":null}}'
)
_NOT_MULTIPART = _err("Invalid Content-Type header, expected multipart/form-data.", "invalid_request_error", None)
_NO_FILE = _err("you must provide a file", "invalid_request_error", None, "file")


# Success answers.
COMPLETION_TOKENS = 7
SPEECH_BYTES = bytes(i * 7 % 256 for i in range(4096))
_PIECES = ("Hello", "!", " How", " can", " I", " help", "?")
_TEXT = "".join(_PIECES)
_EMBEDDING = [round(0.125 * i - 0.5, 3) for i in range(8)]
_DONE = b"data: [DONE]\n\n"
_MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "whisper-1", "tts-1")
_MODEL_LIST = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in _MODEL_IDS]
_MODELS = orjson.dumps({"object": "list", "data": _MODEL_LIST})
_OK_HEADERS = {"x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999"}
_OK_HEADERS |= {"x-ratelimit-reset-requests": "12ms", "x-ratelimit-limit-tokens": "160000"}
_OK_HEADERS |= {"x-ratelimit-remaining-tokens": "159976", "x-ratelimit-reset-tokens": "9ms"}
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


def _invalid_key(key: str) -> bytes:
    """OpenAI's 401, echoing the key masked as OpenAI does (``sk-PMafP***E873``; short values whole)."""
    shown = f"{key[:8]}***{key[-4:]}" if len(key) > 12 else key
    msg = f"Incorrect API key provided: {shown}. You can find your API key at {_KEY_PAGE}"
    return _err(msg, "invalid_request_error", "invalid_api_key")


def _sse(data: bytes, event: str | None = None) -> bytes:
    return (b"event: " + event.encode() + b"\n" if event else b"") + b"data: " + data + b"\n\n"


def _chars(messages: Any) -> int:
    total = 0
    for m in messages if isinstance(messages, list) else ():
        c = m.get("content") if isinstance(m, dict) else None
        total += len(c) if isinstance(c, str) else len(orjson.dumps(c)) if c else 0
    return total


def _count(items: Any) -> int:
    """How many inputs: a list of strings/messages counts each, anything else is one."""
    return len(items) if isinstance(items, list) and items and not isinstance(items[0], int) else 1


def rate_headers(retry_after: float | None) -> dict[str, str]:
    """The headers of a 429 rate limit, announcing ``retry_after`` seconds in all three forms."""
    h = {"x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "0"}
    if retry_after is not None:
        h["retry-after"] = str(math.ceil(retry_after))
        h["retry-after-ms"] = str(round(retry_after * 1000))
        h["x-ratelimit-reset-requests"] = go_duration(retry_after)
    return h


async def read_multipart(request: web.Request) -> dict[str, Any]:
    """A multipart request's fields; a file field as bytes, with its name under ``<field>.filename``."""
    fields: dict[str, Any] = {}
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is None:
            fields[part.name] = await part.text()
            continue
        data = bytearray()
        while chunk := await part.read_chunk(1 << 16):
            data += chunk
        fields[part.name], fields[part.name + ".filename"] = bytes(data), part.filename
    return fields
