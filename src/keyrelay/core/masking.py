"""Masking and redaction of key material: the only forms in which a key may be shown."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["InvalidSecret", "mask", "redact", "validate_secret"]

_PREFIX = re.compile(r"^(sk-(?:proj|svcacct|admin|ant-api\d\d|or-v1)-|AIza|[A-Za-z]{2,4}[-_])")

# Things that look like API keys (or the masked echoes of them) in free text.
_KEYLIKE = re.compile(
    r"(?<![A-Za-z0-9])(?:sk|pk|rk|gsk|xai|kr)[-_][A-Za-z0-9_\-*.…]{6,}"  # sk-…, sk-proj-…, gsk_…
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google
    r"|api_key:[^\s'\"]+"  # Gemini consumer ids
    r"|\*{3,}[A-Za-z0-9]{2,}"  # ****fcc2 echoes
)


#: A value already in :func:`mask`'s shape (``sk-proj-…R004``): shown as is.
_MASKED = re.compile(r"(?:sk-(?:proj|svcacct|admin|ant-api\d\d|or-v1)-|AIza|[A-Za-z]{2,4}[-_])?…[A-Za-z0-9_\-]{0,4}")


def _redact_match(m: re.Match[str]) -> str:
    found = m.group(0)
    if "…" not in found:
        return mask(found)
    return found if _MASKED.fullmatch(found) else "…"


class InvalidSecret(ValueError):
    """A key value that cannot be stored: empty, not printable ASCII, or containing whitespace."""


def mask(secret: str) -> str:
    """``sk-proj-abc…XYZW`` → ``sk-proj-…XYZW``: a recognisable prefix and the last four characters.

    Short values show only their last two characters, so a mask never reveals most of a key.
    """
    if len(secret) < 12:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    m = _PREFIX.match(secret)
    prefix = m.group(1) if m else ""
    if len(prefix) + 4 > len(secret) // 2:  # a short key: the prefix would reveal most of it
        prefix = ""
    return f"{prefix}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every known secret and anything key-shaped from ``text``."""
    for s in secrets:
        if s and s in text:
            text = text.replace(s, mask(s))
    return _KEYLIKE.sub(_redact_match, text)


def validate_secret(secret: str) -> str:
    """Return the key if it is storable, else raise :class:`InvalidSecret` (the message never
    contains the value itself)."""
    if not secret:
        raise InvalidSecret("empty key")
    if len(secret) > 512:
        raise InvalidSecret("key longer than 512 characters")
    for ch in secret:
        o = ord(ch)
        if o <= 32 or o >= 127:
            what = "whitespace" if ch.isspace() else "a non-printable or non-ASCII character"
            raise InvalidSecret(f"key {mask(secret)!r} contains {what}")  # repr: no raw CR/LF in logs
    return secret
