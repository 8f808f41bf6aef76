"""Client connections, bounded one by one and in total, before any request reaches the proxy.

aiohttp's own parameters bound a request's head line by line (``max_line_size``,
``max_field_size``, ``max_headers``) and idle keep-alive connections (``keepalive_timeout``);
:class:`GuardedServer` adds what aiohttp has no parameter for:

- **a header timeout**: a connection has ``header_timeout`` seconds from its first byte (or from
  its opening) to send a whole request head, else it is closed — a client that trickles
  headers, or opens a socket and sends half a request line, holds nothing for long (the timer
  fires 10 % early, at most 1 s, so the bound holds as the client measures it);
- **a cap on a head's bytes** (``max_header_bytes``): beyond it the answer is 431 and the
  connection is closed, so 1,000 sockets sending endless headers hold at most that much each;
- **a cap on open connections** (``max_client_connections``): a connection beyond it gets a 503
  in the OpenAI error shape (after its request head, or within 2 s) and is closed; one warning
  line when the cap is reached, then one every 10 s while it lasts, with the count refused.

The normal path pays one attribute test and an addition per ``data_received`` (a request
head arrives whole in one read as a rule, so no timer is armed); a timer is armed once per
connection, at its opening.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from keyrelay.http1.limits import Refuser
from keyrelay.server.http import error_response

__all__ = ["GuardedServer", "raw_error"]

log = logging.getLogger("keyrelay.server")

_REPORT_EVERY = 10.0


def raw_error(status: int, reason: str, message: str, code: str, type_: str = "server_error",
              extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer (OpenAI's error shape) that closes the connection, for answers
    written straight to a transport."""
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


_HEAD_TOO_LARGE = raw_error(
    431, "Request Header Fields Too Large", "request headers too large", "headers_too_large", "invalid_request_error"
)


class _Guarded(RequestHandler):
    """aiohttp's request handler with a header timeout and a cap on a head's bytes."""

    __slots__ = ("_head", "_head_timer", "_last", "_limits")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager
        self._head = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._last = b""  #: the last bytes read while waiting for a head (to explain a parse error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(self._limits.head_wait, self._head_expired)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # a request is being handled: its body, or pipelined bytes
            super().data_received(data)
            return
        self._last = data
        end = data.find(b"\r\n\r\n")  # a head ending in this read: its size, before it is parsed and handled
        if end >= 0 and self._head + end + 4 > self._limits.max_header_bytes:
            self._refuse(_HEAD_TOO_LARGE)
            return
        super().data_received(data)
        waiter = self._waiter
        if waiter is None or waiter.done():  # a whole head arrived (with a body, maybe): the request is on its way
            self._head = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            return
        self._head += len(data)
        if self._head > self._limits.max_header_bytes:
            self._refuse(_HEAD_TOO_LARGE)
        elif self._head_timer is None:  # part of a head: it has header_timeout to come whole
            self._head_timer = self._loop.call_later(self._limits.head_wait, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        waiter = self._waiter
        waiting = waiter is not None and not waiter.done()
        # a head begun and not finished, or none at all since the opening (an idle keep-alive
        # connection between requests is keepalive_timeout's business)
        if waiting and (self._head > 0 or self._request_count == 0) and self.transport is not None:
            self._limits.timed_out += 1
            self.force_close()  # closes the transport

    def _refuse(self, answer: bytes) -> None:
        if self.transport is not None:
            self.transport.write(answer)
        self.force_close()  # closes the transport once the answer is written

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (bad request line, headers, framing): the client's
        fault, so one info line (no traceback) and a 4xx in the OpenAI shape; the connection closes."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        what = type(exc).__name__ if exc is not None else "BadRequest"
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already")
        if _bad_credentials(self._last):  # control characters in a token: a token refused, as any other
            log.info("malformed request refused status=401 error=%s (bad bytes in a credential header)", what)
            resp = error_response(401, "malformed credentials: a token is printable ASCII", code="invalid_api_key")
        elif what == "LineTooLong" and b"\r\n" in self._last.partition(b"\r\n\r\n")[0]:  # a header line, not the request line
            log.info("malformed request refused status=431 error=%s", what)
            resp = error_response(431, "request headers too large", code="headers_too_large")  # as the lean engine says
        else:
            log.info("malformed request refused status=%d error=%s", status, what)
            resp = error_response(status, f"malformed request ({what})", code="malformed_request")
        resp.force_close()
        return resp

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)


_CREDENTIAL_HEADERS = (b"authorization:", b"x-api-key:", b"api-key:", b"x-goog-api-key:", b"proxy-authorization:")


def _bad_credentials(head: bytes) -> bool:
    """Does ``head`` hold a credential header with bytes no token has (controls, non-ASCII)?"""
    for line in head.split(b"\r\n")[1:]:
        if not line:
            break
        if line.lower().startswith(_CREDENTIAL_HEADERS):
            value = line.partition(b":")[2].strip(b" \t")
            if any(c < 0x20 or c >= 0x7F for c in value):
                return True
    return False


class GuardedServer(web.Server):
    """:class:`aiohttp.web.Server` with the limits above."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        header_timeout: float,
        max_header_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        #: the timer fires a little early (10 %, at most 1 s), so that a connection is closed
        #: within ``header_timeout`` as its client measures it (the accept queue, a busy loop)
        self.head_wait = max(0.05, header_timeout - min(1.0, header_timeout * 0.1))
        self.max_header_bytes = max_header_bytes
        self.refused = 0  #: connections refused for the cap (since start)
        self.timed_out = 0  #: connections closed for a head not whole in time
        self._reported_at = -_REPORT_EVERY
        self._reported = 0

    def __call__(self) -> Any:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._reported_at >= _REPORT_EVERY:
                log.warning(
                    "client connections at the cap (max_client_connections=%d): new ones get 503 "
                    "(%d refused since the last report)",
                    self.max_connections, self.refused - self._reported,
                )
                self._reported_at, self._reported = now, self.refused
            return Refuser()  # http1/limits.py: one refusal for both engines
        return _Guarded(self, loop=self._loop, **self._kwargs)
