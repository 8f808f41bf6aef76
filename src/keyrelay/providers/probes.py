"""Probes: pure adapters that ask an upstream what it thinks of one key.

A probe is a *flow*, driven like ``httpx``'s auth flows: a generator that yields the
:class:`ProbeRequest` to send, receives the :class:`ProbeResponse`, and returns a
:class:`~keyrelay.core.machine.ProbeResult`. The checker (``keyrelay.checker``) does the I/O;
nothing here touches the network, and every flow can be tested by feeding it answers.

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
    ``GET {base}/models``: 401 → invalid, 2xx → ok (valid; says nothing about money). A 403 is
    *unknown*: OpenAI's restricted keys may lack the ``model.read`` scope yet serve chat.
``balance``
    A provider's balance endpoint, relative to ``balance_base_url`` (default: the pool's
    ``base_url`` without a trailing ``/v1``): DeepSeek ``/user/balance``, OpenRouter
    ``/v1/key`` (per-key ``limit_remaining``, ``limit_reset``, ``expires_at``), SiliconFlow
    ``/v1/user/info``, Moonshot ``/v1/users/me/balance``. A balance at or below the threshold →
    exhausted; 401 → invalid.
``completion``
    A one-token chat completion, classified by the pool's dialect: insufficient quota →
    exhausted, invalid key → invalid, ok → ok. Costs a token per probe: opt-in.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome
from keyrelay.core.policy import CheckerPolicy, next_reset
from keyrelay.providers.base import Dialect

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


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProbeResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


#: yields requests, receives their responses, returns the result
ProbeFlow = Generator[ProbeRequest, ProbeResponse, ProbeResult]


class Probe(Protocol):
    name: str

    def flow(self, secret: str, now: float) -> ProbeFlow: ...


# -- reading answers --------------------------------------------------------------------------


def _doc(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _num(v: Any) -> float | None:
    """A finite number from a JSON number or numeric string (DeepSeek and SiliconFlow send
    strings); ``None`` for anything else, booleans included."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def _error_in(doc: Any) -> Mapping[str, Any] | None:
    """The ``error`` object of a decoded answer (a string error becomes its message)."""
    if not isinstance(doc, dict) or not doc.get("error"):
        return None
    err = doc["error"]
    return err if isinstance(err, dict) else {"message": str(err)}


def _unknown(probe: str, reason: str, resp: ProbeResponse | None = None, doc: Any = None) -> ProbeResult:
    status = resp.status if resp is not None else 0
    err = _error_in(doc if doc is not None or resp is None else _doc(resp.body))
    code = message = None
    if err is not None:
        raw = err.get("code") or err.get("type")
        code = str(raw) if raw not in (None, "") else None
        message = redact(str(err.get("message") or ""))[:160] or None
    return ProbeResult(UNKNOWN, probe, reason, status, code, message=message or "")


def _http_unknown(probe: str, resp: ProbeResponse) -> ProbeResult:
    if resp.status == 404:
        return _unknown(probe, "endpoint not found", resp)
    if resp.status >= 500:
        return _unknown(probe, "upstream error", resp)
    return _unknown(probe, "unexpected answer", resp)


