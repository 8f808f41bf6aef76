"""Presets: OpenAI-compatible providers as data on top of the OpenAI dialect.

A preset names a provider (``provider = "deepseek"`` in a ``[[pools]]`` table) and gives its
default ``base_url``, its balance endpoint where it has one (``providers/balance.py``) and the
few rows of its own that the shared table (``openai.py`` + ``classify_rules.py``) does not
carry, put in front of it. The dialect is the OpenAI one: same auth, envelope, usage, streams.
Sources of each row are with its fixture in ``tests/fixtures/provider_errors.py``. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyrelay.providers.base import Rule
from keyrelay.providers.openai import RULES, OpenAIDialect

__all__ = ["PRESETS", "Preset", "PresetDialect"]

_F = frozenset


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    base_url: str
    #: the ``balance`` probe's api (``BALANCE_APIS``), "" when the provider has no balance endpoint
    balance_api: str = ""
    #: rows of this provider's own, tried before the shared table
    rules: tuple[Rule, ...] = ()
    #: what the README says a client uses
    note: str = ""


_PRESETS = (
    Preset("openai", "https://api.openai.com/v1"),
    Preset("deepseek", "https://api.deepseek.com/v1", "deepseek"),
    Preset(
        "openrouter",
        "https://openrouter.ai/api/v1",
        "openrouter",
        # a moderation refusal names what it flagged in metadata (403)
        (Rule("client_error", "content refused", _F({403}), message=("flagged", "moderation")),),
    ),
    Preset("groq", "https://api.groq.com/openai/v1"),
    Preset(
        "mistral",
        "https://api.mistral.ai/v1",
        # Mistral answers a bad key with a bare {"message":"Unauthorized"} (or no body at all)
        rules=(Rule("invalid_key", "unauthorized", _F({401})),),
    ),
    Preset("xai", "https://api.x.ai/v1"),
    Preset("moonshot", "https://api.moonshot.cn/v1", "moonshot"),
    Preset("zhipu", "https://open.bigmodel.cn/api/paas/v4", note="not /v1: point clients at http://gateway/<pool>"),
    Preset("siliconflow", "https://api.siliconflow.cn/v1", "siliconflow"),
    Preset("dashscope", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
    Preset("together", "https://api.together.xyz/v1"),
    Preset("fireworks", "https://api.fireworks.ai/inference/v1"),
    Preset("cerebras", "https://api.cerebras.ai/v1"),
    Preset(
        "volcengine",
        "https://ark.cn-beijing.volces.com/api/v3",
        # a user-set inference cap ("Safe Experience Mode") stops the model until raised
        rules=(Rule("quota_exhausted", "spend limit reached", _F({400, 403, 429}), codes=_F({"setlimitexceeded"})),),
        note="not /v1: point clients at http://gateway/<pool>",
    ),
    Preset(
        "litellm",
        "http://localhost:4000/v1",
        # a LiteLLM proxy refuses an unknown or expired virtual key as auth_error
        rules=(Rule("invalid_key", "invalid api key", _F({401}), types=_F({"auth_error"})),),
        note="a LiteLLM proxy (default port 4000): set base_url to yours",
    ),
)

#: every preset, by provider name
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


class PresetDialect(OpenAIDialect):
    """The OpenAI dialect with a preset's own rows in front of the shared table."""

    def __init__(self, preset: Preset) -> None:
        self.preset = preset
        self.name = preset.name
        self.default_base_url = preset.base_url
        self.rules = preset.rules + RULES if preset.rules else RULES
