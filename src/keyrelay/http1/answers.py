"""Bytes the lean server writes as they are: status lines, the ``Date`` line, and whole error
answers (OpenAI's error shape) that close the connection."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

import orjson

__all__ = ["date_line", "error_answer", "status_line"]

_LINES: dict[int, bytes] = {}
_date = [0, b""]


def status_line(status: int) -> bytes:
    line = _LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1"))
    return line


def date_line() -> bytes:
    """``Date: …\\r\\n`` (RFC 9110 §6.6.1), formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii")
    return _date[1]  # type: ignore[return-value]


def error_answer(status: int, message: str, code: str, type_: str = "invalid_request_error", extra: bytes = b"") -> bytes:
    """A whole answer that closes the connection, in OpenAI's error shape."""
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return b"%s%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s" % (
        status_line(status), date_line(), len(body), extra, body)
