"""The gateway application: routes, start-up and shutdown, and ``serve``."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket

import aiohttp
from aiohttp import web

from keyrelay.config import Settings
from keyrelay.runtime import Runtime
from keyrelay.server.proxy import Proxy

__all__ = ["build_app", "run_server", "serve"]

log = logging.getLogger("keyrelay.server")

RUNTIME = web.AppKey("runtime", Runtime)

#: The collector's first generation is scanned every 700 new container objects by default,
#: i.e. every few requests here; each request leaves no cycles behind (measured:
#: bench/bench_instructions.py), so scan every 20,000 (a few MB at most) and keep the rest.
GC_THRESHOLDS = (20_000, 20, 20)


def build_app(runtime: Runtime, *, own_runtime: bool = True) -> web.Application:
    """An aiohttp app serving ``runtime``'s pools. With ``own_runtime`` the app starts and stops
    the runtime with itself."""
    settings = runtime.settings
    max_body = max(p.retry.max_body_bytes for p in settings.pools)
    app = web.Application(client_max_size=max_body + 1)
    app[RUNTIME] = runtime
    proxy = Proxy(runtime)

    async def on_startup(app: web.Application) -> None:
        if own_runtime:
            await runtime.start()
        connector = aiohttp.TCPConnector(
            limit=settings.server.max_connections, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        proxy.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def on_shutdown(app: web.Application) -> None:
        proxy.drop_partial_bodies()

    async def on_cleanup(app: web.Application) -> None:
        await proxy.deadlines.close()
        if proxy.session is not None:
            await proxy.session.close()
        if own_runtime:
            await runtime.stop()

    async def healthz(request: web.Request) -> web.Response:
        pools = {name: p.eligible_count() for name, p in runtime.pools.items()}
        return web.json_response({"status": "ok", "eligible_keys": pools})

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


async def run_server(settings: Settings, *, sock: socket.socket | None = None, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled or SIGTERM/SIGINT."""
    runtime = Runtime(settings)
    app = build_app(runtime)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    if sock is not None:
        site: web.BaseSite = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_address=True)
    await site.start()
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
