"""Evidence that reaches the store — events' reasons and details, probe results — with the actual
keys taken out before it is written or shown: an upstream may echo the key it was sent in any
field of its answer (message, ``code``, ``param``), and many keys have no ``sk-`` prefix for a
pattern to catch. Every store passes the events it writes through :func:`scrub_event` /
:func:`scrub_transition` with the key's own secret; the checker passes each probe's result
through :func:`scrub_result` with the key it probed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from keyrelay.core.machine import ProbeResult
from keyrelay.core.masking import redact
from keyrelay.core.model import Event, Transition
from keyrelay.core.redaction import Redactor

__all__ = ["scrub", "scrub_event", "scrub_result", "scrub_transition"]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets`` (a whole key shown masked), any piece of 8 or more
    characters of one (``…``: an upstream may cut or quote part of it) — the one redaction,
    :class:`~keyrelay.core.redaction.Redactor` — nor anything key-shaped."""
    if not text:
        return text
    return redact(Redactor(secrets).text(text))


def _whole(text: str, secrets: Iterable[str]) -> str:
    """For reasons: words from keyrelay's own rule tables ("account deactivated"), where an
    8-character piece may be a dictionary word a key happens to contain; the whole key is taken
    out all the same."""
    return redact(text, secrets) if text else text


def scrub_event(event: Event, secrets: Iterable[str]) -> Event:
    secrets = tuple(secrets)
    reason, detail = _whole(event.reason, secrets), scrub(event.detail, secrets)
    if reason == event.reason and detail == event.detail:
        return event
    return replace(event, reason=reason, detail=detail)


def scrub_transition(t: Transition, secrets: Iterable[str]) -> Transition:
    secrets = tuple(secrets)
    reason, detail = _whole(t.reason, secrets), scrub(t.detail, secrets)
    if reason == t.reason and detail == t.detail:
        return t
    return replace(t, reason=reason, detail=detail)


def scrub_result(result: ProbeResult, secrets: Iterable[str]) -> ProbeResult:
    """A probe's result without the key in its reason, code or message."""
    secrets = tuple(secrets)
    reason, message = _whole(result.reason, secrets), scrub(result.message, secrets)
    code = scrub(result.code, secrets) if result.code else result.code
    if (reason, message, code) == (result.reason, result.message, result.code):
        return result
    return replace(result, reason=reason, message=message, code=code)
