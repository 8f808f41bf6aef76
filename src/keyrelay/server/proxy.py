"""The gateway's proxy route: route → authenticate → buffer the body → the relay loop over
aiohttp's client → stream or return the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from keyrelay.core.model import Outcome
from keyrelay.exceptions import StoreUnavailable
from keyrelay.logs import access_log
from keyrelay.providers import Dialect
from keyrelay.runtime.flow import Exchange
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.process import Runtime
from keyrelay.server.admin import AdminApi
from keyrelay.server.auth import Caller, Tokens
from keyrelay.server.bodies import (
    REFUSALS,
    BodyBudget,
    BodyTooLarge,
    BodyTooSlow,
    Closing,
    MalformedBody,
    read_body,
    refusal,
)
from keyrelay.server.deadlines import ReadDeadlines
from keyrelay.server.health import healthz, readyz
from keyrelay.server.http import error_response, forwarder, join_upstream, strip_query_param
from keyrelay.server.paths import path_problem
from keyrelay.server.streaming import ClientGone, relay
from keyrelay.server.throttle import AuthThrottle

if TYPE_CHECKING:
    from keyrelay.server.metrics import MetricsEndpoint

__all__ = ["Proxy"]

log = logging.getLogger("keyrelay.proxy")

_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_SSE = "text/event-stream"


class Proxy:
    """Forwards client requests to a pool's upstream, one key per attempt."""

    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession | None = None) -> None:
        self.runtime = runtime
        #: who may call (server/auth.py); forgets what the store said at every store sync
        self.tokens = Tokens(runtime.store, runtime.settings.tokens)
        runtime.on_sync.append(self.tokens.expire)
        #: set by the app at start-up (a session must be made inside the running loop)
        self.session = session
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}
        self._forwarders: dict[str, Callable[[Mapping[str, str]], dict[str, str]]] = {}
        self._reading: dict[int, aiohttp.StreamReader] = {}
        #: upstream read timeouts, one ticker for all attempts; it looks 4 times per shortest timeout
        self.deadlines = ReadDeadlines(min(1.0, *(p.settings.retry.read_timeout / 4 for p in runtime.pools.values())))  # bodies a handler waits for the rest of
        self._closing = False
        #: ``GET /metrics`` (server/metrics.py), when [metrics] is enabled
        self.metrics: MetricsEndpoint | None = None
        server = runtime.settings.server
        #: memory held by request bodies still arriving, all requests together (bodies.py)
        self.bodies = BodyBudget(server.max_body_memory)
        self._body_timeout, self._body_min_rate = server.body_timeout, server.body_min_rate
        #: failed tokens per client address (throttle.py)
        self.throttle = AuthThrottle(server.auth_failure_burst, server.auth_failure_rate)
        #: the admin API (server/admin), set by the app: paths under /admin on the route miss
        self.admin: AdminApi | None = None
        #: appends one ``(pool, outcome, status, duration, ttfb)`` per request to the telemetry
        #: (telemetry.py sums them off the request path); None when metrics are off
        self.count: Callable[[tuple[str, str, int, float, float]], None] | None = None

    # -- entry ---------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        path = request.path
        pool, rest = self._route(path)
        if pool is None:
            if path == "/healthz":
                return healthz(request)
            if path == "/readyz":
                return await readyz(self, request, started)
            if path == "/metrics" and self.metrics is not None:
                return await self.metrics.handle(request)
            if self.admin is not None and (path.startswith("/admin/") or path == "/admin"):
                return await self.admin.handle(request)
            resp = error_response(404, f"no pool serves {request.path!r}; use /v1/… or /<pool>/…", code="unknown_pool")
            return self._refused(request, "-", "-", resp, "unknown_pool", started)
        if (
            ("/." in path or "%" in path or "\\" in path or not path.isprintable())  # paths.suspect, inlined
            and (problem := path_problem(path)) is not None
        ):  # paths stay inside their pool (other routes check theirs)
            resp = error_response(400, f"invalid path: {problem}", code="invalid_path", dialect=pool.dialect)
            return self._refused(request, pool.name, "-", resp, "bad_path", started)
        dialect = pool.dialect
        token = dialect.client_token(request.headers, request.query_string)
        client = self.tokens.recognise(token)
        if client is None:
            found = await self.authenticate(request, pool.name, token, started, dialect)
            if isinstance(found, web.Response):
                return found
            client = found
        if client is None:
            resp = error_response(
                401,
                f"Missing or unknown keyrelay token. {dialect.token_hint} with a token "
                "from 'keyrelay tokens create'.",
                code="invalid_api_key",
                dialect=dialect,
            )
            return self._refused(request, pool.name, "-", resp, "unauthorized", started)
        if not client.may_use(pool.name):
            resp = error_response(403, f"this token may not use pool {pool.name!r}", "permission_error", "pool_forbidden",
                                  dialect=dialect)
            return self._refused(request, pool.name, client.name, resp, "forbidden", started)
        if dialect.checks_requests:
            refused = dialect.request_error(request.method, rest)
            if refused is not None:
                resp = error_response(refused[0], refused[1], code="bad_request", dialect=dialect)
                return self._refused(request, pool.name, client.name, resp, "bad_request", started)
        policy = pool.settings.retry
        held = 0  # bytes of the body budget this request holds (a body that came slowly)
        try:
            if not request.body_exists:
                body = b""
            elif request.content.is_eof():  # the whole body is here already (the usual case)
                body = await _read_body(request, policy.max_body_bytes)
            else:
                body, held = await self._read_rest(request, policy.max_body_bytes)
        except REFUSALS as exc:
            if isinstance(exc, (BodyTooSlow, MalformedBody)):
                request.content.feed_eof()  # nothing more worth reading: answer, then close at once
                resp, why = refusal(exc, policy.max_body_bytes, dialect)
                resp.force_close()
                return self._refused(request, pool.name, client.name, resp, why, started)
            return self._refused(request, pool.name, client.name, *refusal(exc, policy.max_body_bytes, dialect), started)
        query = request.query_string
        if dialect.credential_query:
            query = strip_query_param(query, dialect.credential_query)
        url = join_upstream(pool.settings.base_url, rest, query)
        status, outcome = 0, ""
        ex = Exchange(pool, request.method, url, self.forward_headers(pool, request.headers), body)
        attempts = ex.attempts
        try:
            answer = await self._relay(request, ex, pool, body)
            status = answer.status
            outcome = attempts.last.outcome.value if attempts.last else "no_key"
            if pool.writing:  # recorded outcomes are written before the caller hears of them
                await pool.settle()
            return answer
        except ClientGone as gone:
            status, outcome = 499, "client_gone"
            assert isinstance(gone.response, web.StreamResponse)
            return gone.response
        except asyncio.CancelledError:
            if attempts.lease is None and attempts.last is not None and attempts.last.outcome is Outcome.OK:
                status, outcome = 200, "ok"  # the stream was delivered whole; the client then hung up
            else:
                status, outcome = 499, "client_gone"
            raise
        finally:
            if held:
                self.bodies.give(held)
            if access_log.enabled:
                access_log.request(
                    pool.name, attempts.last_lease, request.method, request.path, status, outcome, attempts.count,
                    started, client.name,
                )
            count = self.count
            if count is not None:  # one tuple; summed off the request path (telemetry.py)
                end = time.perf_counter()
                first = attempts.first_byte or end
                count((pool.name, outcome or "error", status, end - started, first - started))

    def _refused(
        self, request: web.BaseRequest, pool: str, client: str, resp: web.Response, outcome: str, started: float
    ) -> web.Response:
        """A request answered before any key was chosen: its access line, its count, and the answer."""
        if access_log.enabled:
            access_log.request(pool, None, request.method, request.path, resp.status, outcome, 0, started, client)
        if self.count is not None:
            self.count((pool, outcome, resp.status, -1.0, -1.0))
        return resp

    async def authenticate(
        self, request: web.BaseRequest, pool: str, token: str, started: float, dialect: Dialect | None = None
    ) -> Caller | None | web.Response:
        """A token not recognised at once: checked (hash, store), unless its source is throttled
        for guessing (then only tokens held in memory pass, the rest get 429). ``None``: refused
        (and counted); a response: answer with it."""
        source = request.remote or "-"
        wait = self.throttle.blocked(source)
        client = None
        if not (token.isascii() and token.isprintable()):  # other bytes are no token of ours
            pass
        elif wait is not None:
            client = self.tokens.known(token)
            if client is None:
                resp = error_response(429, "too many unknown tokens from this address; slow down", "rate_limit_error",
                                      "too_many_auth_failures", retry_after=wait, dialect=dialect)
                return self._refused(request, pool, "-", resp, "throttled", started)
        else:
            try:
                client = await self.tokens.authenticate(token)
            except StoreUnavailable:  # a token not seen before the store went down (the store logs the outage)
                resp = error_response(503, "the key store is unreachable; retry shortly", "server_error",
                                      "store_unavailable", retry_after=1.0, dialect=dialect)
                if self.runtime.telemetry is not None:
                    self.runtime.telemetry.store_error("auth")
                return self._refused(request, pool, "-", resp, "store_unavailable", started)
        if client is None and token:  # a guess (no token at all is a misconfigured client, not a guess)
            self.throttle.failed(source)
        return client

    async def _read_rest(self, request: web.BaseRequest, limit: int) -> tuple[bytes, int]:
        """A body still on its way (bodies.py: 100-continue, timeouts, the memory cap): refused
        beyond the limit, ended at shutdown; the body and the budget bytes it holds."""
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        if self._closing:
            raise Closing
        self._reading[id(request)] = request.content
        try:
            return await read_body(request, limit, self.bodies, self._body_timeout, self._body_min_rate)
        finally:
            del self._reading[id(request)]

    def drop_partial_bodies(self) -> None:
        """At shutdown (``on_shutdown``) aiohttp has stopped reading from the connections: a
        request body not whole by then never will be, and its handler would hold the shutdown
        up for the whole shutdown timeout. End those reads now, and any such read to come."""
        self._closing = True
        for content in self._reading.values():
            if not content.is_eof():
                content.set_exception(Closing())

    def _route(self, path: str) -> tuple[KeyPool | None, str]:
        """A pool named by the first segment first; else the default pool when the path is one of
        its dialect's API roots (``/v1/``; Gemini's ``/v1beta/``, Azure's ``/openai/``)."""
        if path.startswith("/v1/") or path == "/v1":
            return self.runtime.default_pool, path
        name, _, tail = path[1:].partition("/")
        pool = self.runtime.pools.get(name)
        if pool is not None:
            rest, roots = "/" + tail, pool.dialect.api_roots
            if path.startswith(roots) and not rest.startswith(roots):  # an Azure pool named "openai", no prefix
                return pool, path
            return pool, rest
        default = self.runtime.default_pool
        if default is not None and path.startswith(default.dialect.api_roots):
            return default, path
        return None, path

    # -- the loop ------------------------------------------------------------------------
    async def _relay(self, request: web.BaseRequest, ex: Exchange, pool: KeyPool, body: bytes) -> web.StreamResponse:
        session = self.session
        assert session is not None, "the app sets the session at start-up"
        retry = pool.settings.retry
        timeout = self._timeouts.get(pool.name)
        if timeout is None:  # read timeouts are ours (deadlines.py), not aiohttp's
            timeout = self._timeouts[pool.name] = aiohttp.ClientTimeout(total=None, connect=retry.connect_timeout)
        return await relay(request, ex, session, timeout, self.deadlines, retry.read_timeout, body)

    def forward_headers(self, pool: KeyPool, headers: Mapping[str, str]) -> dict[str, str]:
        """The client's headers that may go upstream (``server/http.py``: the dialect's allow-list)."""
        forward = self._forwarders.get(pool.name)
        if forward is None:
            forward = self._forwarders[pool.name] = forwarder(pool.dialect)
        return forward(headers)


async def _read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole body (aiohttp stops at the app's ``client_max_size``, the largest pool limit)."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge from None
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - aiohttp's payload errors (bad chunked framing): the client's fault
        raise MalformedBody(type(exc).__name__) from None
    if len(body) > limit:
        raise BodyTooLarge
    return body


