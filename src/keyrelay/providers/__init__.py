"""Provider dialects: pure adapters that speak one upstream API's language."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from keyrelay.providers.anthropic import AnthropicDialect
from keyrelay.providers.azure import AzureDialect
from keyrelay.providers.base import Dialect, Usage
from keyrelay.providers.gemini import GeminiDialect
from keyrelay.providers.openai import OpenAIDialect
from keyrelay.providers.presets import PRESETS, PresetDialect

__all__ = ["DIALECTS", "Dialect", "Usage", "default_base_url", "get_dialect"]

DIALECTS: dict[str, Callable[[], Dialect]] = {
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
    "azure": AzureDialect,
    "gemini": GeminiDialect,
}
# OpenAI-compatible providers: data on top of the OpenAI dialect (presets.py)
DIALECTS.update({name: partial(PresetDialect, p) for name, p in PRESETS.items() if name not in DIALECTS})


def get_dialect(name: str) -> Dialect:
    try:
        cls = DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(sorted(DIALECTS))})") from None
    dialect: Dialect = cls()
    return dialect


def default_base_url(name: str) -> str:
    """The upstream a pool of provider ``name`` uses when its config names none (``""``: it must)."""
    if name in PRESETS:
        return PRESETS[name].base_url
    return str(getattr(DIALECTS[name], "default_base_url", ""))
