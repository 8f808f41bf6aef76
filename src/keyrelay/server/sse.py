"""Server-sent events, as far as the gateway needs to read them: the first event of a stream
(to fail over on an in-band error before anything reached the client) and the usage chunk."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from keyrelay.providers import Dialect, Usage

__all__ = ["FIRST_EVENT_LIMIT", "UsageScanner", "first_data"]

FIRST_EVENT_LIMIT = 64 * 1024


def _events(buf: bytes) -> Iterator[bytes]:
    """Complete events in ``buf`` (separated by a blank line)."""
    normal = buf.replace(b"\r\n", b"\n")
    parts = normal.split(b"\n\n")
    yield from parts[:-1]


def _data_of(event: bytes) -> bytes | None:
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def first_data(buf: bytes) -> bytes | None:
    """The ``data`` payload of the first event that has one, or ``None`` if none is complete yet."""
    for ev in _events(buf):
        d = _data_of(ev)
        if d is not None:
            return d
    return None


class UsageScanner:
    """Watches a passing stream for the chunk that carries ``usage`` (OpenAI sends it last when
    ``stream_options.include_usage`` is set) without buffering the stream."""

    __slots__ = ("_tail", "dialect", "usage")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.usage: Usage | None = None
        self._tail = b""

    def wants(self, chunk: bytes) -> bool:
        """Is this chunk worth feeding? (It may carry usage, or completes a partial event.)"""
        return bool(self._tail) or b'"usage"' in chunk

    def feed(self, chunk: bytes) -> None:
        buf = self._tail + chunk if self._tail else chunk
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._tail = buf[-FIRST_EVENT_LIMIT:]
            return
        self._tail = buf[cut + 2 :][-FIRST_EVENT_LIMIT:]
        if b'"usage"' not in buf:
            return
        for ev in _events(buf[: cut + 2]):
            if b'"usage"' not in ev:
                continue
            data = _data_of(ev)
            if not data or data == b"[DONE]":
                continue
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                u = self.dialect.usage(doc)
                if u is not None and (u.prompt_tokens or u.completion_tokens):
                    self.usage = u
