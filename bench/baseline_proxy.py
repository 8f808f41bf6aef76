"""The baseline: a bare aiohttp pass-through proxy (aiohttp server + aiohttp client, uvloop).

No auth, no key choice, no classification: forwards the body with one fixed key and streams the
answer back. keyrelay's overhead is measured against this, in the same run, on the same core.

    python bench/baseline_proxy.py PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

DROP = {"content-length", "transfer-encoding", "connection", "content-encoding", "server", "date"}


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    state: dict[str, aiohttp.ClientSession] = {}

    async def startup(app: web.Application) -> None:
        state["s"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0), auto_decompress=False
        )

    async def cleanup(app: web.Application) -> None:
        await state["s"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path.removeprefix("/v1")
        async with state["s"].request(
            request.method,
            upstream + path,
            data=body,
            headers={"Authorization": "Bearer sk-baseline", "Content-Type": "application/json", "Accept-Encoding": "identity"},
        ) as up:
            headers = {k: v for k, v in up.headers.items() if k.lower() not in DROP}
            if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                resp = web.StreamResponse(status=up.status, headers=headers)
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await up.read()
            return web.Response(status=up.status, body=data, headers=headers)

    app = web.Application()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
