"""What the native dialects (Anthropic, Gemini) share when they read an error envelope: the
text of a body that is no envelope, and a verdict from a table row. Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers.base import Rule
from keyrelay.providers.openai_rules import LONG_WAIT, match

__all__ = ["error_or_text", "rule_verdict"]

_OUTCOMES = {o.value: o for o in Outcome}


def error_or_text(err: dict[str, Any] | None, body: bytes) -> dict[str, Any] | None:
    """``err`` (a parsed envelope), else the start of a body that is none, as its message."""
    if err is not None:
        return err
    text = body[:512].decode("utf-8", "replace").strip()
    return {"message": text} if text else None


def rule_verdict(
    status: int,
    eff: int,
    err: Mapping[str, Any] | None,
    code: str,
    rules: tuple[Rule, ...],
    wait: Callable[[], float | None],
    fallback_code: str = "",
) -> Verdict:
    """The verdict of the first row of ``rules`` matching the effective status ``eff`` and the
    error; no row: a client error (4xx) or the upstream's fault. A rate limit waits ``wait()``
    seconds (the dialect's own hints); a wait beyond :data:`LONG_WAIT` is a spent quota."""
    raw = err.get("message") if err else None
    message = redact(raw if isinstance(raw, str) else ("" if raw is None else str(raw)))[:300]
    rule = match(eff, err, code, rules)
    if rule is None:
        outcome = Outcome.CLIENT_ERROR if 400 <= eff < 500 else Outcome.UPSTREAM_FAULT
        return Verdict(outcome, status, code or None, message)
    outcome, reason, retry_after = _OUTCOMES[rule.outcome], rule.reason, None
    if outcome is Outcome.RATE_LIMITED:
        retry_after = wait()
        if retry_after is not None and retry_after > LONG_WAIT:
            outcome, reason = Outcome.QUOTA_EXHAUSTED, "limit reached for hours"
    return Verdict(outcome, status, code or fallback_code or None, message, retry_after, reason)
