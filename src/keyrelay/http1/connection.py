"""One client connection of the lean server (:mod:`keyrelay.http1.server`): the parser's
callbacks, the queue of pipelined requests, the connection's one timer, and the hand-over."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from keyrelay.http1.answers import error_answer
from keyrelay.http1.errors import BodyTooLarge, MalformedBody
from keyrelay.http1.handling import raised, run_handler
from keyrelay.http1.handover import Run, hand_over
from keyrelay.http1.limits import ServerLike, malformed_answer
from keyrelay.http1.request import Request
from keyrelay.http1.writer import ResponseWriter

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Connection"]

log = logging.getLogger("keyrelay.server")

_PIPELINE_DEPTH = 16  #: requests queued on one connection before it stops being read


class _Stop(Exception):
    """Raised in a parser callback: nothing more is parsed on this connection."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer


class Connection(asyncio.Protocol):
    __slots__ = (
        "_drain", "_loop", "cur", "due", "final", "head_bytes", "head_since", "head_size", "idle_since", "limits", "on_drained",
        "parser", "pending", "queue", "read_paused", "remote", "run", "seen", "server", "stopped", "task", "timer", "transport",
        "write_paused",
    )

    def __init__(self, server: ServerLike) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.remote = "-"
        self.cur: Request | None = None  #: the request being parsed
        self.queue: deque[Request] = deque()  #: heads whole, answered in order (the first is in flight)
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.due = math.inf
        self.head_since = self.idle_since = self._loop.time()
        self.head_bytes = 0  # bytes read while a head was not whole yet (a slow head's clock)
        self.head_size = 0  # the head's header lines so far, however they arrived
        self.seen = 0  #: requests begun
        self.stopped = False  #: the parser stopped (an error, a close asked for, a hand-over)
        self.read_paused = self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.run = Run()
        self.on_drained: Callable[[], None] | None = None  #: ResponseWriter.when_drained
        self.pending: Request | None = None  #: to dispatch once the current read is parsed
        self.final = b""  #: an error answer to write, and close, once the requests before it are answered

    # -- the transport's side --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else "-"
        self.server.connections.add(self)
        self._arm(self.head_since + self.server.head_wait)

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            if self.run.handover is not None:
                self.run.keep(data)
            return
        self.run.received(data, self.cur is None)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            stop = exc.__context__
            if not isinstance(stop, _Stop):
                log.error("lean server: a parser callback failed", exc_info=stop)
                stop = _Stop(error_answer(400, "malformed request", "malformed_request"))
            self._stop(stop.answer)
        except httptools.HttpParserUpgrade:
            self._stop(error_answer(400, "protocol upgrades are not supported here", "malformed_request"))
        except httptools.HttpParserError as exc:
            self._malformed(exc, data)
        pending = self.pending
        if pending is not None:
            self.pending = None
            self._dispatch(pending)
        if self.stopped and self.transport is None:
            return
        cur = self.cur
        if cur is not None and not cur.method and not self.stopped:  # a head begun, not whole yet
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._stop(error_answer(431, "request headers too large", "headers_too_large"))
            else:
                self._arm(self.head_since + self.server.head_wait)
        if self.run.handover is not None and not self.queue:
            self._hand_over()

    def eof_received(self) -> bool:
        """The client closed its side: it is gone (as on aiohttp's server, its handler is cancelled)."""
        self.stopped = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.stopped = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.cur is not None:
            self.cur.cut()
        for req in self.queue:
            req.aborted = True
            req.cut()
            self.server.budget.give(req.reserved)
            req.reserved = 0
        if self.queue and self.queue[0].on_abort is not None:
            try:
                self.queue[0].on_abort()  # a handler answering from callbacks: the client is gone
            except Exception:  # one request's bug must not break the connection's end
                log.exception("on_abort failed")
        if self.task is not None:
            self.task.cancel()  # the client is gone: its handler stops (and releases its upstream)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        callback, self.on_drained = self.on_drained, None
        if callback is not None:
            callback()

    # -- parser callbacks --

    def on_message_begin(self) -> None:
        self.cur = Request(self, self.remote)
        self.head_since = self._loop.time()
        self.head_bytes = self.head_size = 0
        self.seen += 1

    def on_url(self, url: bytes) -> None:
        cur = self.cur
        assert cur is not None
        cur.target += url
        if len(cur.target) > self.limits.max_line_size:
            raise _Stop(error_answer(414, "request target too long", "uri_too_long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        cur = self.cur
        assert cur is not None
        cur.raw_headers.append((name, value))
        n = len(name)
        line = n + len(value)
        self.head_size += line + 4  # ": " and CRLF
        limits = self.limits
        if line > limits.max_line_size or self.head_size > limits.max_header_bytes:
            raise _Stop(error_answer(431, "request headers too large", "headers_too_large"))
        if n == 14 and name.lower() == b"content-length":
            cur.content_length = int(value)  # llhttp checked it: digits, once
        elif n == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            cur.expect_continue = True

    def on_headers_complete(self) -> None:
        cur = self.cur
        assert cur is not None
        parser = self.parser
        cur.method = parser.get_method().decode("ascii")
        cur.version = 0 if parser.get_http_version() == "1.0" else 1
        cur.keep_alive = parser.should_keep_alive()
        server = self.server
        if len(cur.raw_headers) > server.limits.max_headers:  # (all of them within max_header_bytes)
            raise _Stop(error_answer(431, "request headers too large", "headers_too_large"))
        if server.fallback is not None and server.route is not None:
            routed = cur.routed = server.route(cur.target)
            if not routed:
                self.run.hand(cur)
                raise _Stop
        if cur.content_length > server.limits.max_body:
            cur.fail(BodyTooLarge(f"request body larger than the limit of {server.limits.max_body} bytes"))
        self.queue.append(cur)
        if len(self.queue) == 1:
            self.pending = cur  # dispatched once this read is parsed: its body came with it, as a rule
        elif len(self.queue) >= _PIPELINE_DEPTH:
            self._pause()
        if cur.error is not None:
            raise _Stop  # its body is not read: the connection closes after its answer

    def on_body(self, body: bytes) -> None:
        cur = self.cur
        assert cur is not None
        cur.feed(body)
        if cur.size > self.limits.max_body:
            cur.fail(BodyTooLarge(f"request body larger than the limit of {self.limits.max_body} bytes"))
            raise _Stop
        if cur.size > 65536 and not cur.waiting and not self.read_paused:
            self._pause()  # nobody reads it yet: the client waits (read() resumes)

    def on_message_complete(self) -> None:
        cur = self.cur
        assert cur is not None
        self.cur = None
        self.run.completed()
        cur.done()
        if not cur.keep_alive:
            raise _Stop  # nothing after a request that closes the connection

    # -- requests and answers --

    def _dispatch(self, req: Request) -> None:
        """Call the handler; a coroutine it returns runs in a task (a plain function answers by
        itself, now or from callbacks: no task at all)."""
        w = ResponseWriter(self, req)
        try:
            result = self.server.handler(req, w)
        except Exception as exc:  # noqa: BLE001 - answered as a coroutine's failure is (handling.py)
            result = raised(exc)
        if result is not None:
            self.task = self._loop.create_task(run_handler(self, req, w, result))

    def answered(self, req: Request, close: bool) -> None:
        """The answer to ``req`` (the first in the queue) is written whole."""
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self.task = None
        if req.reserved:
            self.server.budget.give(req.reserved)
            req.reserved = 0
        if close or not req.complete:
            if self.final and not self.queue:
                self.write(self.final)
            self.close()
            return
        if self.queue:
            self._dispatch(self.queue[0])
            if self.read_paused and len(self.queue) < _PIPELINE_DEPTH // 2 and not self.stopped:
                self._resume()
        elif self.run.handover is not None:
            self._hand_over()
        elif self.stopped:  # the parser stopped: a close asked for, or an error answer after these
            if self.final:
                self.write(self.final)
            self.close()
        else:
            idle = self.idle_since = self._loop.time()
            if self.timer is None or idle + self.limits.keepalive_timeout < self.due:
                self._arm(idle + self.limits.keepalive_timeout)
            if self.read_paused and self.cur is None:
                self._resume()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self.write_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def reading(self, on: bool) -> None:
        """A handler waits for a body (``on``): the connection must be read."""
        if on and self.read_paused and self.run.handover is None:
            self._resume()

    def close(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()  # once what was written is sent

    # -- internals --

    def _pause(self) -> None:
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _stop(self, answer: bytes) -> None:
        """Parse nothing more; ``answer`` (a whole error answer) goes out after those in flight."""
        self.stopped = True
        if self.cur is not None and self.cur not in self.queue:
            self.cur = None
        if self.run.handover is not None:
            self._pause()
            return
        if not self.queue:
            if answer:
                self.write(answer)
            self.close()
            return
        self.final = answer  # after the answers to the requests before it
        self._pause()

    def _malformed(self, exc: Exception, data: bytes) -> None:
        answer = malformed_answer(exc, data)
        cur = self.cur
        if cur is not None and cur.method and not cur.complete:  # its head was whole: a body badly framed
            cur.fail(MalformedBody(f"malformed request body ({type(exc).__name__})"))
            answer = b""
        self._stop(answer)

    def _hand_over(self) -> None:
        raw, transport = self.run.raw(), self.transport
        if raw is None or self.server.fallback is None or transport is None:
            self.close()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.connections.discard(self)
        self.transport = None
        hand_over(transport, raw, self.server.fallback, self.read_paused)

    def _tick(self) -> None:
        """The connection's one timer: the header timeout, then the keep-alive timeout."""
        self.timer = None
        self.due = math.inf
        if self.transport is None:
            return
        now = self._loop.time()
        if self.queue or self.run.handover is not None:  # busy: the handler's bounds apply
            due = now + self.server.head_wait
        elif self.cur is not None or self.seen == 0:  # a head awaited since the opening, or begun
            due = self.head_since + self.server.head_wait
            if now >= due:
                self.server.timed_out += 1
                self.close()
                return
        else:
            due = self.idle_since + self.limits.keepalive_timeout
            if now >= due:
                self.close()
                return
        self._arm(due)

    def _arm(self, due: float) -> None:
        """The timer fires at ``due`` at the latest (moved only to come earlier: rare)."""
        if self.timer is None or due < self.due:
            if self.timer is not None:
                self.timer.cancel()
            self.due = due
            self.timer = self._loop.call_at(due, self._tick)
