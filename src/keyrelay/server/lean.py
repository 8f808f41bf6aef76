"""The gateway on the lean HTTP layer (``keyrelay.http1``; ``[server] engine = "lean"``): the
relay flow (``runtime/flow.py``) driven from callbacks.

A pool request whose body came with its head and whose token is known (the usual case) runs
with no coroutine at all: the server calls :meth:`LeanGateway.handle`, which checks the request
as :meth:`Proxy.handle <keyrelay.server.proxy.Proxy.handle>` does and starts a
:class:`~keyrelay.server.lean_relay.Relay`; the upstream client's callbacks
(``UpstreamClient.send``) feed the flow its answers, and the flow's replies and streams go out
through the response writer. A token to look up in the store, a body still arriving, or
outcomes still being written (``pool.writing``) take a coroutine for that step only. Every
other path (``/healthz``, ``/readyz``, ``/metrics``, ``/admin``, unknown ones) is answered by
the aiohttp server, to which the connection is handed over (``http1/handover.py``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from keyrelay.http1.errors import BodyError, BodyTooLarge, BodyTooSlow, Busy, MalformedBody
from keyrelay.http1.headers import RawHeaders
from keyrelay.http1.request import Request
from keyrelay.http1.server import LeanServer, Limits
from keyrelay.http1.upstream import UpstreamClient
from keyrelay.http1.writer import ResponseWriter
from keyrelay.logs import access_log
from keyrelay.runtime.flow import Exchange
from keyrelay.runtime.pool import KeyPool
from keyrelay.server.auth import Caller as Client
from keyrelay.server.bodies import BodyTooLarge as _AioTooLarge
from keyrelay.server.bodies import BodyTooSlow as _AioTooSlow
from keyrelay.server.bodies import Busy as _AioBusy
from keyrelay.server.bodies import MalformedBody as _AioMalformed
from keyrelay.server.bodies import refusal
from keyrelay.server.http import error_response, join_upstream, raw_forwarder, strip_query_param
from keyrelay.server.lean_relay import Relay, header_lines, logged_path
from keyrelay.server.paths import path_problem
from keyrelay.server.proxy import Proxy

__all__ = ["LeanGateway", "LeanSite"]

#: what :meth:`LeanGateway.route` found for a request: its pool, path, path under the pool, query
Routed = tuple[KeyPool, str, str, str]
#: the aiohttp driver's refusals (bodies.py, which shapes them in the pool's dialect) for ours
_REFUSAL = {BodyTooLarge: _AioTooLarge, BodyTooSlow: _AioTooSlow, Busy: _AioBusy, MalformedBody: _AioMalformed}


def _send_response(w: ResponseWriter, resp: web.Response) -> None:
    """An aiohttp-shaped error answer (``error_response``) through the lean writer."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    w.send(resp.status, header_lines({k: v for k, v in resp.headers.items() if k.lower() != "content-length"}), body)


