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

Up to :data:`SMALL` keys the grams are a set. Above, a set would hold millions of small strings
(~400 MB at 100,000 keys), so they go into a Bloom filter (``rbloom``, ~20 MB there) that says
"maybe" or "no"; a "maybe" is confirmed in the keys themselves (joined by a character no key
has), so a false positive of the filter never redacts innocent text.

Cost (figures: docs/design.md, "Secrets"): building is paid per key, lazily, once per change
of the key set; redacting is paid per character in a run, nothing for text outside runs. It is
meant for error bodies, headers, SSE error events, log lines and events, not 200 bodies.

Pure: no I/O; the caller decides when the key set changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import chain

from rbloom import Bloom

from keyrelay.core.masking import mask

__all__ = ["EMPTY", "MIN_FRAGMENT", "SMALL", "Redactor", "safe_mask"]

#: the shortest fragment of a key that must never be shown
MIN_FRAGMENT = 8
_ELLIPSIS = "…"
_ELLIPSIS_B = _ELLIPSIS.encode()
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
#: above this many keys the grams go into a Bloom filter, not a set
SMALL = 2000
#: the filters' false-positive rates: per window (a "maybe" costs a search of the joined keys),
#: and per probe (a "maybe" costs a look at the run's windows). Each halving of these adds a
#: hash, a cache miss, to every key's window when the filter is built (~0.2 s at 100,000 keys).
_FALSE_POSITIVES = 1e-4
_PROBE_FALSE_POSITIVES = 1e-2
#: searches of the joined keys one text may cost (~2 ms each at 100,000 keys); past them a
#: "maybe" is taken for a match
_SEARCHES = 32
#: The first look at a run: its windows of :data:`_PROBE` characters every :data:`_STRIDE`, as
#: slices (taken and looked up in C). A fragment of MIN_FRAGMENT characters always holds one of
#: them whole (an offset that is a multiple of the stride lies within its first STRIDE
#: characters, and PROBE + STRIDE - 1 = MIN_FRAGMENT), so a run none of whose probes is a
#: probe-sized piece of a key holds no fragment: a fourth of the windows to look at.
_PROBE = 5
_STRIDE = MIN_FRAGMENT - _PROBE + 1
_PROBES = tuple(slice(i, i + _PROBE) for i in range(0, 1 << 14, _STRIDE))
#: every window of a key, as slices (keys are at most 512 characters: core/masking.py)
_GRAMS = tuple(slice(i, i + MIN_FRAGMENT) for i in range(4096))
_PIECES = tuple(slice(i, i + _PROBE) for i in range(4096))


def _public(secret: str) -> int:
    """Where the windows that may not be shown start: past the provider prefix every such key
    shares (``sk-proj-``), which :func:`~keyrelay.core.masking.mask` shows (as
    ``stores/evidence.py`` does), so masks in log lines stay whole."""
    head = mask(secret).partition(_ELLIPSIS)[0]
    return max(0, len(head) - MIN_FRAGMENT + 1) if secret.startswith(head) else 0


def _windows(secret: str, start: int, width: int, table: tuple[slice, ...]) -> Iterable[str]:
    """Every window of ``width`` characters of ``secret`` from ``start`` on (taken in C through
    ``table`` for any key of ordinary length: ~3 s less to build at 100,000 keys)."""
    end = len(secret) - width + 1
    if end <= len(table):
        return map(secret.__getitem__, table[start:end])
    return (secret[i : i + width] for i in range(start, end))


def safe_mask(secret: str) -> str:
    """:func:`~keyrelay.core.masking.mask`, without a public prefix long enough to be a
    fragment (``sk-svcacct-``: 11 characters): then only ``…`` and the last four."""
    m = mask(secret)
    head = m.partition(_ELLIPSIS)[0]
    return m if len(head) < MIN_FRAGMENT else _ELLIPSIS + m.rpartition(_ELLIPSIS)[2]


class Redactor:
    """Redacts the given secrets (and their fragments) from str and bytes. Immutable."""

    __slots__ = ("_grams", "_joined", "_keys", "_maybe", "_pieces", "_runs", "_runs_b", "memo", "size")

    def __init__(self, secrets: Iterable[str]) -> None:
        keys = {s for s in secrets if len(s) >= MIN_FRAGMENT and s.isascii()}
        n = MIN_FRAGMENT
        starts = [(s, _public(s)) for s in keys]
        grams = chain.from_iterable(_windows(s, p, n, _GRAMS) for s, p in starts)
        pieces = chain.from_iterable(_windows(s, p, _PROBE, _PIECES) for s, p in starts)
        #: is this window a gram? a set answers exactly; above SMALL keys the filter answers
        #: "maybe", which ``_joined`` (every key's part past its public prefix, joined by NUL) confirms
        self._grams: frozenset[str] | None = None
        self._joined: str | None = None
        #: probe-sized pieces of keys (a set, or a filter)
        self._pieces: frozenset[str] | Bloom
        if len(keys) <= SMALL:
            self._grams = frozenset(grams)
            self._maybe: Callable[[str], bool] = self._grams.__contains__
            self._pieces = frozenset(pieces)
        else:
            size = max(1, sum(len(s) for s in keys))
            bloom = Bloom(size, _FALSE_POSITIVES)
            bloom.update(grams)
            self._maybe = bloom.__contains__
            self._pieces = Bloom(size, _PROBE_FALSE_POSITIVES)
            self._pieces.update(pieces)
            self._joined = "\0".join(s[_public(s) :] for s in keys)
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
        maybe, joined, pieces = self._maybe, self._joined, self._pieces
        small = pieces if isinstance(pieces, frozenset) else None
        searches = _SEARCHES
        spans: list[tuple[int, int]] = []
        n = MIN_FRAGMENT
        for m in runs:
            run = m.group()
            probes = (len(run) - _PROBE) // _STRIDE + 1
            if probes <= len(_PROBES):  # the usual case: no probe is a piece of a key
                found = map(run.__getitem__, _PROBES[:probes])
                if small.isdisjoint(found) if small is not None else not any(map(pieces.__contains__, found)):
                    continue
            base = m.start()
            start = end = -1
            at = -2  # where the previous window was found in ``joined`` (-2: it was not)
            for i in range(len(run) - n + 1):
                w = run[i : i + n]
                if not maybe(w):
                    at = -2
                    continue
                if joined is not None:  # the filter's "maybe", confirmed
                    if at >= 0 and joined.startswith(w, at + 1):
                        at += 1  # the next window of the same key: no search
                    elif searches:
                        searches -= 1
                        at = joined.find(w)
                        if at < 0:
                            at = -2
                            continue
                    else:  # too many searches for one text: a "maybe" counts as found (redacts more, never less)
                        at = -2
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