def _auth_failure(probe: str, dialect: Dialect, resp: ProbeResponse, now: float) -> ProbeResult | None:
    """An invalid-key result for a 401 the dialect reads as such (reason from its table)."""
    if resp.status != 401:
        return None
    v = dialect.classify(resp.status, resp.headers, resp.body, now)
    if v.outcome is not Outcome.INVALID_KEY:
        return None
    return ProbeResult(INVALID, probe, v.reason or "invalid key", resp.status, v.code)


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
            return _http_unknown(self.name, resp)
        doc = _doc(resp.body)
        if _error_in(doc) is not None:
            return _unknown(self.name, "error in a 200 answer", resp, doc)
        if not isinstance(doc, dict) or "hard_limit_usd" not in doc:
            return _unknown(self.name, "not a billing answer", resp, doc)
        hard = _num(doc.get("hard_limit_usd"))
        access_until = doc.get("access_until")
        until = 0.0 if access_until in (None, "") else _num(access_until)
        if hard is None or until is None:
            return _unknown(self.name, "unreadable billing answer", resp, doc)
        if until > 0 and until < now:  # 0 = never expires (one-api / new-api)
            return ProbeResult(INVALID, self.name, "expired", resp.status, message=f"access until {_day(until)}")
        if hard <= 0:
            return ProbeResult(EXHAUSTED, self.name, "no allowance", resp.status, balance=0.0, currency="USD",
                               funds=True, message=f"hard limit {hard:g} USD")
        return hard

    def read_usage(self, resp: ProbeResponse, hard: float) -> ProbeResult:
        if not 200 <= resp.status < 300:
            return _http_unknown(self.name, resp)
        doc = _doc(resp.body)
        if _error_in(doc) is not None:
            return _unknown(self.name, "error in a 200 answer", resp, doc)
        used_cents = _num(doc.get("total_usage")) if isinstance(doc, dict) else None
        if used_cents is None or used_cents < 0:
            return _unknown(self.name, "not a usage answer", resp, doc)
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
    """``GET {base}/models``: proves a key valid, never that it can pay."""

    name = "models"

    def __init__(self, base_url: str, dialect: Dialect) -> None:
        self.base = base_url.rstrip("/")
        self.dialect = dialect

    def flow(self, secret: str, now: float) -> ProbeFlow:
        resp = yield ProbeRequest("GET", f"{self.base}/models", self.dialect.auth_headers(secret))
        return self.read(resp, now)

    def read(self, resp: ProbeResponse, now: float) -> ProbeResult:
        invalid = _auth_failure(self.name, self.dialect, resp, now)
        if invalid is not None:
            return invalid
        if 200 <= resp.status < 300:
            v = self.dialect.classify(resp.status, resp.headers, resp.body, now)
            if v.outcome is Outcome.OK:
                return ProbeResult(OK, self.name, "key valid", resp.status)
            if v.outcome is Outcome.INVALID_KEY:
                return ProbeResult(INVALID, self.name, v.reason or "invalid key", resp.status, v.code)
            return _unknown(self.name, "error in a 200 answer", resp)
        return _http_unknown(self.name, resp)


# -- provider balances --------------------------------------------------------------------------

#: path of each balance endpoint, relative to ``balance_base_url``
BALANCE_PATHS: dict[str, str] = {
    "deepseek": "/user/balance",
    "openrouter": "/v1/key",
    "siliconflow": "/v1/user/info",
    "moonshot": "/v1/users/me/balance",
}


def balance_base_url(policy: CheckerPolicy, base_url: str) -> str:
    """``balance_base_url`` if set, else the pool's ``base_url`` without a trailing ``/v1``:
    ``https://openrouter.ai/api/v1`` → ``https://openrouter.ai/api`` (+ ``/v1/key``),
    ``https://api.deepseek.com/v1`` → ``https://api.deepseek.com`` (+ ``/user/balance``)."""
    if policy.balance_base_url:
        return policy.balance_base_url.rstrip("/")
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


def _iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = _dt.datetime.fromisoformat(value)  # Python ≥ 3.11 reads a trailing "Z"
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


