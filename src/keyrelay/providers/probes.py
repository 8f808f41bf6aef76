"""Probes: pure adapters that ask an upstream what it thinks of one key.

A probe is a *flow*, driven like ``httpx``'s auth flows: a generator that yields the
:class:`ProbeRequest` to send, receives the :class:`ProbeResponse`, and returns a
:class:`~keyrelay.core.machine.ProbeResult`. The checker (``keyrelay.runtime.checker``) does the I/O;
nothing here touches the network, and every flow can be tested by feeding it answers. The
shared types and answer readers are in :mod:`keyrelay.providers.probe_base`.

Probes:

``billing``
    The seed's check, for one-api / new-api style resellers: ``GET {base}/dashboard/billing/
    subscription`` (``hard_limit_usd``, ``access_until``), then ``GET {base}/dashboard/billing/
    usage?start_date=&end_date=`` over the last 99 days to tomorrow (``total_usage`` in cents).
    Expired → invalid ("expired"); ``hard_limit_usd`` ≤ 0 or usage ≥ hard limit → exhausted.
    Traps handled: ``access_until = 0`` never expires; the reseller's ``total_usage`` is
    lifetime (the dates are ignored, which the comparison with ``hard_limit_usd = remain +
    used`` expects); errors arrive as HTTP 200 with ``{"error": …}``; a server without the
    endpoint answers 404 or 200 with something else. Whatever cannot be read is *unknown* —
    never a balance of 0 (new-api #1641). HTTP errors are unknown too: a key's validity is the
    ``models`` probe's business (OpenAI answers these endpoints with an error for every API key).
``models``
    ``GET {base}/models``: 401 → invalid, 2xx → ok (valid; says nothing about money), a 429
    ``insufficient_quota`` → exhausted. A 403 is *unknown*: OpenAI's restricted keys may lack the
    ``model.read`` scope yet serve chat.
``balance``
    A provider's balance endpoint, relative to ``balance_base_url`` (default: the pool's
    ``base_url`` without a trailing ``/v1``): DeepSeek ``/user/balance``, OpenRouter
    ``/v1/key`` (per-key ``limit_remaining``, ``limit_reset``, ``expires_at``), SiliconFlow
    ``/v1/user/info``, Moonshot ``/v1/users/me/balance``. A balance at or below the threshold →
    exhausted; 401 → invalid. In :mod:`keyrelay.providers.balance`.
``completion``
    A one-token chat completion, classified by the pool's dialect: insufficient quota →
    exhausted, invalid key → invalid, ok → ok (the key can pay). Costs a token per probe: opt-in
    for every key; for exhausted keys the checker adds it by default where no balance endpoint
    exists (``exhausted_probe``, :mod:`keyrelay.providers.money`).
"""

from __future__ import annotations

import datetime as _dt

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.model import Outcome
from keyrelay.core.policy import CheckerPolicy
from keyrelay.providers.balance import BALANCE_PATHS, BalanceProbe, balance_base_url
from keyrelay.providers.base import Dialect
from keyrelay.providers.probe_base import (
    Probe,
    ProbeFlow,
    ProbeRequest,
    ProbeResponse,
    auth_failure,
    error_in,
    http_unknown,
    json_doc,
    listed,
    number,
    quota_answer,
    unknown,
)

__all__ = [
    "BALANCE_PATHS",
    "BalanceProbe",
    "BillingProbe",
    "CompletionProbe",
    "ModelsProbe",
    "Probe",
    "ProbeFlow",
    "ProbeRequest",
    "ProbeResponse",
    "balance_base_url",
    "build_probes",
]

OK, EXHAUSTED, INVALID, UNKNOWN = ProbeKind.OK, ProbeKind.EXHAUSTED, ProbeKind.INVALID, ProbeKind.UNKNOWN
DAY = 86400.0


# -- billing (the seed's probe) -----------------------------------------------------------------


