"""An answer relayed as it arrives (``runtime/flow.py`` makes one once an answer's start is fine):
what of each upstream chunk the caller gets, what ends it, and the one outcome it records."""

from __future__ import annotations

import time
from collections.abc import Callable

from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import Dialect, Usage
from keyrelay.providers.json_stream import JsonArrayScanner
from keyrelay.providers.sse import UsageScanner, stream_ended
from keyrelay.runtime import redactor
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.stream_guard import StreamGuard

__all__ = ["ARRAY_KIND", "PLAIN_KIND", "SSE_KIND", "Stream"]

#: a body passed through as it is, an SSE stream, a streamed JSON array (Gemini)
PLAIN_KIND, SSE_KIND, ARRAY_KIND = 0, 1, 2
_OK = Verdict.ok(200)


class Stream:
    """An answer relayed as it arrives, after its first event was found fine (or a body passed
    through). The driver sends :attr:`status`, :attr:`headers` and :attr:`first`, then each
    upstream chunk through :meth:`chunk`, and at the end what :meth:`end` or :meth:`cut` return;
    :meth:`gone` when the caller hung up. The outcome is recorded once, at the end.

    Three kinds: an SSE stream (keys kept out of in-band error events, usage scanned, its end
    event watched), a streamed JSON array (Gemini: whole elements only, the latest usage, closed
    with an error element when cut) and a body passed through as it is."""

    __slots__ = (
        "_abandon", "_array", "_attempts", "_before", "_dialect", "_guard", "_kind", "_last", "_open", "_record",
        "_scanner", "first", "headers", "status",
    )

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        first: bytes,
        kind: int,
        dialect: Dialect,
        attempts: Attempts,
        record: Callable[[Verdict, Usage | None], None],
        abandon: Callable[[], None],
        array: JsonArrayScanner | None = None,
    ) -> None:
        self.status, self.headers, self._kind = status, headers, kind
        self._dialect, self._attempts, self._record, self._abandon = dialect, attempts, record, abandon
        self._open = True  # the attempt's outcome is still to record
        self._before, self._last = b"", first
        self._guard = StreamGuard()  # keys out of in-band error events after the first byte
        self._scanner: UsageScanner | None = None
        self._array = array
        attempts.first_byte = time.perf_counter()
        if kind == SSE_KIND:
            self._scanner = UsageScanner(dialect)
            self._scanner.feed(first)
            self.first = self._guard.pass_(first)
        elif kind == ARRAY_KIND:  # whole elements only (json_stream.py): a key is never split
            self.first = redactor.current().data(first) if b"error" in first else first
        else:
            self.first = first
            record(Verdict.ok(status), None)
            self._open = False

    def chunk(self, data: bytes) -> bytes:
        """What of an upstream chunk the caller gets now."""
        if self._kind == SSE_KIND:
            self._before, self._last = self._last, data
            scanner = self._scanner
            if scanner is not None and scanner.wants(data):
                scanner.feed(data)
            guard = self._guard
            if guard.held or not data.endswith(b"\n\n") or b"error" in data:
                return guard.pass_(data)
            return data
        if self._array is not None:
            out = self._array.feed(data)
            return redactor.current().data(out) if b"error" in out else out
        return data

    def end(self) -> bytes:
        """The upstream ended the answer: what is left to send; a success recorded (a JSON array
        that never closed was cut: its error element goes out and the key's fault is recorded)."""
        if self._array is not None and not self._array.ended():
            return self.cut(EOFError("the array never closed"))
        self._finish(_OK)
        return self._guard.rest() if self._kind == SSE_KIND else b""

    def cut(self, exc: BaseException) -> bytes:
        """The upstream broke the answer off (or stalled): too late to fail over. What is left to
        send, ending with the dialect's error frame; the key's upstream fault recorded."""
        self._finish(Verdict(Outcome.UPSTREAM_FAULT, 200, message=type(exc).__name__, reason="stream cut"))
        if self._kind == SSE_KIND:
            return self._guard.rest() + self._dialect.stream_cut_event()
        if self._array is not None:
            return self._array.cut_tail()
        return b""

    def delivered(self) -> bool:
        """Did the caller get the stream's last event? (Then its hanging up costs nothing.)"""
        if self._array is not None:
            return self._array.ended()
        return stream_ended(self._before, self._last) or self._dialect.stream_end in self._last

    def gone(self) -> bool:
        """The caller hung up: a stream whose last event it had is a success, any other costs the
        key nothing. True when it was counted a success."""
        if not self._open:
            last = self._attempts.last
            return last is not None and last.outcome is Outcome.OK
        if self.delivered():
            self._finish(_OK)
            return True
        self._open = False
        self._abandon()
        return False

    def _finish(self, verdict: Verdict) -> None:
        if self._open:
            self._open = False
            usage = self._scanner.usage if self._scanner is not None else None
            if self._array is not None:
                usage = self._array.usage
            self._record(verdict, usage)
