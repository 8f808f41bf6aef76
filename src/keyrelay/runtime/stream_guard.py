"""Keys out of a passing SSE stream, at the cost of one substring search per chunk.

A normal chunk of a stream (one or more whole events, ``"usage":null`` and all) is relayed as
it came. A chunk that mentions ``error`` — an in-band error event after the first byte, which
an upstream may fill with the key it was sent — or that ends inside an event (so a key could
be split over two chunks) is redacted, event by event: the incomplete tail is held back until
its event is whole (at most :data:`HOLD_LIMIT` bytes), so no fragment is ever sent in two
halves that each look harmless.
"""

from __future__ import annotations

from keyrelay.core.redaction import MIN_FRAGMENT
from keyrelay.runtime import redactor

__all__ = ["HOLD_LIMIT", "StreamGuard"]

HOLD_LIMIT = 64 * 1024
_ERROR = b"error"
_END = b"\n\n"


class StreamGuard:
    """Filters one stream's chunks; :meth:`pass_` then, at the end, :meth:`rest`."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def pass_(self, chunk: bytes) -> bytes:
        """What of ``chunk`` may go to the client now (possibly ``b""``)."""
        if not self.held and chunk.endswith(_END) and _ERROR not in chunk:
            return chunk  # the usual chunk: whole events, no error
        buf = self.held + chunk if self.held else chunk
        cut = buf.rfind(_END)
        if cut < 0 and len(buf) <= HOLD_LIMIT:
            self.held = buf
            return b""
        if cut < 0:  # an event larger than we hold: send all but a tail that may start a key
            cut = len(buf) - MIN_FRAGMENT
            self.held = buf[cut:]
            return redactor.current().data(buf[:cut])
        cut += 2
        self.held = buf[cut:]
        return redactor.current().data(buf[:cut])

    def rest(self) -> bytes:
        """The held tail, redacted, when the stream ends."""
        held, self.held = self.held, b""
        return redactor.current().data(held) if held else b""