def _day(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d")


class BillingProbe:
    """``/dashboard/billing/subscription`` then ``/usage`` (see the module docstring)."""

    name = "billing"

    def __init__(self, base_url: str, dialect: Dialect) -> None:
        self.base = base_url.rstrip("/")
        self.dialect = dialect

    def flow(self, secret: str, now: float) -> ProbeFlow:
        headers = self.dialect.auth_headers(secret)
        resp = yield ProbeRequest("GET", f"{self.base}/dashboard/billing/subscription", headers)
        first = self.read_subscription(resp, now)
        if isinstance(first, ProbeResult):
            return first
        hard = first
        query = f"start_date={_day(now - 99 * DAY)}&end_date={_day(now + DAY)}"
        resp = yield ProbeRequest("GET", f"{self.base}/dashboard/billing/usage?{query}", headers)
        return self.read_usage(resp, hard)

    def read_subscription(self, resp: ProbeResponse, now: float) -> ProbeResult | float:
        """A final result, or the hard limit (USD) when the usage must be read next."""
        if not 200 <= resp.status < 300:
            return http_unknown(self.name, resp)
        doc = json_doc(resp.body)
        if error_in(doc) is not None:
            return unknown(self.name, "error in a 200 answer", resp, doc)
        if not isinstance(doc, dict) or "hard_limit_usd" not in doc:
            return unknown(self.name, "not a billing answer", resp, doc)
        hard = number(doc.get("hard_limit_usd"))
        access_until = doc.get("access_until")
        until = 0.0 if access_until in (None, "") else number(access_until)
        if hard is None or until is None:
            return unknown(self.name, "unreadable billing answer", resp, doc)
        if until > 0 and until < now:  # 0 = never expires (one-api / new-api)
            return ProbeResult(INVALID, self.name, "expired", resp.status, message=f"access until {_day(until)}")
        if hard <= 0:
            return ProbeResult(EXHAUSTED, self.name, "no allowance", resp.status, balance=0.0, currency="USD",
                               funds=True, message=f"hard limit {hard:g} USD")
        return hard

    def read_usage(self, resp: ProbeResponse, hard: float) -> ProbeResult:
        if not 200 <= resp.status < 300:
            return http_unknown(self.name, resp)
        doc = json_doc(resp.body)
        if error_in(doc) is not None:
            return unknown(self.name, "error in a 200 answer", resp, doc)
        used_cents = number(doc.get("total_usage")) if isinstance(doc, dict) else None
        if used_cents is None or used_cents < 0:
            return unknown(self.name, "not a usage answer", resp, doc)
        used = used_cents / 100
        left = round(max(0.0, hard - used), 6)
        evidence = f"used {used:g} of {hard:g} USD"
        if used >= hard:
            return ProbeResult(EXHAUSTED, self.name, "usage reached the hard limit", resp.status, balance=left,
                               currency="USD", funds=True, message=evidence)
        return ProbeResult(OK, self.name, "balance left", resp.status, balance=left, currency="USD", funds=True,
                           message=evidence)


# -- models -------------------------------------------------------------------------------------


class ModelsProbe:
    """``GET {base}/models`` (the dialect's own: Anthropic ``/v1/models`` with ``anthropic-version``,
    Gemini ``/v1beta/models``, Azure ``/openai/models``): proves a key valid, never that it can pay."""

    name = "models"

    def __init__(self, base_url: str, dialect: Dialect) -> None:
        self.base = base_url.rstrip("/")
        self.dialect = dialect

    def flow(self, secret: str, now: float) -> ProbeFlow:
        url, headers = self.dialect.models_probe(self.base, secret)  # each dialect's own list of models
        resp = yield ProbeRequest("GET", url, headers)
        return self.read(resp, now)

    def read(self, resp: ProbeResponse, now: float) -> ProbeResult:
        invalid = auth_failure(self.name, self.dialect, resp, now)
        if invalid is not None:
            return invalid
        if resp.status == 400:  # Gemini answers a bad key with 400 API_KEY_INVALID
            v = self.dialect.classify(resp.status, resp.headers, resp.body, now)
            if v.outcome is Outcome.INVALID_KEY:
                return ProbeResult(INVALID, self.name, v.reason or "invalid key", resp.status, v.code)
        if 200 <= resp.status < 300:
            v = self.dialect.classify(resp.status, resp.headers, resp.body, now)
            if v.outcome is Outcome.OK:
                if not listed(resp, "data", "models"):  # a captive portal's page, a wrong base URL
                    return unknown(self.name, "not a model list", resp)
                return ProbeResult(OK, self.name, "key valid", resp.status)
            if v.outcome is Outcome.INVALID_KEY:
                return ProbeResult(INVALID, self.name, v.reason or "invalid key", resp.status, v.code)
            return unknown(self.name, "error in a 200 answer", resp)
        return quota_answer(self.name, self.dialect, resp, now) or http_unknown(self.name, resp)


# -- completion ---------------------------------------------------------------------------------


class CompletionProbe:
    """A one-token request to ``model`` in the dialect's own API (opt-in: it costs a token per
    probe): a chat completion, Anthropic's Messages, Gemini's ``:generateContent``."""

    name = "completion"

    def __init__(self, base_url: str, dialect: Dialect, model: str) -> None:
        self.base = base_url.rstrip("/")
        self.dialect = dialect
        self.request = dialect.one_token(self.base, model)
        self.body = self.request.body

    def flow(self, secret: str, now: float) -> ProbeFlow:
        req = self.request
        headers = {**self.dialect.auth_headers(secret), **req.headers}
        resp = yield ProbeRequest("POST", req.url, headers, req.body)
        return self.read(resp, now)

    def read(self, resp: ProbeResponse, now: float) -> ProbeResult:
        v = self.dialect.classify(resp.status, resp.headers, resp.body, now)
        if v.outcome is Outcome.OK:
            if not listed(resp, self.request.answer_field):  # a 2xx that is not an answer says nothing
                return unknown(self.name, "not a completion", resp)
            return ProbeResult(OK, self.name, "completion ok", resp.status, funds=True)
        if v.outcome is Outcome.QUOTA_EXHAUSTED:
            return ProbeResult(EXHAUSTED, self.name, v.reason or "quota exhausted", resp.status, v.code, funds=True)
        if v.outcome is Outcome.INVALID_KEY:
            return ProbeResult(INVALID, self.name, v.reason or "invalid key", resp.status, v.code)
        return ProbeResult(UNKNOWN, self.name, v.reason or v.outcome.value, resp.status, v.code)


# -- a pool's probes ----------------------------------------------------------------------------


def build_probes(
    policy: CheckerPolicy, base_url: str, dialect: Dialect, names: tuple[str, ...] | None = None
) -> tuple[Probe, ...]:
    """The probes of a pool, in the configured order (or ``names``, e.g. from ``keyrelay check --probe``)."""
    out: list[Probe] = []
    for name in names if names is not None else policy.probes:
        if name == "billing":
            out.append(BillingProbe(base_url, dialect))
        elif name == "models":
            out.append(ModelsProbe(base_url, dialect))
        elif name == "balance":
            if not policy.balance_api:
                raise ValueError("the balance probe needs [pools.checker] balance_api")
            out.append(BalanceProbe(policy.balance_api, balance_base_url(policy, base_url), dialect,
                                    policy.balance_threshold))
        elif name == "completion":
            if not policy.completion_model:
                raise ValueError("the completion probe needs [pools.checker] completion_model")
            out.append(CompletionProbe(base_url, dialect, policy.completion_model))
        else:
            raise ValueError(f"unknown probe {name!r}")
    return tuple(out)
