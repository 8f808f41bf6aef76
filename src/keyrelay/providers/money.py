"""Which probe can tell that an exhausted key has money again, per upstream.

The ``models`` probe proves a key valid, never that it can pay: OpenAI lists models for a key
whose credit is spent. So for *exhausted* keys the checker adds, by default
(``[pools.checker] exhausted_probe = "auto"``), a probe that speaks to money:

1. the provider's **balance** endpoint where it has one (``balance_api``, or known from the
   pool's host: DeepSeek, OpenRouter, SiliconFlow, Moonshot) — reads the balance, costs nothing;
2. else the **billing** probe when the pool lists it (one-api / new-api resellers);
3. else a **1-token request** in the dialect's own API (a chat completion; Azure's on the v1 API,
   ``{resource}/openai/v1/chat/completions`` with the deployment as ``model``; Anthropic's Messages
   with ``max_tokens: 1``; Gemini's ``:generateContent`` with ``maxOutputTokens: 1``) on a cheap
   model (``completion_model``, else the host's default below, else the dialect's) — the only thing OpenAI, Anthropic, Gemini or Groq answer differently once credit is
   back (200 against 429 ``insufficient_quota`` / 400 "credit balance is too low"); costs one
   token per exhausted key per recheck.

``exhausted_probe = "off"`` keeps the configured probes only; a probe name forces that probe.
Pure: no I/O.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from keyrelay.core.policy import CheckerPolicy
from keyrelay.providers.balance import BalanceProbe, balance_base_url
from keyrelay.providers.base import Dialect
from keyrelay.providers.probe_base import Probe, quota_answer
from keyrelay.providers.probes import BillingProbe, CompletionProbe

__all__ = ["BALANCE_HOSTS", "CHEAP_MODELS", "DEFAULT_CHEAP_MODEL", "money_probe", "quota_answer"]

#: hosts whose provider has a balance endpoint (``providers/balance.py``)
BALANCE_HOSTS = {
    "api.deepseek.com": "deepseek",
    "openrouter.ai": "openrouter",
    "api.siliconflow.cn": "siliconflow",
    "api.siliconflow.com": "siliconflow",
    "api.moonshot.cn": "moonshot",
    "api.moonshot.ai": "moonshot",
}
#: a cheap chat model per host, for the 1-token completion probe
CHEAP_MODELS = {
    "api.openai.com": "gpt-4o-mini",
    "api.anthropic.com": "claude-haiku-4-5",  # the dialects' cheap_model say why these two
    "generativelanguage.googleapis.com": "gemini-3.1-flash-lite",
    "api.groq.com": "llama-3.1-8b-instant",
    "api.mistral.ai": "mistral-small-latest",
    "api.together.xyz": "meta-llama/Llama-3.2-3B-Instruct-Turbo",
    "api.x.ai": "grok-3-mini",
}
#: any other host of the OpenAI dialect (resellers and proxies mostly serve OpenAI's names);
#: other dialects name their own (``Dialect.cheap_model``)
DEFAULT_CHEAP_MODEL = "gpt-4o-mini"


def _host(base_url: str) -> str:
    try:
        return (urlsplit(base_url).hostname or "").lower()
    except ValueError:
        return ""


def money_probe(
    policy: CheckerPolicy, base_url: str, dialect: Dialect, configured: tuple[Probe, ...]
) -> Probe | None:
    """The probe to add for exhausted keys (see the module docstring), or ``None`` when the
    configured probes can already see money, or the pool opted out."""
    choice = policy.exhausted_probe
    if choice == "off" or any(p.name in ("balance", "billing", "completion") for p in configured):
        return None
    host = _host(base_url)
    api = policy.balance_api or BALANCE_HOSTS.get(host, "")
    if choice in ("auto", "balance") and api:
        return BalanceProbe(api, balance_base_url(policy, base_url), dialect, policy.balance_threshold)
    if choice == "billing":
        return BillingProbe(base_url, dialect)
    if choice in ("auto", "completion"):
        model = policy.completion_model or CHEAP_MODELS.get(host) or dialect.cheap_model
        return CompletionProbe(base_url, dialect, model)
    return None

