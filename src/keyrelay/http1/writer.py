"""Answers on a lean server connection: a one-shot :meth:`ResponseWriter.send` (head and body in
one write) or :meth:`~ResponseWriter.start` / :meth:`~ResponseWriter.write` /
:meth:`~ResponseWriter.end` (chunked, or Content-Length when the length is given), and the
whole error answers the server writes itself (OpenAI's error shape)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from keyrelay.http1.answers import date_line, status_line

__all__ = ["HeaderLines", "ResponseWriter"]


class _Request(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def keep_alive(self) -> bool: ...
    @property
    def complete(self) -> bool: ...


class _Connection(Protocol):
    """What a writer needs of its connection (``connection.Connection``)."""

    on_drained: Callable[[], None] | None

    @property
    def write_paused(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def answered(self, req: Any, close: bool) -> None: ...


#: an answer's header lines: ``(name, value)`` pairs, or the lines already joined
#: (``b"Name: value\r\n"`` each)
HeaderLines = Iterable[tuple[bytes, bytes]] | bytes

_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"


class ResponseWriter:
    """The answer to one request. Header values must hold no CR or LF (values parsed from an
    upstream's answer never do); headers may be given as pairs or as their lines, joined."""

    __slots__ = ("_chunked", "_conn", "_held", "_req", "close_after", "ended", "started", "status")

    def __init__(self, conn: _Connection, req: _Request) -> None:
        self._conn = conn
        self._req = req
        self.started = False
        self.ended = False
        self._chunked = False
        self._held: list[bytes] | None = None  #: what :meth:`hold` gathers
        self.status = 0
        #: close the connection after this answer (set it before start/send)
        self.close_after = not req.keep_alive

    def _head(self, status: int, headers: HeaderLines, framing: bytes) -> bytes:
        if self.started:
            raise RuntimeError("the answer was started already")
        self.started = True
        self.status = status
        if not self._req.complete:  # a body left unread (a refusal before it came): the connection cannot go on
            self.close_after = True
        lines = headers if isinstance(headers, bytes) else b"".join([b"%s: %s\r\n" % h for h in headers])
        return b"".join((status_line(status), date_line(), lines, framing, _CLOSE if self.close_after else b"", b"\r\n"))

    def send(self, status: int, headers: HeaderLines, body: bytes = b"") -> None:
        """The whole answer in one write (Content-Length framing)."""
        head = self._head(status, headers, b"Content-Length: %d\r\n" % len(body))
        self._out(head if self._req.method == "HEAD" else head + body)
        if self._held is not None:
            self.flush()
        self.ended = True
        self._conn.answered(self._req, self.close_after)

    def start(self, status: int, headers: HeaderLines, length: int | None = None, first: bytes = b"") -> None:
        """The head; the body follows by :meth:`write` (chunked unless ``length`` is given).
        ``first``: the body's first bytes, if at hand (one write with the head)."""
        if length is not None or status in (204, 304) or self._req.method == "HEAD":
            framing = b"Content-Length: %d\r\n" % length if length is not None else b""
        elif self._req.version == 0:  # HTTP/1.0 has no chunked framing: the body ends with the connection
            self.close_after = True
            framing = b""
        else:
            self._chunked = True
            framing = _CHUNKED
        head = self._head(status, headers, framing)
        if first and self._req.method != "HEAD":
            head += b"%x\r\n%s\r\n" % (len(first), first) if self._chunked else first
        self._out(head)

    def write(self, data: bytes) -> None:
        if not self.started or self.ended:
            raise RuntimeError("write() before start() or after end()")
        if not data or self._req.method == "HEAD":
            return
        self._out(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def hold(self) -> None:
        """Gather what is written from now on into one write, made by :meth:`flush` or :meth:`end`
        (a driver holds what one read of the upstream brings: often a whole short answer)."""
        if self._held is None:
            self._held = []

    def flush(self) -> None:
        """Write what :meth:`hold` gathered, and write as it comes again."""
        held, self._held = self._held, None
        if held:
            self._conn.write(b"".join(held))

    def _out(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._conn.write(data)

    async def drain(self) -> None:
        """Wait while the client reads slower than we write."""
        await self._conn.drain()

    @property
    def paused(self) -> bool:
        """Is the client reading slower than we write (the transport's buffer over its high mark)?"""
        return self._conn.write_paused

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the client has caught up (the callback form of :meth:`drain`)."""
        self._conn.on_drained = callback

    def end(self) -> None:
        if self.ended:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        if self._held is not None:
            if self._chunked:
                self._held.append(b"0\r\n\r\n")
            self.flush()
        elif self._chunked:
            self._conn.write(b"0\r\n\r\n")
        self._finish()

    def _finish(self) -> None:
        self.ended = True
        self._conn.answered(self._req, self.close_after)