class LeanGateway:
    """The lean server's handler (:meth:`handle`) and route predicate (:meth:`route`)."""

    def __init__(self, proxy: Proxy, client: UpstreamClient) -> None:
        self.proxy = proxy
        self.runtime = proxy.runtime
        self.client = client
        #: per pool: the client's header lines that may go upstream (``server/http.py``), as bytes
        self._forwarders: dict[str, Callable[[RawHeaders], dict[bytes, bytes]]] = {}

    def route(self, target: bytes) -> Routed | None:
        """Is ``target`` a pool's (answered here: its pool, path, the path under the pool and the
        query, which the server keeps for :meth:`handle`)? ``None``: the aiohttp server answers it."""
        path, _, query = target.decode("latin-1").partition("?")
        pool, rest = self.proxy._route(path)
        return None if pool is None else (pool, path, rest, query)

    def handle(self, req: Request, w: ResponseWriter) -> Awaitable[None] | None:
        started = time.perf_counter()
        routed: Routed | None = req.routed if req.routed is not None else self.route(req.target)
        if routed is None:  # the route said otherwise: not reached
            _send_response(w, error_response(404, f"no pool serves {req.path!r}", code="unknown_pool"))
            return None
        req.routed = routed
        pool, path, rest, query = routed
        dialect = pool.dialect
        if ("/." in path or "%" in path or "\\" in path or not path.isprintable()) and (
            problem := path_problem(path)
        ) is not None:
            resp = error_response(400, f"invalid path: {problem}", code="invalid_path", dialect=dialect)
            self._refused(req, w, pool.name, "-", resp, "bad_path", started)
            return None
        token = dialect.client_token(req.headers, query)
        client = self.proxy.tokens.recognise(token)
        if client is None or not req.complete:
            return self._slow(req, w, pool, rest, query, token, client, started)
        self._accepted(req, w, pool, rest, query, client, req.body, started)
        return None

    async def _slow(self, req: Request, w: ResponseWriter, pool: KeyPool, rest: str, query: str, token: str,
                    client: Client | None, started: float) -> None:
        """A token to look up (the store), or a body still arriving."""
        if client is None:
            found = await self.proxy.authenticate(req, pool.name, token, started, pool.dialect)  # type: ignore[arg-type]
            if isinstance(found, web.Response):
                _send_response(w, found)
                return
            client = found
        if client is None:
            self._refused(req, w, pool.name, "-", self._unauthorized(pool), "unauthorized", started)
        elif req.complete:
            relay = self._accepted(req, w, pool, rest, query, client, req.body, started)
            if relay is not None:
                await relay.wait()  # the answer comes from callbacks; this task is the request's till then
        elif not self._check(req, w, pool, rest, client, started):
            try:
                body = await req.read(pool.settings.retry.max_body_bytes)
            except BodyError as exc:
                resp, why = refusal(_REFUSAL.get(type(exc), _AioMalformed)(), pool.settings.retry.max_body_bytes,
                                    pool.dialect)
                w.close_after = True
                self._refused(req, w, pool.name, client.name, resp, why, started)
                return
            await self._relay(req, w, pool, rest, query, client, body, started).wait()

    def _unauthorized(self, pool: KeyPool) -> web.Response:
        return error_response(
            401, f"Missing or unknown keyrelay token. {pool.dialect.token_hint} with a token "
            "from 'keyrelay tokens create'.", code="invalid_api_key", dialect=pool.dialect)

    def _check(self, req: Request, w: ResponseWriter, pool: KeyPool, rest: str, client: Client,
               started: float) -> bool:
        """The checks after the token (pool access, the dialect's own): True when refused (answered)."""
        if not client.may_use(pool.name):
            resp = error_response(403, f"this token may not use pool {pool.name!r}", "permission_error",
                                  "pool_forbidden", dialect=pool.dialect)
            self._refused(req, w, pool.name, client.name, resp, "forbidden", started)
            return True
        if pool.dialect.checks_requests:
            refused = pool.dialect.request_error(req.method, rest)
            if refused is not None:
                resp = error_response(refused[0], refused[1], code="bad_request", dialect=pool.dialect)
                self._refused(req, w, pool.name, client.name, resp, "bad_request", started)
                return True
        return False

    def _accepted(self, req: Request, w: ResponseWriter, pool: KeyPool, rest: str, query: str, client: Client,
                  body: bytes, started: float) -> Relay | None:
        if self._check(req, w, pool, rest, client, started):
            return None
        limit = pool.settings.retry.max_body_bytes
        if len(body) > limit:
            resp, why = refusal(_AioTooLarge(), limit, pool.dialect)
            self._refused(req, w, pool.name, client.name, resp, why, started)
            return None
        return self._relay(req, w, pool, rest, query, client, body, started)

    def _relay(self, req: Request, w: ResponseWriter, pool: KeyPool, rest: str, query: str, client: Client,
               body: bytes, started: float) -> Relay:
        if pool.dialect.credential_query:
            query = strip_query_param(query, pool.dialect.credential_query)
        url = join_upstream(pool.settings.base_url, rest, query)
        forward = self._forwarders.get(pool.name)
        if forward is None:
            forward = self._forwarders[pool.name] = raw_forwarder(pool.dialect)
        # the client's headers stay bytes, apart: the exchange holds the key's credentials only
        ex = Exchange(pool, req.method, url, {}, body)
        relay = Relay(self, req, w, ex, pool, client.name, body, started, forward(req.raw_headers))
        relay.go()
        return relay

    def _refused(self, req: Request, w: ResponseWriter, pool: str, client: str, resp: web.Response, outcome: str,
                 started: float) -> None:
        """A request answered before any key was chosen: its access line, its count, the answer."""
        if access_log.enabled:
            access_log.request(pool, None, req.method, logged_path(req), resp.status, outcome, 0, started, client)
        if self.proxy.count is not None:
            self.proxy.count((pool, outcome, resp.status, -1.0, -1.0))
        _send_response(w, resp)


class LeanSite(web.BaseSite):
    """Listens with the lean server in front of a gateway runner (``server/app.py``: its aiohttp
    server answers the paths that are no pool's); stopped by ``runner.cleanup()``. Made by
    ``app.lean_site()``."""

    __slots__ = ("_cap", "_client", "_host", "_lean", "_max_body", "_port", "_proxy", "_sock")

    def __init__(self, runner: web.BaseRunner, proxy: Proxy, *, max_body: int, max_connections: int,
                 host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> None:
        super().__init__(runner, backlog=4096)  # a burst of connects must not wait on SYN retries
        self._proxy, self._max_body, self._cap = proxy, max_body, max_connections
        self._host, self._port, self._sock = host, port, sock
        self._lean: LeanServer | None = None
        self._client: UpstreamClient | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port} (lean)"

    async def start(self) -> None:
        await super().start()
        fallback = self._runner.server
        assert fallback is not None
        settings = self._proxy.runtime.settings
        s = settings.server
        retries = [p.retry for p in settings.pools]
        self._client = UpstreamClient(
            connect_timeout=max(r.connect_timeout for r in retries), read_timeout=min(r.read_timeout for r in retries),
            limit=s.max_connections,
        )
        gw = LeanGateway(self._proxy, self._client)
        limits = Limits(
            header_timeout=s.header_timeout, keepalive_timeout=s.keepalive_timeout, max_header_bytes=s.max_header_bytes,
            max_headers=s.max_headers, max_line_size=s.max_line_size, max_body=self._max_body,
            body_timeout=s.body_timeout, body_min_rate=s.body_min_rate, max_body_memory=s.max_body_memory,
            max_connections=self._cap,
        )
        lean = self._lean = LeanServer(gw.handle, limits, route=gw.route, fallback=fallback)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(lean, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(lean, self._host, self._port, reuse_address=True,
                                                    backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()  # no new connections
        if self._lean is not None:
            await self._lean.shutdown(5.0)
        if self._client is not None:
            await self._client.close()
