"""What every probe shares: the request and answer a probe flow trades with the checker, the
:data:`ProbeFlow` and :class:`Probe` types, and the helpers that read an upstream's answer.

The probes themselves are in :mod:`keyrelay.providers.probes` (billing, models, completion)
and :mod:`keyrelay.providers.balance` (provider balance endpoints). Whatever an answer does not
say plainly is read as *unknown*, with the upstream's error code and redacted message as
evidence — never as a balance of 0.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome
from keyrelay.providers.base import Dialect
from keyrelay.providers.classify_rules import UNVERIFIED

__all__ = [
    "Probe",
    "ProbeFlow",
    "ProbeRequest",
    "ProbeResponse",
    "auth_failure",
    "error_in",
    "http_unknown",
    "json_doc",
    "listed",
    "number",
    "quota_answer",
    "unknown",
]

INVALID, UNKNOWN = ProbeKind.INVALID, ProbeKind.UNKNOWN


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


def json_doc(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def listed(resp: ProbeResponse, *fields: str) -> bool:
    """Is ``resp``'s body a JSON object with a list under one of ``fields``? A 2xx that is not
    (an HTML page from a captive portal, a misconfigured base URL) cannot be read: unknown."""
    doc = json_doc(resp.body)
    return isinstance(doc, dict) and any(isinstance(doc.get(f), list) for f in fields)


def number(v: Any) -> float | None:
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


def error_in(doc: Any) -> Mapping[str, Any] | None:
    """The ``error`` object of a decoded answer (a string error becomes its message)."""
    if not isinstance(doc, dict) or not doc.get("error"):
        return None
    err = doc["error"]
    return err if isinstance(err, dict) else {"message": str(err)}


def unknown(probe: str, reason: str, resp: ProbeResponse | None = None, doc: Any = None) -> ProbeResult:
    status = resp.status if resp is not None else 0
    err = error_in(doc if doc is not None or resp is None else json_doc(resp.body))
    code = message = None
    if err is not None:
        raw = err.get("code") or err.get("type")
        code = str(raw) if raw not in (None, "") else None
        message = redact(str(err.get("message") or ""))[:160] or None
    return ProbeResult(UNKNOWN, probe, reason, status, code, message=message or "")


def http_unknown(probe: str, resp: ProbeResponse) -> ProbeResult:
    if resp.status == 404:
        return unknown(probe, "endpoint not found", resp)
    if resp.status >= 500:
        return unknown(probe, "upstream error", resp)
    return unknown(probe, "unexpected answer", resp)


def auth_failure(probe: str, dialect: Dialect, resp: ProbeResponse, now: float) -> ProbeResult | None:
    """An invalid-key result for a 401 the dialect reads as such (reason from its table). A 401
    the table does not recognise (live traffic holds the key and verifies it) is the probe's
    answer to that question: refused, so invalid."""
    if resp.status != 401:
        return None
    v = dialect.classify(resp.status, resp.headers, resp.body, now)
    if v.outcome is Outcome.INVALID_KEY:
        return ProbeResult(INVALID, probe, v.reason or "invalid key", resp.status, v.code)
    if v.reason == UNVERIFIED:
        return ProbeResult(INVALID, probe, "refused by the upstream (http 401)", resp.status, v.code)
    return None


def quota_answer(probe: str, dialect: Dialect, resp: ProbeResponse, now: float) -> ProbeResult | None:
    """An answer that says "no money" (429 ``insufficient_quota``, a spent credit balance) read
    as *exhausted* — not as an "unexpected answer"; ``None`` for anything else."""
    if resp.status < 400:
        return None
    v = dialect.classify(resp.status, resp.headers, resp.body, now)
    if v.outcome is not Outcome.QUOTA_EXHAUSTED:
        return None
    return ProbeResult(ProbeKind.EXHAUSTED, probe, v.reason or "quota exhausted", resp.status, v.code, funds=True)
