"""Presets: ``provider = "deepseek"`` etc. work in config and through ``get_dialect``, as data on
top of the OpenAI dialect."""

from __future__ import annotations

import pytest

from keyrelay.config import ConfigError, parse_settings
from keyrelay.core.model import Outcome
from keyrelay.providers import get_dialect
from keyrelay.providers.openai import RULES, OpenAIDialect
from keyrelay.providers.presets import PRESETS

NAMES = ["deepseek", "openrouter", "groq", "mistral", "xai", "moonshot", "zhipu", "siliconflow", "dashscope",
         "together", "fireworks", "cerebras", "volcengine", "litellm", "openai"]


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_is_a_provider_speaking_openai(name: str) -> None:
    d = get_dialect(name)
    assert d.name == name
    assert isinstance(d, OpenAIDialect)
    assert d.auth_headers("k-1") == {"Authorization": "Bearer k-1"}
    # its own rows, then the shared table itself (not a copy of it)
    own = PRESETS[name].rules
    table = d.rules or RULES  # type: ignore[attr-defined]  # the OpenAI dialect itself: None = RULES
    assert table[: len(own)] == own and table[len(own):] == RULES


@pytest.mark.parametrize("name", NAMES)
def test_a_preset_pool_gets_the_providers_base_url(name: str) -> None:
    settings = parse_settings({"pools": [{"name": "p", "provider": name}]}, {})
    assert settings.pools[0].base_url == PRESETS[name].base_url.rstrip("/")


def test_a_configured_base_url_wins_over_the_presets() -> None:
    settings = parse_settings({"pools": [{"name": "p", "provider": "litellm", "base_url": "http://10.0.0.5:4000/v1"}]}, {})
    assert settings.pools[0].base_url == "http://10.0.0.5:4000/v1"


@pytest.mark.parametrize(("name", "api"), [("deepseek", "deepseek"), ("openrouter", "openrouter"),
                                           ("siliconflow", "siliconflow"), ("moonshot", "moonshot")])
def test_a_preset_with_a_balance_endpoint_needs_no_balance_api(name: str, api: str) -> None:
    raw = {"pools": [{"name": "p", "provider": name, "checker": {"enabled": True, "probes": ["models", "balance"]}}]}
    assert parse_settings(raw, {}).pools[0].checker.balance_api == api


def test_a_preset_without_a_balance_endpoint_refuses_the_balance_probe() -> None:
    raw = {"pools": [{"name": "p", "provider": "groq", "checker": {"probes": ["balance"]}}]}
    with pytest.raises(ConfigError, match="balance_api"):
        parse_settings(raw, {})


def test_an_unknown_provider_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"pools\[0\]\.provider: unknown provider 'deepseak' \(known: .*deepseek"):
        parse_settings({"pools": [{"name": "p", "provider": "deepseak"}]}, {})


def test_a_presets_own_rows_decide_before_the_shared_table() -> None:
    # an empty 401 is Mistral's documented bad-key answer, and unknown from anyone else
    body = b""
    assert get_dialect("mistral").classify(401, {}, body, 0.0).outcome is Outcome.INVALID_KEY
    held = get_dialect("groq").classify(401, {}, body, 0.0)
    assert (held.outcome, held.reason) == (Outcome.RATE_LIMITED, "unverified_auth_failure")
