"""The same pass-through as ``lean_passthrough.py``, written on keyrelay's own lean layer
(``keyrelay.http1``: the server's handler coroutine per request, the upstream client's pool):
what the layer itself costs above the hand-written reference, before any gateway feature.
With ``callbacks`` the handler is a plain function and the answer comes through
``UpstreamClient.send``'s callbacks (no task, no future per request); else it is a coroutine.

    python bench/http1_passthrough.py PORT UPSTREAM_BASE_URL [TOKEN] [callbacks]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

from keyrelay.http1.request import Request
from keyrelay.http1.response import UpstreamResponse
from keyrelay.http1.server import LeanServer
from keyrelay.http1.upstream import UpstreamClient
from keyrelay.http1.writer import ResponseWriter

KEYS = [f"Bearer sk-lean-{i:03d}-abcdefghijklmnopqrstuvwxyz".encode() for i in range(100)]
HOP = {b"authorization", b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
       b"accept-encoding", b"expect"}
DROP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"server", b"date"}


class Relay:
    """The answer, relayed from the upstream client's callbacks to the writer."""

    __slots__ = ("chunks", "stream", "w")

    def __init__(self, w: ResponseWriter) -> None:
        self.w = w
        self.stream = False
        self.chunks: list[bytes] = []

    def on_head(self, resp: UpstreamResponse) -> None:
        self.stream = (resp.headers.get("content-type") or "").startswith("text/event-stream")
        if self.stream:
            self.w.start(resp.status, [(n, v) for n, v in resp.raw_headers if n.lower() not in DROP])

    def on_data(self, resp: UpstreamResponse, data: bytes) -> None:
        if self.stream:
            self.w.write(data)
        else:
            self.chunks.append(data)

    def on_end(self, resp: UpstreamResponse) -> None:
        if self.stream:
            self.w.end()
        else:
            out = [(n, v) for n, v in resp.raw_headers if n.lower() not in DROP]
            self.w.send(resp.status, out, b"".join(self.chunks))
        resp.release()

    def on_error(self, resp: UpstreamResponse | None, exc: BaseException) -> None:
        if not self.w.started:
            self.w.send(502, [(b"Content-Type", b"text/plain")], b"upstream error")
        if resp is not None:
            resp.release()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    token = b"Bearer " + (sys.argv[3] if len(sys.argv) > 3 else "kr-bench-token-0123456789").encode()
    callbacks = sys.argv[4:5] == ["callbacks"]
    state = {"next": 0}

    def handle_now(req: Request, w: ResponseWriter) -> Awaitable[None] | None:
        if not req.complete:  # a body still coming: the coroutine waits for it
            return handle(req, w)
        auth = b""
        headers = []
        for name, value in req.raw_headers:
            low = name.lower()
            if low == b"authorization":
                auth = value
            elif low not in HOP:
                headers.append((name, value))
        if auth != token:
            w.send(401, [(b"Content-Type", b"application/json")], b'{"error":"bad token"}')
            return None
        i = state["next"]
        state["next"] = (i + 1) % len(KEYS)
        headers += ((b"Authorization", KEYS[i]), (b"Accept-Encoding", b"identity"))
        target = req.target.decode()
        path = target.removeprefix("/v1")
        client.send(req.method, upstream + path, headers, req.body, Relay(w))
        return None

    async def handle(req: Request, w: ResponseWriter) -> None:
        auth = b""
        headers = []
        for name, value in req.raw_headers:
            low = name.lower()
            if low == b"authorization":
                auth = value
            elif low not in HOP:
                headers.append((name, value))
        if auth != token:
            w.send(401, [(b"Content-Type", b"application/json")], b'{"error":"bad token"}')
            return
        body = await req.read()
        i = state["next"]
        state["next"] = (i + 1) % len(KEYS)
        headers += ((b"Authorization", KEYS[i]), (b"Accept-Encoding", b"identity"))
        target = req.target.decode()
        path = target.removeprefix("/v1")
        resp = await client.request(req.method, upstream + path, headers, body)
        try:
            out = [(n, v) for n, v in resp.raw_headers if n.lower() not in DROP]
            if (resp.headers.get("content-type") or "").startswith("text/event-stream"):
                w.start(resp.status, out)
                while chunk := await resp.next_chunk():
                    w.write(chunk)
                    await w.drain()
                w.end()
            else:
                w.send(resp.status, out, await resp.read())
        finally:
            resp.release()

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = UpstreamClient(trust_env=False)
    server = loop.run_until_complete(loop.create_server(LeanServer(handle_now if callbacks else handle), "127.0.0.1", port, backlog=4096))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
