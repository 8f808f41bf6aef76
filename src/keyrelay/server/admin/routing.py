"""Routes declared once, as data: method, path, handler, and the shapes of what comes in and goes
out. The dispatcher (:mod:`keyrelay.server.admin`) validates with them; :mod:`.openapi` builds
the document from them. Errors have one shape: ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from keyrelay.exceptions import ApiError
from keyrelay.server.admin.models import Error, ErrorReply

__all__ = ["ApiError", "Call", "Reply", "Route", "error_reply", "json_reply", "match"]

_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
    503: "server_error",
}


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, path parameters, validated query and body, and who asks."""

    request: web.BaseRequest
    params: Mapping[str, str]
    query: Any
    body: Any
    who: str
    csrf: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: msgspec.Struct | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


#: a handler gets the admin API's shared state (:class:`keyrelay.server.admin.context.Ctx`) and the call
Handler = Callable[[Any, Call], Awaitable[Reply | web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # below /admin/api/v1, with {name} parameters
    handler: Handler
    summary: str
    tag: str
    ok: int = 200
    response: type | None = None  # the success body (None: no body)
    query: type | None = None
    body: type | None = None
    errors: tuple[int, ...] = ()  # besides the common ones
    public: bool = False  # no admin authentication (sign-in, sign-out, the document itself)
    media: str = "application/json"
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    @property
    def op_id(self) -> str:
        return self.handler.__name__.strip("_")


#: what a path parameter (a key or token id) may be; the OpenAPI document says the same
ID_PATTERN = "^[A-Za-z0-9_-]{1,100}$"
_ID_MATCH = re.compile(ID_PATTERN).match


def match(routes: tuple[Route, ...], method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """The route for ``method`` + ``path``, its parameters, and the methods the path allows. Of
    the templates matching the path, the one with the fewest parameters decides (``/keys/import``
    is not ``/keys/{id}``)."""
    parts = path.strip("/").split("/")
    best: list[tuple[Route, dict[str, str]]] = []
    fewest = len(parts) + 1
    for r in routes:
        if len(r.segments) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(r.segments, parts):
            if want.startswith("{"):
                if _ID_MATCH(got) is None:  # ids are [A-Za-z0-9_-]: anything else names nothing here
                    break
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            if len(params) < fewest:
                best, fewest = [], len(params)
            if len(params) == fewest:
                best.append((r, params))
    for r, params in best:
        if r.method == method or (method == "HEAD" and r.method == "GET"):
            return r, params, []
    return None, {}, [r.method for r, _ in best]


_encoder = msgspec.json.Encoder()


def json_reply(status: int, body: msgspec.Struct | None, headers: Mapping[str, str] | None = None) -> web.Response:
    h = {"Cache-Control": "no-store", **(headers or {})}
    if body is None:
        return web.Response(status=status, headers=h)
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json", headers=h)


def error_reply(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_reply(status, ErrorReply(Error(message, _TYPES.get(status, "invalid_request_error"), code)), headers)
