"""The OpenAPI 3.1 document, built from :data:`.routes.ROUTES` and the models' JSON Schema."""

from __future__ import annotations

from typing import Any

import msgspec

from keyrelay.server.admin.models import ErrorReply
from keyrelay.server.admin.routing import ID_PATTERN, Route

__all__ = ["COMMON_ERRORS", "openapi"]

#: what any route may answer besides its own: bad JSON, no or a bad sign-in, a client token or a
#: failed CSRF check, no such route (or thing), a wrong method, a body over the size limit, a body or
#: query that fails validation
COMMON_ERRORS = (400, 401, 403, 404, 405, 413, 422)
_REF = "#/components/schemas/{name}"
#: key and token ids ("k…", "t…" and hex); other bytes in a path are refused before routing
_ID = {"type": "string", "pattern": ID_PATTERN}
_DESCRIPTIONS = {
    200: "OK", 201: "Created", 204: "No content", 400: "Malformed request", 401: "Not signed in",
    403: "Not an admin token, or a failed CSRF check", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 413: "Body too large", 422: "Invalid input", 503: "The store is unreachable",
}


def _no_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a query string has no ``null``."""
    any_of = schema.get("anyOf")
    if any_of is not None:
        rest = [s for s in any_of if s.get("type") != "null"]
        schema = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        if len(rest) == 1:
            schema.update(rest[0])
        else:
            schema["anyOf"] = rest
    return schema


def _with_pool_examples(schema: dict[str, Any], pools: list[str]) -> None:
    """Name this gateway's pools as examples of every ``pool`` field (clients and fuzzers)."""
    for name, prop in schema.get("properties", {}).items():
        if name == "pool" and pools:
            prop["examples"] = pools
        elif name == "pools" and pools:
            prop["examples"] = [["*"], pools[:1]]


def openapi(routes: tuple[Route, ...], prefix: str, version: str, pools: tuple[str, ...] = ()) -> dict[str, Any]:
    models: list[Any] = [ErrorReply]
    for r in routes:
        models += [t for t in (r.response, r.body) if t is not None]
    query_models = [r.query for r in routes if r.query is not None]
    _, components = msgspec.json.schema_components(models + query_models, ref_template=_REF)
    for schema in components.values():
        _with_pool_examples(schema, list(pools))
    error = {"application/json": {"schema": {"$ref": _REF.format(name="ErrorReply")}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"operationId": r.op_id, "summary": r.summary, "tags": [r.tag]}
        params: list[dict[str, Any]] = [
            {"name": seg[1:-1], "in": "path", "required": True, "schema": _ID}
            for seg in r.segments if seg.startswith("{")
        ]
        if r.query is not None:
            q = components[r.query.__name__]
            params += [
                {"name": name, "in": "query", "required": False, "schema": _no_null(schema)}
                for name, schema in q["properties"].items()
            ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": r.body.__name__ != "CheckIn",
                "content": {"application/json": {"schema": {"$ref": _REF.format(name=r.body.__name__)}}},
            }
        ok: dict[str, Any] = {"description": _DESCRIPTIONS[r.ok]}
        if r.media == "text/event-stream":
            ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        elif r.response is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": _REF.format(name=r.response.__name__)}}}
        if r.ok == 200 and r.path == "/session" and r.method == "POST":
            ok["headers"] = {"Set-Cookie": {"schema": {"type": "string"}, "description": "the session cookie"}}
        responses: dict[str, Any] = {str(r.ok): ok}
        for status in sorted({*COMMON_ERRORS, *r.errors, 405}):
            responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
        responses["503"] = {"description": _DESCRIPTIONS[503], "content": error}
        op["responses"] = responses
        if r.public:
            op["security"] = []
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for q in query_models:
        components.pop(q.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyrelay admin API", "version": version,
            "description": "Manage a keyrelay gateway's pools, keys, tokens and checks; follow its events and usage. "
                           "Keys are only ever shown masked.",
        },
        "servers": [{"url": prefix}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an admin token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "keyrelay_admin",
                            "description": "from POST /session; non-GET requests also need X-CSRF-Token"},
            },
        },
    }