class BalanceProbe:
    """One provider's balance endpoint (``deepseek``, ``openrouter``, ``siliconflow``, ``moonshot``)."""

    name = "balance"

    def __init__(self, api: str, base_url: str, dialect: Dialect, threshold: float = 0.0) -> None:
        if api not in BALANCE_PATHS:
            raise ValueError(f"unknown balance api {api!r} (choose from {', '.join(BALANCE_PATHS)})")
        self.api = api
        self.url = base_url.rstrip("/") + BALANCE_PATHS[api]
        self.dialect = dialect
        self.threshold = threshold

    def flow(self, secret: str, now: float) -> ProbeFlow:
        resp = yield ProbeRequest("GET", self.url, self.dialect.auth_headers(secret))
        return self.read(resp, now)

    def read(self, resp: ProbeResponse, now: float) -> ProbeResult:
        invalid = _auth_failure(self.name, self.dialect, resp, now)
        if invalid is not None:
            return invalid
        if not 200 <= resp.status < 300:
            return _http_unknown(self.name, resp)
        doc = _doc(resp.body)
        if _error_in(doc) is not None:
            return _unknown(self.name, "error in a 200 answer", resp, doc)
        if not isinstance(doc, dict):
            return _unknown(self.name, "not a balance answer", resp, doc)
        reader = getattr(self, f"_{self.api}")
        result: ProbeResult = reader(doc, resp.status, now)
        return result

    def _judge(self, status: int, balance: float, currency: str, reset_at: float = 0.0,
               available: bool = True) -> ProbeResult:
        if not available:
            return ProbeResult(EXHAUSTED, self.name, "balance not available", status, balance=balance,
                               currency=currency, funds=True, reset_at=reset_at)
        if balance <= self.threshold:
            return ProbeResult(EXHAUSTED, self.name, f"balance at or below {self.threshold:g}", status,
                               balance=balance, currency=currency, funds=True, reset_at=reset_at)
        return ProbeResult(OK, self.name, "balance left", status, balance=balance, currency=currency, funds=True)

    def _deepseek(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        infos = doc.get("balance_infos")
        available = doc.get("is_available")
        rows_raw = [
            (str(i.get("currency") or ""), _num(i.get("total_balance")))
            for i in infos if isinstance(i, dict)
        ] if isinstance(infos, list) else []
        rows = [(c, b) for c, b in rows_raw if b is not None]
        if not rows or not isinstance(available, bool):
            return _unknown(self.name, "not a DeepSeek balance answer", ProbeResponse(status))
        currency, balance = next(((c, b) for c, b in rows if c == "CNY"), rows[0])
        if balance <= self.threshold:  # another currency may still hold money
            currency, balance = max(rows, key=lambda r: r[1])
        return self._judge(status, balance, currency, available=available)

    def _openrouter(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        data = doc.get("data")
        if not isinstance(data, dict) or "limit_remaining" not in data:
            return _unknown(self.name, "not an OpenRouter key answer", ProbeResponse(status))
        expires = _iso(data.get("expires_at"))
        if expires is not None and expires <= now:
            return ProbeResult(INVALID, self.name, "expired", status, message=f"expired at {data.get('expires_at')}")
        remaining = data.get("limit_remaining")
        if remaining is None:  # no per-key limit: the account's credits decide, unseen from here
            return ProbeResult(OK, self.name, "no key limit", status)
        left = _num(remaining)
        if left is None:
            return _unknown(self.name, "unreadable limit_remaining", ProbeResponse(status))
        period = data.get("limit_reset")
        reset = next_reset(period, now) if period in ("daily", "weekly", "monthly") else None
        return self._judge(status, left, "USD", reset_at=reset or 0.0)

    def _coded(self, doc: Mapping[str, Any], status: int, ok_code: int, field: str, what: str) -> ProbeResult:
        """SiliconFlow and Moonshot: ``{"code": …, "data": {field: balance}}`` in CNY."""
        code, data = doc.get("code"), doc.get("data")
        if code is not None and code != ok_code:
            return ProbeResult(UNKNOWN, self.name, "error in a 200 answer", status, str(code),
                               message=redact(str(doc.get("message") or ""))[:160])
        balance = _num(data.get(field)) if isinstance(data, dict) else None
        if balance is None:
            return _unknown(self.name, f"not a {what} balance answer", ProbeResponse(status))
        return self._judge(status, balance, "CNY")

    def _siliconflow(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        return self._coded(doc, status, 20000, "totalBalance", "SiliconFlow")

    def _moonshot(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        return self._coded(doc, status, 0, "available_balance", "Moonshot")


# -- completion ---------------------------------------------------------------------------------


class CompletionProbe:
    """A one-token chat completion to ``model`` (opt-in: it costs a token per probe)."""

    name = "completion"

    def __init__(self, base_url: str, dialect: Dialect, model: str) -> None:
        self.base = base_url.rstrip("/")
        self.dialect = dialect
        self.body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})

    def flow(self, secret: str, now: float) -> ProbeFlow:
        headers = {**self.dialect.auth_headers(secret), "Content-Type": "application/json"}
        resp = yield ProbeRequest("POST", f"{self.base}/chat/completions", headers, self.body)
        return self.read(resp, now)

    def read(self, resp: ProbeResponse, now: float) -> ProbeResult:
        v = self.dialect.classify(resp.status, resp.headers, resp.body, now)
        if v.outcome is Outcome.OK:
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
