"""A key's own base URL replaces its pool's in the URLs made for it (gateway, library, checker)."""

from __future__ import annotations

import pytest

from keyrelay.providers.base import rebase_url

POOL = "https://pool.openai.azure.com"
KEY = "https://eastus-res.openai.azure.com/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{POOL}/openai/deployments/d/chat/completions?api-version=1", "https://eastus-res.openai.azure.com/openai/deployments/d/chat/completions?api-version=1"),
        (POOL, "https://eastus-res.openai.azure.com"),
        (f"{POOL}?x=1", "https://eastus-res.openai.azure.com?x=1"),
        ("https://pool.openai.azure.com.evil/x", "https://pool.openai.azure.com.evil/x"),  # not the pool's: untouched
        ("https://elsewhere/x", "https://elsewhere/x"),
    ],
)
def test_rebase(url: str, expected: str) -> None:
    assert rebase_url(url, POOL + "/", KEY) == expected


def test_no_key_base_leaves_the_url() -> None:
    assert rebase_url(f"{POOL}/x", POOL, None) == f"{POOL}/x"
    assert rebase_url(f"{POOL}/x", POOL, "") == f"{POOL}/x"
