"""A request's path must stay inside its pool: no dot segments, no encoded separators, no bytes
that are not text.

aiohttp hands the proxy the path decoded once (``%2e%2e`` is ``..`` by then, and ``..%2f`` is
``../``); the rest of it is appended to the pool's ``base_url``, and an HTTP client then
resolves ``..`` — so ``/pfx/../other/x`` would carry pfx's key to a path outside pfx's base
URL. A path is refused (400) when, decoded once or again (double encoding: ``%252e``), it has
a ``.`` or ``..`` segment or a backslash, still holds an encoded ``/`` or ``\\``, is not valid
UTF-8, or has a control character (CR, LF, NUL…).

The proxy calls :func:`path_problem` only for paths with ``/.``, ``%`` or ``\\`` in them or a
non-printable character (four substring tests on the normal path).
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["path_problem", "suspect"]


def suspect(path: str) -> bool:
    """Worth a closer look? (False for every ordinary API path.)"""
    return "/." in path or "%" in path or "\\" in path or not path.isprintable()


def path_problem(path: str) -> str | None:
    """Why ``path`` (as aiohttp decoded it) is refused, or ``None`` when it is fine."""
    p = path
    for _ in range(4):
        if not p.isprintable():
            return "control characters in the path"
        if "\\" in p:
            return "a backslash in the path"
        if any(seg in (".", "..") for seg in p.split("/")):
            return "a '.' or '..' segment in the path"
        if "%" not in p:
            return None
        low = p.lower()
        if "%2f" in low or "%5c" in low:
            return "an encoded '/' or '\\' in the path"
        try:
            q = unquote(p, errors="strict")
        except UnicodeDecodeError:
            return "the path is not valid UTF-8"
        if q == p:
            return None
        p = q
    return "the path is encoded too many times"
