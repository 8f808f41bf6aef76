"""google.rpc.Status errors: Gemini's shape, natively and through its OpenAI-compatible endpoint
(``…/v1beta/openai``), as ``{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED",
"details": […]}}``.

Their ``code`` is the HTTP status again: what happened is in ``status`` and ``details``.
:func:`google_code` turns those into one code the classification table can match:

- the ``ErrorInfo`` reason, lower-cased: ``api_key_invalid`` (Gemini answers a bad key with
  400), ``consumer_suspended``, ``api_key_service_blocked``, …;
- for ``RESOURCE_EXHAUSTED``, which quota ran out: ``quota_per_day`` (a ``…PerDay…`` quota id:
  spent until the day turns, whatever short ``retryDelay`` comes with it), ``quota_none``
  (``limit: 0``: the key's tier has no access at all), else ``quota_per_minute`` (a shorter
  quota id) or ``resource_exhausted`` (none given): rate limits, often worded "You exceeded
  your current quota", on a key that is fine (PROVIDER-ERRORS.md §4; peers retire keys on them).

:func:`google_retry_delay` reads ``RetryInfo.retryDelay`` (``"26s"``). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from keyrelay.core.durations import parse_duration

__all__ = ["google_code", "google_retry_delay"]

_NO_ACCESS = re.compile(r"\blimit: 0\b")


def _details(err: Mapping[str, Any], kind: str) -> Iterator[Mapping[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith(kind):
            yield d


def google_code(err: Mapping[str, Any]) -> str:
    """The code to match a google.rpc.Status error by, or ``""`` when ``err`` is not one."""
    status = err.get("status")
    if not isinstance(status, str) or not isinstance(err.get("code"), int):
        return ""
    for info in _details(err, "ErrorInfo"):
        reason = info.get("reason")
        if isinstance(reason, str) and reason:
            return reason.lower()
    if status != "RESOURCE_EXHAUSTED":
        return ""
    message = err.get("message")
    if isinstance(message, str) and _NO_ACCESS.search(message):
        return "quota_none"
    failures = list(_details(err, "QuotaFailure"))
    for failure in failures:
        violations = failure.get("violations")
        for v in violations if isinstance(violations, list) else ():
            if isinstance(v, dict) and "PerDay" in str(v.get("quotaId", "")):
                return "quota_per_day"
    return "quota_per_minute" if failures else "resource_exhausted"


def google_retry_delay(err: Mapping[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` in seconds, if the error carries one."""
    for info in _details(err, "RetryInfo"):
        delay = info.get("retryDelay")
        if isinstance(delay, str):
            seconds = parse_duration(delay)
            if seconds is not None:
                return seconds
    return None
