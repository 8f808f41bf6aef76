"""Each dialect's 1-token "can this key pay?" request (the checker's money probe), in its own API."""

from __future__ import annotations

import json

import pytest

from keyrelay.providers import get_dialect


def test_openai_and_compatible_hosts_get_a_chat_completion() -> None:
    req = get_dialect("openai").one_token("https://api.groq.com/openai/v1/", "llama-3.1-8b-instant")
    assert req.url == "https://api.groq.com/openai/v1/chat/completions" and req.answer_field == "choices"
    assert json.loads(req.body) == {"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": "hi"}],
                                    "max_tokens": 1}


@pytest.mark.parametrize("base", ["https://api.anthropic.com", "https://api.anthropic.com/v1/"])
def test_anthropic_gets_a_one_token_messages_request(base: str) -> None:
    req = get_dialect("anthropic").one_token(base, "claude-haiku-4-5")
    assert req.url == "https://api.anthropic.com/v1/messages" and req.answer_field == "content"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert json.loads(req.body) == {"model": "claude-haiku-4-5", "max_tokens": 1,
                                    "messages": [{"role": "user", "content": "hi"}]}
    assert not {h.lower() for h in req.headers} & {"x-api-key", "authorization"}  # the probe adds the key


@pytest.mark.parametrize(
    ("base", "model", "url"),
    [
        ("https://generativelanguage.googleapis.com", "gemini-3.1-flash-lite",
         "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.1-flash-lite:generateContent"),
        ("https://generativelanguage.googleapis.com/v1/", "models/cheap",
         "https://generativelanguage.googleapis.com/v1/models/cheap:generateContent"),
    ],
)
def test_gemini_gets_generate_content_with_one_output_token(base: str, model: str, url: str) -> None:
    req = get_dialect("gemini").one_token(base, model)
    assert req.url == url and req.answer_field == "candidates"
    doc = json.loads(req.body)
    assert doc["generationConfig"] == {"maxOutputTokens": 1} and doc["contents"][0]["parts"] == [{"text": "hi"}]
    assert "key=" not in req.url  # the key never travels in a URL


def test_gemini_openai_compatible_base_gets_a_chat_completion() -> None:
    req = get_dialect("gemini").one_token("https://generativelanguage.googleapis.com/v1beta/openai/", "m")
    assert req.url.endswith("/v1beta/openai/chat/completions") and req.answer_field == "choices"
