"""The bytes a connection has read since its current request began, for handing the connection
to another protocol (aiohttp's ``RequestHandler``) from that request on.

llhttp reports no offsets, so the connection keeps the chunks read since the parser was last
between two requests (a *run*): a request that begins a run begins at its first byte. One that
follows others in the same run (pipelining) is found by feeding a fresh parser prefixes of the
run and looking for the shortest one in which the requests before it are whole (a binary
search: rare, and only then). A run over :data:`RUN_CAP` bytes is not kept; a hand-over inside
it closes the connection after the answers before it (a pipelining client retries, RFC 9112
§9.3.2).
"""

from __future__ import annotations

import asyncio

import httptools
from aiohttp import web

__all__ = ["RUN_CAP", "Run", "hand_over", "offset_after"]

RUN_CAP = 1 << 20


class Run:
    __slots__ = ("before", "chunks", "done", "handover", "lost", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = 0  #: requests whole in this run
        self.lost = False
        self.handover: object | None = None  #: the request to hand over, once its turn comes
        self.before = 0  #: requests of the run before it

    def received(self, data: bytes, between: bool) -> None:
        if between:
            self.chunks, self.size, self.done, self.lost = [data], len(data), 0, False
        elif not self.lost:
            self.chunks.append(data)
            self.size += len(data)
            if self.size > RUN_CAP:
                self.chunks, self.lost = [], True

    def completed(self) -> None:
        self.done += 1

    def hand(self, req: object) -> None:
        self.handover = req
        self.before = self.done

    def keep(self, data: bytes) -> None:
        """Bytes read after the hand-over was decided (the connection is paused meanwhile)."""
        if not self.lost:
            self.chunks.append(data)

    def raw(self) -> bytes | None:
        """The bytes from the hand-over request's first on (None: not kept)."""
        if self.lost:
            return None
        data = b"".join(self.chunks)
        if self.before == 0:
            return data
        at = offset_after(data, self.before)
        return None if at is None else data[at:]


class _Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def on_message_complete(self) -> None:
        self.n += 1


def _whole(data: bytes, k: int) -> bool:
    count = _Count()
    try:
        httptools.HttpRequestParser(count).feed_data(data)
    except httptools.HttpParserError:
        pass
    return count.n >= k


def offset_after(data: bytes, k: int) -> int | None:
    """The offset in ``data`` (requests back to back) where its first ``k`` requests end."""
    if not _whole(data, k):
        return None
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if _whole(data[:mid], k):
            hi = mid
        else:
            lo = mid + 1
    return lo


def hand_over(transport: asyncio.Transport, raw: bytes, server: web.Server, paused: bool) -> None:
    """Make ``transport`` a connection of ``server`` (a new ``RequestHandler``), which reads
    ``raw`` first, as if it had come from the socket."""
    proto = server()
    transport.set_protocol(proto)
    proto.connection_made(transport)
    if raw:
        proto.data_received(raw)
    if paused:
        transport.resume_reading()
