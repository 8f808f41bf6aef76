"""The Azure OpenAI dialect: OpenAI's API and envelope under ``/openai/deployments/{deployment}/…
?api-version=…`` and ``/openai/v1/…``, with ``api-key`` auth (what ``openai.AzureOpenAI`` sends).

Azure's error ``code`` is a string: the HTTP status again (``"429"``, ``"401"``) or a name
(``"DeploymentNotFound"``, ``"content_filter"``, ``"AuthenticationTypeDisabled"``); the OpenAI
table reads the status it stands for. A few answers are Azure's own and come first
(:data:`AZURE_RULES`): network rules of the resource that refuse the gateway's address are the
egress's fault, a resource with key authentication turned off refuses every key alike.
Sources: PROVIDER-ERRORS.md §2, ``tests/fixtures/azure_errors.py``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from keyrelay.providers.base import OneToken, Rule, chat_one_token
from keyrelay.providers.openai import RULES as OPENAI_RULES
from keyrelay.providers.openai import OpenAIDialect

__all__ = ["AZURE_RULES", "AzureDialect"]

_F = frozenset

AZURE_RULES: tuple[Rule, ...] = (
    # the resource's firewall / private endpoint refuses our address: every key fails alike
    Rule(
        "upstream_fault",
        "resource network rules refuse the gateway",
        _F({403}),
        message=("virtual network", "firewall rules", "private endpoint", "public access is disabled"),
    ),
    # key authentication turned off on the resource: every key of it fails alike, none is bad
    Rule("upstream_fault", "key authentication disabled on the resource", _F({403}), codes=_F({"AuthenticationTypeDisabled"})),
    Rule("invalid_key", "invalid key or wrong endpoint", _F({401})),
)

#: The API version the checker's models probe asks for (a GA version listing models).
PROBE_API_VERSION = "2024-10-21"


class AzureDialect(OpenAIDialect):
    """Azure OpenAI (and Azure AI Foundry's OpenAI endpoints)."""

    name = "azure"
    auth_header_names = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
    forward_headers: frozenset[str] = frozenset({"x-ms-client-request-id"})
    token_hint = "Send 'api-key: <token>' (or 'Authorization: Bearer <token>')"
    default_base_url = ""  # each key belongs to one resource: https://<resource>.openai.azure.com
    api_roots: tuple[str, ...] = ("/openai/",)
    rules: tuple[Rule, ...] = AZURE_RULES + OPENAI_RULES

    def client_token(self, headers: Mapping[str, str], query_string: str) -> str:
        token = headers.get("api-key")
        if token:
            return token.strip()
        return super().client_token(headers, query_string)

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"api-key": secret}

    def models_probe(self, base_url: str, secret: str) -> tuple[str, dict[str, str]]:
        base = base_url.rstrip("/")
        if base.endswith("/openai/v1"):
            return f"{base}/models", self.auth_headers(secret)
        if base.endswith("/openai"):
            return f"{base}/models?api-version={PROBE_API_VERSION}", self.auth_headers(secret)
        return f"{base}/openai/models?api-version={PROBE_API_VERSION}", self.auth_headers(secret)

    def one_token(self, base_url: str, model: str) -> OneToken:
        """A 1-token chat completion on the resource's v1 API (``POST {resource}/openai/v1/chat/
        completions``, ``model`` = the deployment name, no ``api-version``): Azure serves no
        ``{resource}/chat/completions``. A base already ending in ``/openai/v1`` is used as is; a
        base naming a deployment (``…/openai/deployments/{name}``) is asked there, with
        ``api-version``."""
        base = base_url.rstrip("/")
        if "/openai/deployments/" in base:
            req = chat_one_token(base, model)
            return OneToken(f"{req.url}?api-version={PROBE_API_VERSION}", req.headers, req.body, req.answer_field)
        if base.endswith("/openai/v1"):
            return chat_one_token(base, model)
        root = base.removesuffix("/openai")
        return chat_one_token(f"{root}/openai/v1", model)
