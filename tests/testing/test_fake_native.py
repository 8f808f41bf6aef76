"""The fake upstream's native APIs answer each key kind the way the real provider does, in its
own envelope, and each dialect reads those answers as the provider means them."""

from __future__ import annotations

import aiohttp
import pytest

from keyrelay.core.model import Outcome
from keyrelay.providers import get_dialect
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

KEY = "native-test-key-" + "x" * 20

#: provider → (path, body, how the key is sent)
CALLS = {
    "anthropic": ("/anthropic/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []},
                  lambda k: {"x-api-key": k, "anthropic-version": "2023-06-01"}),
    "gemini": ("/gemini/v1beta/models/gemini-2.5-flash:generateContent", {"contents": []},
               lambda k: {"x-goog-api-key": k}),
    "azure": ("/azure/openai/deployments/d/chat/completions?api-version=2024-10-21", {"messages": []},
              lambda k: {"api-key": k}),
}

KINDS = [
    (Behavior.OK, Outcome.OK),
    (Behavior.INVALID, Outcome.INVALID_KEY),
    (Behavior.CREDIT_EXHAUSTED, Outcome.QUOTA_EXHAUSTED),
    (KeySpec(Behavior.RATE_LIMITED, retry_after=30), Outcome.RATE_LIMITED),
    (Behavior.OVERLOADED, Outcome.UPSTREAM_FAULT),
    (Behavior.SERVER_ERROR, Outcome.UPSTREAM_FAULT),
]


@pytest.mark.parametrize("provider", list(CALLS))
@pytest.mark.parametrize(("spec", "outcome"), KINDS, ids=[str(k[1].value) + "-" + str(i) for i, k in enumerate(KINDS)])
async def test_each_key_kind_in_each_native_api(provider: str, spec: Behavior | KeySpec, outcome: Outcome) -> None:
    path, body, auth = CALLS[provider]
    dialect = get_dialect(provider)
    async with FakeUpstream({KEY: spec}) as fake, aiohttp.ClientSession() as s:
        r = await s.post(fake.root + path, json=body, headers=auth(KEY))
        async with r:
            data = await r.read()
            verdict = dialect.classify(r.status, {k.lower(): v for k, v in r.headers.items()}, data, 0.0)
    assert verdict.outcome is outcome, (r.status, data)
    if outcome is Outcome.RATE_LIMITED:
        assert verdict.retry_after is not None and verdict.retry_after > 0
    (call,) = fake.calls
    assert call.key == KEY


async def test_anthropic_refuses_a_request_without_its_version_header() -> None:
    async with FakeUpstream({KEY: Behavior.OK}) as fake, aiohttp.ClientSession() as s:
        r = await s.post(f"{fake.root}/anthropic/v1/messages", json={}, headers={"x-api-key": KEY})
        async with r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_a_bearer_key_is_not_an_anthropic_key() -> None:
    async with FakeUpstream({KEY: Behavior.OK}) as fake, aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
        r = await s.post(f"{fake.root}/anthropic/v1/messages", json={}, headers=headers)
        async with r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
