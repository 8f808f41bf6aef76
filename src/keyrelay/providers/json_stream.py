"""Gemini's default stream, read as it arrives: ``:streamGenerateContent`` without ``alt=sse``
answers ONE JSON array over chunked transfer (``Content-Type: application/json``), each element a
GenerateContentResponse (pretty-printed, so elements span lines), the last one carrying the final
``usageMetadata``. An error partway is an element of its own, ``{"error": {google.rpc.Status}}``.

What this module gives the relay loop (the array's counterpart of :mod:`keyrelay.providers.sse`):
:func:`first_element` (peek at the first element to fail over on an in-band error),
:func:`first_verdict` (classify it), and :class:`JsonArrayScanner` (fed every chunk; hands back
the bytes that may go to the client, keeps the latest usage, knows whether the array closed and
what to append when the upstream breaks off).

How clients read this stream, which decides what we may send them:

- google-api-core's REST streaming (googleapis/python-api-core:google/api_core/_rest_streaming_base.py),
  used by Google's generated REST clients (which ask with ``$alt=json``), wants a leading ``[``,
  counts braces outside strings (minding escaped quotes) and yields each complete top-level
  object; a body that ends with an object still open raises "Unfinished stream".
- google-genai (googleapis/python-genai:google/genai/_api_client.py, ``request_streamed``) asks
  for ``alt=sse``, and turns any streamed segment that starts with ``{"error":`` into
  ``APIError`` with that error's ``code`` (5xx: ``ServerError``): Google's in-band error shape.
- captured answers: caugner/gemdn ``src/fixtures.rs`` (candidate elements pretty-printed and
  parted by ``,`` on its own line; a failure as ``[{"error": {"code": 503, …, "status":
  "UNAVAILABLE"}}]``); flachesis/gemini-rust#29 (Google sending an error element after candidate
  elements in the same array).

So when the upstream breaks off, the client gets ``,{"error": {"code": 502, …, "status":
"UNAVAILABLE"}}]``: the array it parses stays valid JSON and ends in the element Google itself
sends on a failure (an iterator like api-core's hands it over as the last element, a whole-body
parser finds it last), instead of a truncated body that only says "invalid JSON". That is only
possible if the client never got half an element, so the scanner holds back the start of an
element until its end arrives (Google writes one element per chunk, so this costs nothing in
practice; an element past ``hold_limit`` is let through and the tail closes it best-effort).

Pure: no I/O, no time.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from keyrelay.core.model import Verdict
from keyrelay.providers.base import Dialect, Usage

__all__ = ["CUT_ELEMENT", "HOLD_LIMIT", "JsonArrayScanner", "first_element", "first_verdict"]

#: the element appended when the upstream breaks off (the SSE relay's ``stream_cut_event`` says the same)
CUT_ELEMENT = orjson.dumps({"error": {"code": 502, "message": "upstream stream broke off", "status": "UNAVAILABLE"}})
#: bytes of one unfinished element held back before they are let through anyway
HOLD_LIMIT = 8 * 1024 * 1024

#: what matters: a whole string (group 1), a string that runs past the piece, a bracket
_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")|"[^"\\]*(?:\\.[^"\\]*)*|[\[\]{}]', re.DOTALL)
_IN_STRING = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # a string's body: stops at its quote or a last "\"
_QUOTE, _BACKSLASH, _SPACE = 0x22, 0x5C, b" \t\r\n"
_LEAD = re.compile(rb"[ \t\r\n]*([\[,]?)[ \t\r\n]*")  # what may come before an element


class _Walk:
    """Where a byte stream stands in a JSON array (or a lone object): the containers open,
    inside a string or not, where the open element began. Not a validator: it trusts the JSON
    and only finds element boundaries, fed piece by piece."""

    __slots__ = ("began", "comma", "done", "esc", "in_str", "pos", "stack", "start", "top")

    def __init__(self) -> None:
        self.stack = bytearray()  # the closing byte of every open container, outermost first
        self.top = 1  # depth of an element: 1 in an array, 0 for a lone object
        self.began = self.done = self.in_str = self.esc = False
        self.comma = False  # an element ended and no "," followed yet
        self.pos = 0  # bytes walked so far
        self.start = -1  # where the open element began (offset in the stream), -1 between elements

    def whole(self, data: bytes) -> tuple[int, int, dict[str, Any]] | None:
        """The fast path, for a piece that is exactly one element between separators (Google
        writes one element per chunk): its (start, end) in ``data`` and the element decoded, the
        walk moved past it; ``None`` (and nothing moved) when the piece is anything else."""
        if self.in_str or self.done or (self.began and (self.top != 1 or len(self.stack) != 1)):
            return None  # not between two elements of an array
        lead = _LEAD.match(data)
        i, opener = (lead.end(), lead.group(1)) if lead else (0, b"")
        if (opener == b"[") == self.began:  # "[" opens the array, and only once
            return None
        body = data.rstrip(_SPACE)
        closes = body.endswith(b"]")
        j = len(body.rstrip(b"]" + _SPACE)) if closes else len(body)  # (one "]": "]]" fails below)
        if i >= j or data[i] != 0x7B or data[j - 1] != 0x7D:
            return None
        try:
            doc = orjson.loads(memoryview(data)[i:j])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or (closes and data[j:].count(b"]") != 1):
            return None
        self.began, self.top, self.start, self.comma = True, 1, -1, True
        self.done, self.pos, self.stack[:] = closes, self.pos + len(data), b"" if closes else b"]"
        return i, j, doc

    def walk(self, data: bytes | bytearray, first_only: bool = False) -> list[tuple[int, int]]:
        """Walk ``data`` (the stream's next bytes); returns the (start, end) stream offsets of the
        elements that ended in it (only the first with ``first_only``)."""
        spans: list[tuple[int, int]] = []
        base, n, stack = self.pos, len(data), self.stack
        i = gap = 0  # gap: where the bytes between elements began in data
        if self.in_str:  # a string runs on from the previous piece
            if self.esc:  # which ended on a backslash
                i, self.esc = 1, False
            body = _IN_STRING.match(data, i)
            j = body.end() if body else i
            if j >= n or data[j] == _BACKSLASH:  # it runs on (the byte escaped comes next)
                self.esc, self.pos = j < n, base + n
                return spans
            self.in_str, i = False, j + 1
        for m in _TOKEN.finditer(data, i):
            j = m.start()
            c = data[j]
            if c == _QUOTE:
                if m.lastindex is None:  # a string that runs past this piece
                    self.in_str, self.esc = True, m.end() < n  # stopped before a last backslash
                    break
            elif c in b"[{":
                if not self.began:
                    self.began, self.top = True, 1 if c == 0x5B else 0
                if len(stack) == self.top and not self.done:
                    self.comma = self.comma and data.find(b",", gap, j) < 0
                    self.start = base + j
                stack.append(c + 2)  # "[" + 2 is "]", "{" + 2 is "}"
            else:
                if stack:
                    stack.pop()
                if len(stack) == self.top and self.start >= 0:
                    spans.append((self.start, base + j + 1))
                    self.start, self.comma, gap = -1, True, j + 1
                    if first_only:
                        self.pos = base + gap
                        return spans
                if not stack and self.began:
                    self.done = True
        if self.start < 0 and not self.in_str:
            self.comma = self.comma and data.find(b",", gap) < 0
        self.pos = base + n
        return spans


def first_element(buf: bytes) -> bytes | None:
    """The first complete element of a streamed JSON array (or a lone JSON object: Google's
    error answers), once ``buf`` holds it; else ``None``."""
    spans = _Walk().walk(buf, first_only=True)
    return buf[spans[0][0] : spans[0][1]] if spans else None


def first_verdict(dialect: Dialect, element: bytes, status: int = 200) -> Verdict:
    """The verdict on a stream by its first element: an ``{"error": …}`` element is classified
    like that google.rpc.Status answered whole; a candidate (anything else) is a success."""
    return dialect.classify_event(element) or Verdict.ok(status)


class JsonArrayScanner:
    """Watches a streamed JSON array on its way to the client: feed it every upstream chunk and
    send on what :meth:`feed` returns. It keeps the first element, the usage of the latest element
    that carries one, whether the array closed, and what to append if the upstream breaks off."""

    __slots__ = ("_held", "_sent", "_usage_re", "_walk", "dialect", "first", "hold_limit", "usage")

    def __init__(self, dialect: Dialect, hold_limit: int = HOLD_LIMIT) -> None:
        self.dialect = dialect
        self.hold_limit = hold_limit
        self.first: bytes | None = None
        #: the usage the latest element carrying one reports (Gemini's counts grow with every
        #: element; the last one's are final)
        self.usage: Usage | None = None
        self._walk = _Walk()
        self._held = bytearray()  # fed, not yet handed back: the start of an unfinished element
        self._sent = 0  # bytes handed back so far
        # "usageMetadata" (native) or "usage" (OpenAI-style), as a key: in a JSON string a quote is
        # escaped, so ``"usageMetadata":`` with both quotes bare is never inside the text
        self._usage_re = re.compile(re.escape(dialect.usage_key) + rb'[A-Za-z]*"\s*:\s*\{')

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that may go to the client now: all that came, except the start of an element
        whose end has not arrived yet (it comes out with the chunk that completes it)."""
        w, held = self._walk, self._held
        fast = None if held else w.whole(chunk)
        if fast is not None:
            s, e, doc = fast
            if self.first is None:
                self.first = chunk[s:e]
            self.usage = self.dialect.usage(doc) or self.usage
            self._sent += len(chunk)
            return chunk
        at = w.pos - len(held)  # the stream offset of held[0] (of chunk[0] when nothing is held)
        spans = w.walk(chunk)
        buf: bytes | bytearray = chunk
        if held:
            held += chunk
            buf = held
        for s, e in spans:
            if s >= at:  # else its start went out already (past hold_limit): not read
                self._saw(buf, s - at, e - at)
        cut = w.start - at
        if cut < 0 or (len(buf) - cut > self.hold_limit):  # between elements, or one too big to hold
            out = bytes(buf) if held else chunk
            self._held = bytearray()
        else:
            out = bytes(buf[:cut])
            if held:
                del held[:cut]
            else:
                self._held = bytearray(memoryview(chunk)[cut:])
        self._sent += len(out)
        return out

    def _saw(self, buf: bytes | bytearray, s: int, e: int) -> None:
        """An element that came in pieces: keep it if it is the first, read its usage."""
        if self.first is None:
            self.first = bytes(buf[s:e])
        if self._usage_re.search(buf, s, e) is None:
            return
        try:
            doc = orjson.loads(buf[s:e])
        except orjson.JSONDecodeError:
            return
        self.usage = (self.dialect.usage(doc) if isinstance(doc, dict) else None) or self.usage

    @property
    def held(self) -> int:
        """Bytes fed and not handed back yet (the start of an unfinished element)."""
        return len(self._held)

    def ended(self) -> bool:
        """Did :meth:`feed` hand back the array's closing ``]``? Once that went to the client it
        had the whole answer, even if it hangs up before the upstream ends the body."""
        return self._walk.done

    def cut_tail(self) -> bytes:
        """What to send after the handed-back bytes when the upstream breaks off, so the client
        parses a closed array ending in a Gemini error element (``b""`` once the array closed)."""
        w = self._walk
        if w.done or (w.began and w.top == 0):  # complete, or a lone object: nothing to append to
            return b""
        if not w.began:
            return b"[" + CUT_ELEMENT + b"]"
        comma, close = w.comma, b""
        if 0 <= w.start < self._sent:  # part of an element went out (past hold_limit): close it
            quote = (b'\\"' if w.esc else b'"') if w.in_str else b""  # (a lone "\" went out: escape it)
            close, comma = quote + bytes(reversed(w.stack[w.top :])), True
        return close + (b"," if comma else b"") + CUT_ELEMENT + b"]"
