"""One pool request on the lean engine (``server/lean.py``), driven by the upstream client's
callbacks: its attempts (``runtime/flow.py``), its answer through the response writer, its
access line and count."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import unquote

from keyrelay.core.model import Outcome
from keyrelay.http1.request import Request
from keyrelay.http1.response import UpstreamResponse
from keyrelay.http1.upstream import UpstreamClient
from keyrelay.http1.writer import ResponseWriter
from keyrelay.logs import access_log
from keyrelay.runtime.flow import MORE, PASS, READ, Exchange, Reply, Stream, Want
from keyrelay.runtime.pool import KeyPool
from keyrelay.server.proxy import Proxy

__all__ = ["Relay", "header_lines", "logged_path"]

_OUTCOME_NAMES = {o: o.value for o in Outcome}  #: (an enum's ``.value`` is two Python calls)


class Gateway(Protocol):
    """What a relay needs of its gateway (``server/lean.py``'s ``LeanGateway``)."""

    client: UpstreamClient
    proxy: Proxy


def header_lines(headers: dict[str, str]) -> bytes:
    """The flow's answer headers as the writer's header lines (one encode for all of them)."""
    return "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1")


def logged_path(req: Request) -> str:
    """The path as the access log shows it: percent-decoded, as aiohttp's ``request.path`` is
    (the log escapes what must be; docs/design.md "Secrets")."""
    path = req.routed[1] if req.routed is not None else req.path
    return unquote(path) if "%" in path else path


class Relay:
    """One request's attempts, driven by the upstream client's callbacks (its ``Sink``)."""

    __slots__ = ("body", "chunks", "client", "ex", "finished", "forward", "gw", "how", "pool", "req", "resp", "started",
                 "stream", "w", "waiter")

    def __init__(self, gw: Gateway, req: Request, w: ResponseWriter, ex: Exchange, pool: KeyPool, client: str,
                 body: bytes, started: float, forward: dict[bytes, bytes]) -> None:
        self.gw, self.req, self.w, self.ex, self.pool = gw, req, w, ex, pool
        self.client, self.body, self.started = client, body, started
        self.forward = forward  #: the client's headers that go upstream (the key's are the exchange's)
        self.how: Want = READ
        self.chunks: list[bytes] = []
        self.stream: Stream | None = None
        self.resp: UpstreamResponse | None = None
        self.finished = False
        self.waiter: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Until the request is over (for a coroutine handler that started the relay)."""
        if not self.finished:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def go(self) -> None:
        self.req.on_abort = self.gone
        reply = self.ex.start()
        if reply is not None:
            self.reply(reply)
        else:
            self.attempt()

    def attempt(self) -> None:
        retry = self.pool.settings.retry
        self.chunks = []
        self.gw.client.send(self.req.method, self.ex.url, self.forward, self.body, self, more=self.ex.headers,
                            read_timeout=retry.read_timeout, connect_timeout=retry.connect_timeout)

    def next(self, reply: Reply | None) -> None:
        if reply is None:
            self.attempt()
        else:
            self.reply(reply)

    # -- the upstream client's callbacks --

    def on_head(self, resp: UpstreamResponse) -> None:
        if self.finished:  # the client hung up while this attempt was connecting
            resp.release()
            return
        self.resp = resp
        how = self.how = self.ex.head(resp.status, resp.headers)
        if how is PASS:
            self.start_stream(self.ex.passthrough(), resp)

    def on_data(self, resp: UpstreamResponse, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            out = stream.chunk(data)
            if out:
                self.w.write(out)
                if self.w.paused:  # the client reads slower than the upstream sends
                    resp.pause()
                    self.w.when_drained(resp.resume)
        elif self.how is READ:
            self.chunks.append(data)
        else:
            self.peeked(resp, self.ex.peek(data))

    def on_end(self, resp: UpstreamResponse) -> None:
        stream = self.stream
        if stream is not None:
            self.end_stream(stream.end())
            resp.release()
        elif self.how is READ:
            resp.release()
            self.next(self.ex.body(b"".join(self.chunks)))
        else:
            self.peeked(resp, self.ex.peek(b""))
            stream = self.stream
            if stream is not None:  # the answer ended before its first event was whole: relayed, and over
                self.end_stream(stream.end())
                resp.release()

    def on_error(self, resp: UpstreamResponse | None, exc: BaseException) -> None:
        if resp is not None:
            resp.release()
        self.resp = None
        stream = self.stream
        if self.finished or self.req.aborted:
            return
        if stream is not None:
            self.end_stream(stream.cut(exc))
        else:
            self.next(self.ex.failed(exc, broke_off=resp is not None and resp.head_done))

    # -- the flow's steps --

    def peeked(self, resp: UpstreamResponse, step: Reply | Stream | Want | None) -> None:
        if step is MORE:
            return
        if isinstance(step, Stream):
            self.start_stream(step, resp)
            return
        resp.release()  # not read whole: its connection is closed
        self.resp = None
        self.next(step if isinstance(step, Reply) else None)

    def start_stream(self, stream: Stream, resp: UpstreamResponse) -> None:
        self.stream = stream
        w = self.w
        w.hold()  # the rest of this upstream read (often the whole of a short answer) goes out with the head
        resp.after_read = w.flush
        w.start(stream.status, header_lines(stream.headers), first=stream.first)

    def end_stream(self, tail: bytes) -> None:
        if tail:
            self.w.write(tail)
        self.w.end()
        self.done(self.stream.status if self.stream is not None else 200)

    def reply(self, reply: Reply) -> None:
        if self.pool.writing:  # recorded outcomes are written before the caller hears of them
            asyncio.get_running_loop().create_task(self._settled(reply))
            return
        self.w.send(reply.status, header_lines(reply.headers), reply.body)
        self.done(reply.status)

    async def _settled(self, reply: Reply) -> None:
        await self.pool.settle()
        if not self.req.aborted:
            self.w.send(reply.status, header_lines(reply.headers), reply.body)
        self.done(reply.status)

    def gone(self) -> None:
        """The client hung up before the answer ended."""
        resp, self.resp = self.resp, None
        stream = self.stream
        if stream is not None:
            ok = stream.gone()
            self.done(200 if ok else 499, "ok" if ok else "client_gone")
        else:
            self.ex.abandon()
            self.done(499, "client_gone")
        if resp is not None:
            resp.release()

    def done(self, status: int, outcome: str | None = None) -> None:
        """The request is over: its access line and its count, once."""
        if self.finished:
            return
        self.finished = True
        self.req.on_abort = None  # no cycle left: the request's objects go by reference counting, not the collector
        self.resp = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        attempts = self.ex.attempts
        if outcome is None:
            outcome = _OUTCOME_NAMES[attempts.last.outcome] if attempts.last else "no_key"
        if access_log.enabled:
            access_log.request(self.pool.name, attempts.last_lease, self.req.method, logged_path(self.req), status, outcome,
                               attempts.count, self.started, self.client)
        count = self.gw.proxy.count
        if count is not None:
            end = time.perf_counter()
            first = attempts.first_byte or end
            count((self.pool.name, outcome or "error", status, end - self.started, first - self.started))
