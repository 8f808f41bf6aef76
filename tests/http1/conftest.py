"""Fixtures of the lean HTTP layer's tests, all on 127.0.0.1: a lean server (with an aiohttp
server for the paths that are no pool's), the handler its tests talk to and raw-socket helpers;
scripted upstreams and an upstream client for the client's tests."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from keyrelay.http1.errors import BodyTooLarge
from keyrelay.http1.request import Request
from keyrelay.http1.server import LeanServer, Limits
from keyrelay.http1.upstream import UpstreamClient
from keyrelay.http1.writer import ResponseWriter

TOKEN = b"Bearer good"


class Running:
    def __init__(self, server: LeanServer, port: int) -> None:
        self.server = server
        self.port = port
        self.cancelled = 0
        self.seen: list[Request] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened.append(w)
        return r, w

    async def exchange(self, data: bytes, seconds: float = 3.0) -> bytes:
        """Send ``data``, read until the server closes (or ``seconds``)."""
        r, w = await self.open()
        w.write(data)
        return (await read_until_closed(r, seconds))[1]


async def read_until_closed(r: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    got = b""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            chunk = await asyncio.wait_for(r.read(65536), end - time.monotonic())
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionError:
        return True, got
    return False, got


def statuses(raw: bytes) -> list[int]:
    """The statuses of the answers in ``raw`` (their bodies are short JSON)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def handler(req: Request, w: ResponseWriter) -> None:
    """The pool route of these tests: a token, then an echo of what came."""
    running: Running = req._conn.server.running  # type: ignore[attr-defined]
    running.seen.append(req)
    if req.headers.get("authorization", "").encode() != TOKEN:
        w.send(401, [(b"Content-Type", b"application/json")], b'{"error":"bad token"}')
        return
    if req.path == "/v1/slow":
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            running.cancelled += 1
            raise
    if req.path == "/v1/boom":
        raise RuntimeError("a bug")
    try:
        body = await req.read(limit=1000 if req.path == "/v1/small" else None)
    except BodyTooLarge:
        if req.path == "/v1/raw":
            raise  # the server answers it
        w.send(413, [(b"Content-Type", b"application/json")], b'{"error":"too large, in our shape"}')
        return
    if req.path == "/v1/stream":
        w.start(200, [(b"Content-Type", b"text/event-stream")])
        for i in range(3):
            w.write(b"data: %d\n\n" % i)
            await w.drain()
        w.end()
        return
    echo = orjson.dumps({"method": req.method, "path": req.path, "query": req.query, "body": body.decode(),
                         "remote": req.remote})
    w.send(200, [(b"Content-Type", b"application/json")], echo)


async def _admin(request: web.Request) -> web.Response:
    return web.json_response({"aiohttp": request.path, "body": (await request.read()).decode()})


@pytest.fixture
async def lean() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    made: list[tuple[Running, asyncio.Server, web.AppRunner]] = []

    async def make(**limits: Any) -> Running:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _admin)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        server = LeanServer(handler, Limits(**limits), route=lambda t: t.startswith(b"/v1/"), fallback=runner.server)
        srv = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
        running = Running(server, srv.sockets[0].getsockname()[1])
        server.running = running  # type: ignore[attr-defined]
        made.append((running, srv, runner))
        return running

    yield make
    for running, srv, runner in made:
        for w in running.opened:
            w.close()
        srv.close()
        await running.server.shutdown(0.1)
        await runner.cleanup()


def post(path: str, body: bytes = b"{}", extra: str = "", token: bytes = TOKEN) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def answers(r: asyncio.StreamReader, n: int) -> list[tuple[int, bytes]]:
    """``n`` Content-Length answers: (status, body)."""
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        out.append((int(head.split(b" ")[1]), await asyncio.wait_for(r.readexactly(length), 3)))
    return out


# -- scripted upstreams, for the upstream client's tests ------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Upstream:
    """A raw upstream: each connection runs ``script(reader, writer, connection number)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _run(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(r, w, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        req = head + await r.readexactly(length)
        self.requests.append(req)
        return req


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Script], Awaitable[Upstream]]]:
    made: list[Upstream] = []

    async def make(script: Script) -> Upstream:
        u = Upstream(script)
        await u.start()
        made.append(u)
        return u

    yield make
    for u in made:
        assert u.server is not None
        u.server.close()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(connect_timeout=2.0, read_timeout=2.0, trust_env=False)
    yield c
    await c.close()


def serve(*answers: bytes, close: bool = False) -> Callable[[Upstream], Script]:
    """A script answering the requests of one connection with ``answers`` in turn."""

    def bind(u: Upstream) -> Script:
        async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
            for a in answers:
                await u.read_request(r)
                w.write(a)
                await w.drain()
            if not close:
                await r.read()  # hold the connection open until the client goes

        return script

    return bind


async def scripted(upstream, bind: Callable[[Upstream], Script]) -> Upstream:  # type: ignore[no-untyped-def]
    holder: list[Upstream] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await bind(holder[0])(r, w, n)

    u = await upstream(script)
    holder.append(u)
    return u


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
