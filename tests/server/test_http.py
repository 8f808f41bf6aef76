"""The gateway's header allow-lists and path joining."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from keyrelay.runtime.flow import answer_headers
from keyrelay.server.http import USER_AGENT, forward_request_headers, join_upstream


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION", "api-key", "X-Api-Key", "Cookie"])
def test_client_credentials_never_go_upstream_whatever_their_case(name: str) -> None:
    for _ in range(2):  # the first time decides, the second comes from the memo
        out = forward_request_headers(CIMultiDict([(name, "Bearer kr-secret"), ("Content-Type", "application/json")]))
        assert {k.lower() for k in out} == {"content-type", "accept-encoding", "user-agent"}
        assert "kr-secret" not in str(out)


def test_allowed_headers_pass_with_their_values() -> None:
    sent = CIMultiDict([("OpenAI-Beta", "assistants=v2"), ("X-Stainless-Lang", "python"), ("User-Agent", "OpenAI/Python 3.1"),
                        ("Host", "gateway:8787"), ("Content-Length", "12"), ("Accept-Encoding", "gzip")])
    out = forward_request_headers(sent)
    assert out == {"OpenAI-Beta": "assistants=v2", "X-Stainless-Lang": "python", "User-Agent": "OpenAI/Python 3.1",
                   "Accept-Encoding": "identity"}


def test_our_user_agent_only_when_the_client_sent_none() -> None:
    assert forward_request_headers(CIMultiDict())["User-Agent"] == USER_AGENT
    assert "User-Agent" not in forward_request_headers(CIMultiDict([("user-agent", "curl/8")]))


def test_hop_by_hop_and_recomputed_answer_headers_are_dropped() -> None:
    up = CIMultiDict([("Content-Type", "application/json"), ("Content-Length", "9"), ("Connection", "keep-alive"),
                      ("Set-Cookie", "__cf_bm=x"), ("x-request-id", "req_1"), ("openai-processing-ms", "12")])
    assert answer_headers(up) == {"content-type": "application/json", "x-request-id": "req_1", "openai-processing-ms": "12"}


@pytest.mark.parametrize(
    ("base", "rest", "query", "url"),
    [
        ("https://api.openai.com/v1", "/v1/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1", "/chat/completions", "", "https://api.openai.com/v1/chat/completions"),
        ("https://x.test/openai", "/v1/models", "limit=2", "https://x.test/openai/v1/models?limit=2"),
    ],
)
def test_paths_join_as_the_readme_says(base: str, rest: str, query: str, url: str) -> None:
    assert join_upstream(base, rest, query) == url
