"""Provider dialects: pure adapters that speak one upstream API's language."""

from __future__ import annotations

from keyrelay.providers.anthropic import AnthropicDialect
from keyrelay.providers.azure import AzureDialect
from keyrelay.providers.base import Dialect, Usage
from keyrelay.providers.gemini import GeminiDialect
from keyrelay.providers.openai import OpenAIDialect

__all__ = ["DIALECTS", "Dialect", "Usage", "default_base_url", "get_dialect"]

DIALECTS: dict[str, type] = {
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
    "azure": AzureDialect,
    "gemini": GeminiDialect,
}


def get_dialect(name: str) -> Dialect:
    try:
        cls = DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(sorted(DIALECTS))})") from None
    dialect: Dialect = cls()
    return dialect


def default_base_url(name: str) -> str:
    """The upstream a pool of provider ``name`` uses when its config names none (``""``: it must)."""
    return str(getattr(DIALECTS[name], "default_base_url", ""))
