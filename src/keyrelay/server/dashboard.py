"""The web dashboard's static files under ``/admin/`` (the admin API is ``/admin/api/v1/``).

The files ship inside the package (``server/static/``, package data): plain HTML, CSS and
JavaScript modules, no build step. They are read once, at the first request, into a table keyed
by file name; a request is answered from that table only, so no path a client sends ever
reaches the file system (no traversal: ``/admin/../x``, ``/admin/%2e%2e/x``, ``/admin/a/b`` are
all just names that are not in the table). Every answer carries a strict Content-Security-Policy
(``docs/design.md``, "Dashboard").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from aiohttp import web

from keyrelay.server.http import error_response

__all__ = ["CSP", "PREFIX", "STATIC_DIR", "Dashboard", "security_headers"]

#: Where the dashboard lives; the admin API is under ``PREFIX + "api/"``.
PREFIX = "/admin/"
STATIC_DIR = Path(__file__).with_name("static")

#: Only our own files; no inline script or style (the markup has none), no framing, no plugins;
#: forms may only post to ourselves and the page may only talk to its own origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


def security_headers() -> dict[str, str]:
    """Headers every dashboard answer carries (the admin API may reuse them)."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


class _File(NamedTuple):
    body: bytes
    content_type: str
    etag: str


class Dashboard:
    """Answers ``GET``/``HEAD`` for ``/admin``, ``/admin/`` and ``/admin/<file>``."""

    def __init__(self, static_dir: Path = STATIC_DIR) -> None:
        self.static_dir = static_dir
        self._files: dict[str, _File] | None = None

    def files(self) -> dict[str, _File]:
        """The table of servable files: regular files directly in the static folder whose
        suffix has a known content type (read once)."""
        if self._files is None:
            table: dict[str, _File] = {}
            for path in sorted(self.static_dir.iterdir()):
                ctype = _TYPES.get(path.suffix)
                if ctype is None or not path.is_file() or path.name.startswith("."):
                    continue
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                table[path.name] = _File(body, ctype, etag)
            self._files = table
        return self._files

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/admin":
            return web.Response(status=308, headers={"Location": "/admin/", **security_headers()})
        name = path[len(PREFIX):] or "index.html"
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "the dashboard's files answer GET and HEAD", code="method_not_allowed",
                                  headers={"Allow": "GET, HEAD", **security_headers()})
        f = self.files().get(name)
        if f is None:
            # the path is not echoed: it could be a pasted key
            return error_response(404, "no such dashboard file", code="not_found", headers=security_headers())
        headers = security_headers()
        headers["ETag"] = f.etag
        # revalidate every time: an upgraded keyrelay must not run yesterday's script
        headers["Cache-Control"] = "no-cache"
        if request.headers.get("If-None-Match") == f.etag:
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = f.content_type
        return web.Response(body=f.body, headers=headers)
