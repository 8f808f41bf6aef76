"""The Azure OpenAI dialect: ``api-key`` both ways, string error codes, Azure's own 403s."""

from __future__ import annotations

import pytest
from fixtures.azure_errors import AZURE_FIXTURES
from fixtures.openai_errors import Fixture

from keyrelay.providers import get_dialect
from keyrelay.providers.azure import AzureDialect

NOW = 1_750_000_000.0
dialect = AzureDialect()


@pytest.mark.parametrize("fx", AZURE_FIXTURES, ids=[f.name for f in AZURE_FIXTURES])
def test_fixture_is_classified_as_expected(fx: Fixture) -> None:
    verdict = dialect.classify(fx.status, fx.headers, fx.body, NOW)
    assert verdict.outcome is fx.expected_outcome, (fx.source, verdict)
    if fx.expected_retry_after is not None:
        assert verdict.retry_after == pytest.approx(fx.expected_retry_after)
    assert verdict.reason


def test_get_dialect_knows_azure() -> None:
    assert isinstance(get_dialect("azure"), AzureDialect)


def test_token_in_api_key_or_bearer_and_upstream_api_key() -> None:
    assert dialect.client_token({"api-key": "kr-1"}, "") == "kr-1"
    assert dialect.client_token({"Authorization": "Bearer kr-2"}, "") == "kr-2"
    assert dialect.auth_headers("abc123") == {"api-key": "abc123"}


def test_models_probe_on_a_resource_endpoint() -> None:
    url, headers = dialect.models_probe("https://res.openai.azure.com/", "k")
    assert url == "https://res.openai.azure.com/openai/models?api-version=2024-10-21"
    assert headers == {"api-key": "k"}
    assert dialect.models_probe("https://res.openai.azure.com/openai/v1", "k")[0] == "https://res.openai.azure.com/openai/v1/models"


def test_azure_needs_a_base_url() -> None:
    assert dialect.default_base_url == ""
