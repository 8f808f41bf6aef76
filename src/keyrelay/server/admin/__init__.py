"""The admin API under ``/admin/api/v1`` (issue 15): JSON, authenticated by admin tokens or a
signed session cookie; every route declared once in :mod:`.routes`, validated with the models of
:mod:`.models`, described by the OpenAPI 3.1 document at ``/admin/api/v1/openapi.json``.

The proxy hands it every path under ``/admin`` on its route miss (no pool may be named
``admin``), so the proxy's own path is unchanged.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import Runtime
from keyrelay.server.admin.context import Ctx
from keyrelay.server.admin.openapi import openapi
from keyrelay.server.admin.routes import ROUTES
from keyrelay.server.admin.routing import ApiError, Call, error_reply, json_reply, match
from keyrelay.server.dashboard import Dashboard

__all__ = ["PREFIX", "AdminApi"]

log = logging.getLogger("keyrelay.admin")

PREFIX = "/admin/api/v1"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keyrelay")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _without_values(message: str) -> str:
    """msgspec's message, minus the value it quotes for an enum (``Invalid enum value 'x'``)."""
    if message.startswith("Invalid enum value"):
        return "Invalid enum value" + message[message.rfind(" - at "):] if " - at " in message else "Invalid enum value"
    return message[:500]


class AdminApi:
    def __init__(self, runtime: Runtime) -> None:
        self.ctx = Ctx(runtime)
        self.dashboard = Dashboard()  # the web dashboard (server/dashboard.py, server/static/)
        self._document: bytes | None = None

    def document(self) -> bytes:
        if self._document is None:
            pools = tuple(self.ctx.runtime.pools)
            self._document = msgspec.json.encode(openapi(ROUTES, PREFIX, _version(), pools))
        return self._document

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if not path.startswith(PREFIX + "/"):
            if not (path.startswith("/admin/api/") or path == "/admin/api"):  # /admin/, its files: the dashboard
                return await self.dashboard.handle(request)
            return error_reply(404, "not_found", f"nothing here; the admin API is under {PREFIX}/")
        sub = path[len(PREFIX):]
        if sub == "/openapi.json":
            if request.method not in ("GET", "HEAD"):
                return error_reply(405, "method_not_allowed", "use GET", {"Allow": "GET"})
            return web.Response(body=self.document(), content_type="application/json")
        route, params, allowed = match(ROUTES, request.method, sub)
        if route is None:
            if allowed:
                return error_reply(405, "method_not_allowed", f"use {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
            return error_reply(404, "not_found", "no such admin API route (see /admin/api/v1/openapi.json)")
        try:
            who, csrf = "", ""
            if not route.public:
                rec, csrf = await self.ctx.auth.caller(request, write=route.method != "GET")
                who = rec.name
            query: object = None
            if route.query is not None:
                if len(set(request.query)) != len(request.query):
                    raise ApiError(422, "invalid_input", "a query parameter is given more than once")
                query = msgspec.convert(dict(request.query), route.query, strict=False)
            body: object = None
            if route.body is not None:
                raw = await request.read()
                if raw.strip() or route.body.__name__ != "CheckIn":
                    body = msgspec.json.decode(raw, type=route.body)
            reply = await route.handler(self.ctx, Call(request, params, query, body, who, csrf))
        except ApiError as exc:
            return error_reply(exc.status, exc.code, exc.message)
        except msgspec.ValidationError as exc:  # says where and what was expected, never the value
            return error_reply(422, "invalid_input", _without_values(str(exc)))
        except msgspec.DecodeError:
            return error_reply(400, "invalid_json", "the body is not valid JSON")
        except web.HTTPRequestEntityTooLarge:
            return error_reply(413, "request_too_large", "the body is larger than the gateway accepts")
        except StoreUnavailable:
            return error_reply(503, "store_unavailable", "the key store is unreachable; retry shortly",
                               {"Retry-After": "1"})
        if isinstance(reply, web.StreamResponse):
            return reply
        return json_reply(reply.status, reply.body, reply.headers)

    async def close(self) -> None:
        await self.ctx.close()
