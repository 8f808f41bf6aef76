"""The gateway's HTTP server, start-up and shutdown, and ``serve``.

The gateway answers every path itself (``/healthz``, else a pool's route), so it runs on
aiohttp's low-level server (:class:`aiohttp.web.Server`) rather than on a
:class:`~aiohttp.web.Application`: no router, no match info, no middleware chain per request,
a layer that was pure cost here (figures: docs/design.md, "Hot path").
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
from typing import Any

import aiohttp
from aiohttp import web

from keyrelay.config import Settings
from keyrelay.runtime.process import Runtime
from keyrelay.server.admin import AdminApi
from keyrelay.server.connections import GuardedServer
from keyrelay.server.proxy import Proxy

__all__ = ["GatewayRunner", "lean_site", "run_server", "serve"]

log = logging.getLogger("keyrelay.server")

#: The collector's first generation is scanned every 700 new container objects by default,
#: i.e. every few requests here; a request leaves no cycles behind, so scan every 20,000
#: (a few MB at most) and keep the rest.
GC_THRESHOLDS = (20_000, 20, 20)


class GatewayRunner(web.BaseRunner):
    """Runs a gateway over ``runtime``'s pools; use it like :class:`aiohttp.web.AppRunner`
    (``setup()``, a site, ``cleanup()``). With ``own_runtime`` it starts and stops the runtime
    with itself."""

    __slots__ = ("max_body", "metrics_dir", "own_runtime", "proxy", "runtime")

    def __init__(
        self, runtime: Runtime, *, own_runtime: bool = True, metrics_dir: str | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("access_log", None)  # ours is keyrelay.access (logs.py)
        super().__init__(handler_cancellation=True, **kwargs)
        self.runtime = runtime
        self.own_runtime = own_runtime
        self.proxy = Proxy(runtime)
        #: where the workers of ``serve --workers N`` leave their counts for /metrics (server/metrics.py)
        self.metrics_dir = metrics_dir
        self.proxy.admin = AdminApi(runtime)  # /admin/api/v1 (server/admin)
        #: aiohttp stops reading a body here; each pool then applies its own limit
        self.max_body = max(p.retry.max_body_bytes for p in runtime.settings.pools) + 1

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        if self.own_runtime:
            await self.runtime.start()
        if self.runtime.settings.metrics.enabled and self.runtime.telemetry is not None:
            from keyrelay.server.metrics import MetricsEndpoint

            admin_auth = self.proxy.admin.ctx.auth if self.proxy.admin is not None else None
            self.proxy.metrics = MetricsEndpoint(self.runtime, self.runtime.settings.metrics, self.metrics_dir, admin_auth)
            self.proxy.metrics.start()
            self.proxy.count = self.runtime.telemetry.requests.append
        server = self.runtime.settings.server
        connector = aiohttp.TCPConnector(
            limit=server.max_connections, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self.proxy.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        # aiohttp's own request factory, with our body limit (aiohttp stops reading beyond it)
        factory = functools.partial(web.BaseRequest, loop=loop, client_max_size=self.max_body)
        # limits on clients: aiohttp's own parameters, plus what it has none for (connections.py)
        kwargs = {
            "keepalive_timeout": server.keepalive_timeout,
            "max_line_size": server.max_line_size,
            "max_field_size": server.max_line_size,
            "max_headers": server.max_headers,
            # a body left unread after the answer (a 401 before it came) is read and dropped for at
            # most this long before the connection closes (aiohttp: 10 s)
            "lingering_time": 2.0,
            **self._kwargs,
        }
        return GuardedServer(
            self.proxy.handle, request_factory=factory, max_connections=connection_cap(server.max_client_connections,
                                                                                       server.max_connections),
            header_timeout=server.header_timeout, max_header_bytes=server.max_header_bytes, **kwargs,
        )

    async def shutdown(self) -> None:
        self.proxy.drop_partial_bodies()
        if self.proxy.admin is not None:
            await self.proxy.admin.close()  # ends the live event streams

    async def _cleanup_server(self) -> None:
        await self.proxy.deadlines.close()
        if self.proxy.session is not None:
            await self.proxy.session.close()
        if self.own_runtime:
            await self.runtime.stop()
        if self.proxy.metrics is not None:  # after the runtime's last counter flush
            await self.proxy.metrics.close()


async def run_server(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    ready: asyncio.Event | None = None,
    metrics_dir: str | None = None,
) -> None:
    """Serve until cancelled or SIGTERM/SIGINT. ``metrics_dir``: the directory the workers of
    ``serve --workers N`` share their counts through (server/metrics.py)."""
    runtime = Runtime(settings)
    runner = GatewayRunner(runtime, handle_signals=False, metrics_dir=metrics_dir)
    await runner.setup()
    if settings.server.engine == "lean":  # the lean HTTP layer in front, aiohttp for the other paths
        site: web.BaseSite = lean_site(runner, settings.server.host, settings.server.port, sock)
    elif sock is not None:
        site = web.SockSite(runner, sock)
    else:
        # a deep accept queue: a burst of connections (an attack) must not make new clients wait on SYN retries
        site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_address=True, backlog=4096)
    try:
        await site.start()
    except BaseException:  # e.g. the port is taken: close what setup() opened (the upstream session, the store)
        await runner.cleanup()
        raise
    gc.freeze()  # start-up objects (modules, config, the loaded pool) leave the collector's scans
    gc.set_threshold(*GC_THRESHOLDS)
    log.info(
        "keyrelay serving on http://%s:%d (store %s; pools %s)",
        settings.server.host, settings.server.port, _safe_url(settings.store_url),
        ", ".join(f"{p.name}→{p.base_url}" for p in settings.pools),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def lean_site(runner: GatewayRunner, host: str, port: int, sock: socket.socket | None = None) -> web.BaseSite:
    """The lean HTTP layer (``server/lean.py``) listening in front of ``runner``, whose aiohttp
    server answers the paths that are no pool's."""
    from keyrelay.server.lean import LeanSite  # only for engine = "lean"

    s = runner.runtime.settings.server
    return LeanSite(runner, runner.proxy, max_body=runner.max_body,
                    max_connections=connection_cap(s.max_client_connections, s.max_connections),
                    host=host, port=port, sock=sock)


#: file descriptors kept free for everything but client connections (store, logs, listeners)
FD_RESERVE = 64


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return hard if soft == resource.RLIM_INFINITY else soft


def connection_cap(wanted: int, upstream: int) -> int:
    """``max_client_connections``, lowered (with a warning) when the file descriptors left after
    the upstream connections (``max_connections``) and :data:`FD_RESERVE` cannot hold it: a
    gateway out of descriptors stalls everyone, silently."""
    limit = raise_fd_limit()
    room = limit - upstream - FD_RESERVE
    if wanted <= room:
        return wanted
    cap = max(16, room)
    log.warning(
        "max_client_connections=%d does not fit the open-file limit %d (with max_connections=%d upstream and %d "
        "spare): serving at most %d client connections; raise the hard limit (ulimit -Hn) to allow more",
        wanted, limit, upstream, FD_RESERVE, cap,
    )
    return cap


def _safe_url(url: str) -> str:
    """A store URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def serve(settings: Settings) -> None:
    """Run the gateway in this process (uvloop when available)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - non-Linux
        runner = asyncio.run  # type: ignore[assignment]
    runner(run_server(settings))
