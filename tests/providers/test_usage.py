"""Token usage out of raw answers: the quick read of OpenAI's own spelling and the decoding
fallback must agree with the dialect's reading of the decoded document, whatever the spelling."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from keyrelay.providers.base import Usage
from keyrelay.providers.openai import OpenAIDialect
from keyrelay.providers.usage import usage_of_json

dialect = OpenAIDialect()

CHAT = (
    b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,'
    b'"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0}},"system_fingerprint":"fp_1"}'
)


def test_openai_spelling_is_read_without_decoding() -> None:
    assert dialect.usage_at(CHAT, CHAT.rfind(b'"usage"')) == Usage(1117, 46)
    assert usage_of_json(dialect, "application/json", CHAT) == Usage(1117, 46)


def test_other_spellings_are_left_to_decoding() -> None:
    spaced = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    assert dialect.usage_at(spaced, spaced.rfind(b'"usage"')) is None
    assert usage_of_json(dialect, "application/json", spaced) == Usage(3, 4)
    embeddings = b'{"object":"list","usage":{"prompt_tokens":8,"total_tokens":8}}'
    assert dialect.usage_at(embeddings, embeddings.rfind(b'"usage"')) is None
    assert usage_of_json(dialect, "application/json", embeddings) == Usage(8, 0)
    responses = b'{"object":"response","usage":{"input_tokens":12,"output_tokens":5,"total_tokens":17}}'
    assert usage_of_json(dialect, "application/json", responses) == Usage(12, 5)


def test_no_usage_or_not_json() -> None:
    assert usage_of_json(dialect, "application/json", b'{"object":"list","data":[]}') is None
    assert usage_of_json(dialect, "audio/mpeg", b'..."usage":{"prompt_tokens":1,"completion_tokens":2}') is None
    assert usage_of_json(dialect, "application/json", b'{"usage":null}') is None


_counts = st.integers(min_value=0, max_value=10**9)
_usage = st.fixed_dictionaries(
    {"prompt_tokens": _counts, "completion_tokens": _counts},
    optional={"total_tokens": _counts, "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": _counts})},
)


@given(_usage, st.text(max_size=40), st.sampled_from(["compact", "spaced", "big"]))
def test_every_way_agrees_with_decoding_the_whole_answer(usage: dict[str, object], content: str, spelling: str) -> None:
    doc = {"object": "chat.completion", "choices": [{"message": {"content": content}}], "usage": usage}
    if spelling == "big":  # past the size where only the usage object is decoded
        doc["choices"] = [{"message": {"content": content + "x" * 9000}}]
    body = json.dumps(doc, indent=1).encode() if spelling == "spaced" else orjson.dumps(doc)
    assert usage_of_json(dialect, "application/json", body) == dialect.usage(orjson.loads(body))
