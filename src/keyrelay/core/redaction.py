"""One redaction that knows the actual keys: removes every key, and every fragment of
:data:`MIN_FRAGMENT` or more characters of a key, from text or bytes.

A prefix pattern (``sk-…``) misses the many keys that have none (Azure, Mistral, 32-hex
resellers' keys, Gemini's ``AIza…`` inside other words), so a :class:`Redactor` is built from
the secrets themselves: the set of all their 8-character windows ("grams"). Any fragment of 8
or more characters of a key contains one of them, so text is redacted by looking up every
8-character window of the runs of characters that keys are made of (a compiled character
class finds the runs; most of a JSON error body or a log line is not in one). Spans covered
by matching windows are merged and replaced: by the key's mask when the span is exactly one
key (so ``sk-…AbCd`` still says which key), else by ``…``.

Cost (figures: docs/design.md, "Secrets"): building is paid per key, lazily, once per change
of the key set; redacting is paid per character in a run, nothing for text outside runs. It is
meant for error bodies, headers, SSE error events, log lines and events, not 200 bodies.

Pure: no I/O; the caller decides when the key set changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from keyrelay.core.masking import mask

__all__ = ["EMPTY", "MIN_FRAGMENT", "Redactor", "safe_mask"]

#: the shortest fragment of a key that must never be shown
MIN_FRAGMENT = 8
_ELLIPSIS = "…"
_ELLIPSIS_B = _ELLIPSIS.encode()
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _public(secret: str) -> int:
    """Where the windows that may not be shown start: past the provider prefix every such key
    shares (``sk-proj-``), which :func:`~keyrelay.core.masking.mask` shows (as
    ``stores/evidence.py`` does), so masks in log lines stay whole."""
    head = mask(secret).partition(_ELLIPSIS)[0]
    return max(0, len(head) - MIN_FRAGMENT + 1) if secret.startswith(head) else 0


def safe_mask(secret: str) -> str:
    """:func:`~keyrelay.core.masking.mask`, without a public prefix long enough to be a
    fragment (``sk-svcacct-``: 11 characters): then only ``…`` and the last four."""
    m = mask(secret)
    head = m.partition(_ELLIPSIS)[0]
    return m if len(head) < MIN_FRAGMENT else _ELLIPSIS + m.rpartition(_ELLIPSIS)[2]


class Redactor:
    """Redacts the given secrets (and their fragments) from str and bytes. Immutable."""

    __slots__ = ("_grams", "_keys", "_runs", "_runs_b", "memo", "size")

    def __init__(self, secrets: Iterable[str]) -> None:
        keys = {s for s in secrets if len(s) >= MIN_FRAGMENT and s.isascii()}
        n = MIN_FRAGMENT
        self._grams = frozenset({s[i : i + n] for s in keys for i in range(_public(s), len(s) - n + 1)})
        # letters, digits, '-' and '_' always: most keys use no other, so the pattern is the same
        # for most redactors and compiled once (re's cache), even one per key (stores/evidence.py)
        chars = _KEY_CHARS | set("".join(keys))
        self._keys = frozenset(keys)
        self.size = len(keys)
        cls = "".join(re.escape(c) for c in sorted(chars)) or "\\x00"
        pattern = f"[{cls}]{{{MIN_FRAGMENT},}}"
        self._runs = re.compile(pattern)
        self._runs_b = re.compile(pattern.encode("ascii"))
        #: header values seen clean (they repeat: content types, organisations, versions)
        self.memo: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def _spans(self, runs: Iterable[re.Match[str]]) -> list[tuple[int, int]]:
        grams = self._grams
        spans: list[tuple[int, int]] = []
        n = MIN_FRAGMENT
        for m in runs:
            run = m.group()
            base = m.start()
            start = end = -1
            for i in range(len(run) - n + 1):
                if run[i : i + n] in grams:
                    if start >= 0 and i <= end:
                        end = i + n
                    else:
                        if start >= 0:
                            spans.append((base + start, base + end))
                        start, end = i, i + n
            if start >= 0:
                spans.append((base + start, base + end))
        return spans

    def _cover(self, found: str) -> str:
        return safe_mask(found) if found in self._keys else _ELLIPSIS

    def text(self, s: str) -> str:
        """``s`` with every key and key fragment replaced."""
        if not self._keys or len(s) < MIN_FRAGMENT:
            return s
        spans = self._spans(self._runs.finditer(s))
        if not spans:
            return s
        out = []
        at = 0
        for a, b in spans:
            out.append(s[at:a])
            out.append(self._cover(s[a:b]))
            at = b
        out.append(s[at:])
        return "".join(out)

    def data(self, b: bytes) -> bytes:
        """Bytes (any encoding: keys are ASCII) with every key and key fragment replaced; the
        replacement is UTF-8."""
        if not self._keys or len(b) < MIN_FRAGMENT:
            return b
        s = b.decode("latin-1")  # one character per byte: offsets are byte offsets
        spans = self._spans(self._runs.finditer(s))
        if not spans:
            return b
        out = []
        at = 0
        for a, e in spans:
            out.append(b[at:a])
            out.append(self._cover(s[a:e]).encode())
            at = e
        out.append(b[at:])
        return b"".join(out)

    def leaks(self, s: str) -> bool:
        """Does ``s`` hold a key or a fragment of one?"""
        return bool(self._keys) and bool(self._spans(self._runs.finditer(s)))

    def value(self, v: str) -> str:
        """A header value, redacted (ASCII: ``...`` for ``…``); values seen clean before are
        answered from a memo."""
        if len(v) < MIN_FRAGMENT or v in self.memo:
            return v
        clean = self.text(v)
        if clean is not v:
            return clean.replace(_ELLIPSIS, "...")  # header values stay ASCII
        memo = self.memo
        if len(memo) >= 4096:
            memo.clear()
        memo[v] = v
        return v


EMPTY = Redactor(())
