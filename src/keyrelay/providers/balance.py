"""Balance probes: a provider's own balance endpoint, read into a :class:`ProbeResult`.

The endpoint is relative to ``balance_base_url`` (default: the pool's ``base_url`` without a
trailing ``/v1``), one per provider:

``deepseek``
    ``/user/balance``: ``balance_infos`` (one row per currency, balances as strings) and
    ``is_available``. CNY is preferred; another currency may still hold money.
``openrouter``
    ``/v1/key``: the key's own ``limit_remaining`` (``null``: no per-key limit), its
    ``limit_reset`` period and ``expires_at``.
``siliconflow``
    ``/v1/user/info``: ``{"code": 20000, "data": {"totalBalance": …}}`` in CNY.
``moonshot``
    ``/v1/users/me/balance``: ``{"code": 0, "data": {"available_balance": …}}`` in CNY.

A balance at or below the threshold → exhausted; 401 → invalid; anything unreadable → unknown.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.masking import redact
from keyrelay.core.policy import CheckerPolicy, next_reset
from keyrelay.providers.base import Dialect
from keyrelay.providers.probe_base import (
    ProbeFlow,
    ProbeRequest,
    ProbeResponse,
    auth_failure,
    error_in,
    http_unknown,
    json_doc,
    number,
    unknown,
)

__all__ = ["BALANCE_PATHS", "BalanceProbe", "balance_base_url"]

OK, EXHAUSTED, INVALID, UNKNOWN = ProbeKind.OK, ProbeKind.EXHAUSTED, ProbeKind.INVALID, ProbeKind.UNKNOWN

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
        invalid = auth_failure(self.name, self.dialect, resp, now)
        if invalid is not None:
            return invalid
        if not 200 <= resp.status < 300:
            return http_unknown(self.name, resp)
        doc = json_doc(resp.body)
        if error_in(doc) is not None:
            return unknown(self.name, "error in a 200 answer", resp, doc)
        if not isinstance(doc, dict):
            return unknown(self.name, "not a balance answer", resp, doc)
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
            (str(i.get("currency") or ""), number(i.get("total_balance")))
            for i in infos if isinstance(i, dict)
        ] if isinstance(infos, list) else []
        rows = [(c, b) for c, b in rows_raw if b is not None]
        if not rows or not isinstance(available, bool):
            return unknown(self.name, "not a DeepSeek balance answer", ProbeResponse(status))
        currency, balance = next(((c, b) for c, b in rows if c == "CNY"), rows[0])
        if balance <= self.threshold:  # another currency may still hold money
            currency, balance = max(rows, key=lambda r: r[1])
        return self._judge(status, balance, currency, available=available)

    def _openrouter(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        data = doc.get("data")
        if not isinstance(data, dict) or "limit_remaining" not in data:
            return unknown(self.name, "not an OpenRouter key answer", ProbeResponse(status))
        expires = _iso(data.get("expires_at"))
        if expires is not None and expires <= now:
            return ProbeResult(INVALID, self.name, "expired", status, message=f"expired at {data.get('expires_at')}")
        remaining = data.get("limit_remaining")
        if remaining is None:  # no per-key limit: the account's credits decide, unseen from here
            return ProbeResult(OK, self.name, "no key limit", status)
        left = number(remaining)
        if left is None:
            return unknown(self.name, "unreadable limit_remaining", ProbeResponse(status))
        period = data.get("limit_reset")
        reset = next_reset(period, now) if period in ("daily", "weekly", "monthly") else None
        return self._judge(status, left, "USD", reset_at=reset or 0.0)

    def _coded(self, doc: Mapping[str, Any], status: int, ok_code: int, field: str, what: str) -> ProbeResult:
        """SiliconFlow and Moonshot: ``{"code": …, "data": {field: balance}}`` in CNY."""
        code, data = doc.get("code"), doc.get("data")
        if code is not None and code != ok_code:
            return ProbeResult(UNKNOWN, self.name, "error in a 200 answer", status, str(code),
                               message=redact(str(doc.get("message") or ""))[:160])
        balance = number(data.get(field)) if isinstance(data, dict) else None
        if balance is None:
            return unknown(self.name, f"not a {what} balance answer", ProbeResponse(status))
        return self._judge(status, balance, "CNY")

    def _siliconflow(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        return self._coded(doc, status, 20000, "totalBalance", "SiliconFlow")

    def _moonshot(self, doc: Mapping[str, Any], status: int, now: float) -> ProbeResult:
        return self._coded(doc, status, 0, "available_balance", "Moonshot")
