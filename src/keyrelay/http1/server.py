"""A lean HTTP/1.1 server: an asyncio protocol per connection over ``httptools``' request parser.

Requests are parsed by callbacks; each is handed to ``handler(request, writer)`` once its head
is whole (its body, when small, has come by the time the handler runs); pipelined requests are
answered in order, one at a time. The bounds are the gateway's (``[server]`` settings):

- a head must be whole within ``header_timeout`` of its first byte (or of the connection's
  opening); one timer per connection, re-armed only when it fires, also closes connections
  idle for ``keepalive_timeout`` between requests;
- a head over ``max_header_bytes`` (or a header line over ``max_line_size``, more than
  ``max_headers`` lines) gets 431, a request target over ``max_line_size`` 414, a body declared
  or grown over ``max_body`` 413 (the handler's ``read()`` raises it), and the connection closes;
- malformed requests (llhttp is strict: CL+TE, duplicate Content-Length, bad chunked framing,
  bare LF, invalid methods and targets) get 400 and a close — never a 5xx; control characters
  in a credential header make it 401, as on the aiohttp server;
- connections beyond ``max_connections`` get 503 and a close (:class:`~keyrelay.http1.limits.Refuser`).

What ``route`` says of a request's target is kept as ``request.routed`` for the handler (the
gateway's pool and paths: not looked up twice). Paths it refuses (the admin API, /metrics, the
dashboard…: a false answer) are handed to an
aiohttp :class:`~aiohttp.web.Server`: the connection becomes its ``RequestHandler`` protocol and
gets the bytes read since that request's first byte (:mod:`keyrelay.http1.handover`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from keyrelay.http1.connection import Connection
from keyrelay.http1.limits import BodyBudget, Cap, Limits, Refuser
from keyrelay.http1.request import Request
from keyrelay.http1.writer import ResponseWriter

__all__ = ["BodyBudget", "Connection", "Handler", "LeanServer", "Limits"]

#: called once a request's head is whole (and its body, if it came in the same read); it may
#: answer by itself (now, or later from callbacks) and return None, or return a coroutine that
#: the server runs in a task
Handler = Callable[[Request, ResponseWriter], Awaitable[None] | None]


class LeanServer:
    """The protocol factory (``loop.create_server(server, …)``) and what its connections share."""

    def __init__(self, handler: Handler, limits: Limits | None = None, *,
                 route: Callable[[bytes], object] | None = None, fallback: web.Server | None = None) -> None:
        self.handler = handler
        self.limits = limits = limits or Limits()
        self.route = route
        self.fallback = fallback
        self.budget = BodyBudget(limits.max_body_memory)
        self.connections: set[Connection] = set()
        #: the header timer fires a little early (10 %, at most 1 s): the bound holds as a client measures it
        self.head_wait = max(0.05, limits.header_timeout - min(1.0, limits.header_timeout * 0.1))
        self.cap = Cap(limits.max_connections)
        self.timed_out = 0

    def __call__(self) -> asyncio.Protocol:
        handed = len(self.fallback.connections) if self.fallback is not None else 0
        if not self.cap.admit(len(self.connections) + handed):
            return Refuser()
        return Connection(self)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Close idle connections at once, the others once their answer is over (or after ``timeout``)."""
        end = time.monotonic() + timeout
        while self.connections and time.monotonic() < end:
            for conn in list(self.connections):
                if not conn.queue:
                    conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
