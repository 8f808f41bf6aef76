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

- google-api-core's REST streaming (``google/api_core/_rest_streaming_base.py``,
  googleapis/python-api-core), used by Google's generated REST clients, wants a leading ``[``,
  counts braces outside strings (minding escaped quotes) and yields each complete top-level
  object; a body that ends with an object still open raises "Unfinished stream".
- google-genai (``google/genai/_api_client.py``, ``request_streamed``) turns any segment that
  starts with ``{"error":`` into ``APIError`` with that error's ``code`` (5xx: ``ServerError``).
- captured answers: caugner/gemdn ``src/fixtures.rs`` (candidate elements pretty-printed and
  parted by ``,`` on its own line; a failure as ``[{"error": {"code": 503, …, "status":
  "UNAVAILABLE"}}]``); flachesis/gemini-rust#29 (Google sending an error element after candidate
  elements in the same array).

So when the upstream breaks off, the client gets ``,{"error": {"code": 502, …, "status":
"UNAVAILABLE"}}]``: the array it parses stays valid JSON, and it holds the element Google itself
sends on a failure, which google-genai raises as ``ServerError`` and a whole-body parser finds as
the last element, instead of a truncated body that only says "invalid JSON". That is only
possible if the client never got half an element, so the scanner holds back the start of an
element until its end arrives (Google writes one element per chunk, so this costs nothing in
practice; an element past ``hold_limit`` is let through and the tail closes it best-effort).

Pure: no I/O, no time.
"""

from __future__ import annotations

import re

import orjson

from keyrelay.core.model import Verdict
from keyrelay.providers.base import Dialect, Usage

__all__ = ["CUT_ELEMENT", "HOLD_LIMIT", "JsonArrayScanner", "first_element", "first_verdict"]

#: the element appended when the upstream breaks off (the SSE relay's ``stream_cut_event`` says the same)
CUT_ELEMENT = orjson.dumps({"error": {"code": 502, "message": "upstream stream broke off", "status": "UNAVAILABLE"}})
#: bytes of one unfinished element held back before they are let through anyway
HOLD_LIMIT = 8 * 1024 * 1024

_OUTSIDE = re.compile(rb'[\[\]{}",]')  # what matters outside strings
_IN_STRING = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # a string's body: stops at its quote or a last "\"
_QUOTE, _COMMA, _BACKSLASH = 0x22, 0x2C, 0x5C


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

    def walk(self, data: bytes | bytearray, first_only: bool = False) -> list[tuple[int, int]]:
        """Walk ``data`` (the stream's next bytes); returns the (start, end) stream offsets of the
        elements that ended in it."""
        spans: list[tuple[int, int]] = []
        base, n, i, stack = self.pos, len(data), 0, self.stack
        while i < n:
            if self.in_str:
                if self.esc:  # the previous piece ended on a backslash
                    i, self.esc = i + 1, False
                body = _IN_STRING.match(data, i)
                j = body.end() if body else i
                if j >= n:
                    break
                if data[j] == _BACKSLASH:  # the piece's last byte: the escaped one comes next
                    self.esc = True
                    break
                self.in_str, i = False, j + 1
                continue
            m = _OUTSIDE.search(data, i)
            if m is None:
                break
            j = m.start()
            c, i = data[j], j + 1
            if c == _QUOTE:
                self.in_str = True
            elif c == _COMMA:
                if len(stack) == self.top:
                    self.comma = False
            elif c in b"[{":
                if not self.began:
                    self.began, self.top = True, 1 if c == 0x5B else 0
                if len(stack) == self.top and not self.done:
                    self.start = base + j
                stack.append(c + 2)  # "[" + 2 is "]", "{" + 2 is "}"
            else:
                if stack:
                    stack.pop()
                if len(stack) == self.top and self.start >= 0:
                    spans.append((self.start, base + j + 1))
                    self.start, self.comma = -1, True
                    if first_only:
                        break
                if not stack and self.began:
                    self.done = True
        self.pos = base + (i if first_only and spans else n)
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

    __slots__ = ("_held", "_last_usage", "_sent", "_usage", "_usage_re", "_walk", "dialect", "first", "hold_limit")

    def __init__(self, dialect: Dialect, hold_limit: int = HOLD_LIMIT) -> None:
        self.dialect = dialect
        self.hold_limit = hold_limit
        self.first: bytes | None = None
        self._walk = _Walk()
        self._held = bytearray()  # fed, not yet handed back: the start of an unfinished element
        self._sent = 0  # bytes handed back so far
        self._last_usage: bytes | None = None  # ``{"usageMetadata": {…}}`` of the latest element with one
        self._usage: tuple[bytes, Usage | None] | None = None  # the last decoding, by its input
        # "usageMetadata" (native) or "usage" (OpenAI-style), as a key: in a JSON string a quote is
        # escaped, so ``"usageMetadata":`` with both quotes bare is never inside the text
        self._usage_re = re.compile(re.escape(dialect.usage_key) + rb'[A-Za-z]*"\s*:\s*\{')

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that may go to the client now: all that came, except the start of an element
        whose end has not arrived yet (it comes out with the chunk that completes it)."""
        w, held = self._walk, self._held
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
            self._held = bytearray(buf[cut:])
        self._sent += len(out)
        return out

    def _saw(self, buf: bytes | bytearray, s: int, e: int) -> None:
        if self.first is None:
            self.first = bytes(buf[s:e])
        m = None
        for m in self._usage_re.finditer(buf, s, e):  # the element's own key comes last; the
            pass  # usage of a nested object (none in Gemini's answers) would come before it
        if m is not None:
            obj = _Walk().walk(buf[m.end() - 1 : e], first_only=True)
            if obj:
                self._last_usage = b"{" + bytes(buf[m.start() : m.end() - 1 + obj[0][1]]) + b"}"

    @property
    def usage(self) -> Usage | None:
        """The usage the latest element carrying one reports (Gemini's counts grow with every
        element; the last one is final). Decoded when asked, not per chunk."""
        raw = self._last_usage
        if raw is None:
            return None
        if self._usage is None or self._usage[0] is not raw:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            self._usage = (raw, self.dialect.usage(doc) if isinstance(doc, dict) else None)
        return self._usage[1]

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
        comma = w.comma
        close = b""
        if 0 <= w.start < self._sent:  # part of an element went out (past hold_limit): close it
            close = (b'"' if w.in_str else b"") + bytes(reversed(w.stack[w.top :]))
            comma = True
        return close + (b"," if comma else b"") + CUT_ELEMENT + b"]"
