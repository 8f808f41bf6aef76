"""Fallback upstream for the benchmarks (when nginx is not installed): a bare aiohttp server
answering as the nginx configuration of ``bench_proxy.py`` does — a fixed chat completion at
/v1/chat/completions, a fixed Anthropic Messages answer at /v1/messages and a fixed stream at
/v1/sse, whatever the key.

    python bench/upstream.py PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import CHAT_JSON, MESSAGES_JSON, SSE

_CHAT = CHAT_JSON.encode()
_MESSAGES = MESSAGES_JSON.encode()
_SSE = SSE.replace("\\n", "\n").encode()  # written for nginx's config, where \n is an escape


async def chat(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_CHAT, content_type="application/json")


async def messages(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_MESSAGES, content_type="application/json")


async def sse(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_SSE, content_type="text/event-stream")


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/sse", sse)
    app.router.add_post("/v1/messages", messages)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
