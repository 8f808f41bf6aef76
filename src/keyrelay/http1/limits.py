"""The lean server's bounds on clients (the gateway's ``[server]`` settings), the memory budget
for bodies still arriving, and what answers a connection beyond the cap."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from aiohttp import web

from keyrelay.http1.answers import error_answer

__all__ = ["BodyBudget", "Cap", "Limits", "Refuser", "ServerLike", "bad_credentials", "malformed_answer"]

log = logging.getLogger("keyrelay.server")


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_line_size: int = 8190
    max_body: int = 10 * 1024 * 1024
    body_timeout: float = 30.0
    body_min_rate: float = 10240.0
    max_body_memory: int = 268435456
    max_connections: int = 10000


class BodyBudget:
    """Bytes held by request bodies still arriving, all connections together (one loop: no lock)."""

    __slots__ = ("cap", "held")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.cap:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


_TOO_MANY = error_answer(503, "the gateway has too many open connections; retry shortly", "too_many_connections",
                         "server_error", b"Retry-After: 1\r\n")
_CREDENTIALS = (b"authorization:", b"x-api-key:", b"api-key:", b"x-goog-api-key:", b"proxy-authorization:")


def malformed_answer(exc: Exception, data: bytes) -> bytes:
    """The answer to a request llhttp refused (400; 401 for control characters in a credential
    header, as on the aiohttp server), and its info line (no traceback: the client's fault)."""
    what = type(exc).__name__
    if bad_credentials(data):
        log.info("malformed request refused status=401 error=%s (bad bytes in a credential header)", what)
        return error_answer(401, "malformed credentials: a token is printable ASCII", "invalid_api_key")
    log.info("malformed request refused status=400 error=%s", what)
    return error_answer(400, f"malformed request ({what})", "malformed_request")


def bad_credentials(data: bytes) -> bool:
    """Does ``data`` hold a credential header with bytes no token has (controls, non-ASCII)?"""
    for line in data.split(b"\r\n")[1:]:
        if not line:
            break
        if line.lower().startswith(_CREDENTIALS):
            value = line.partition(b":")[2].strip(b" \t")
            if any(c < 0x20 or c >= 0x7F for c in value):
                return True
    return False


class ServerLike(Protocol):
    """What a connection needs of its server (``server.LeanServer``)."""

    timed_out: int

    @property
    def handler(self) -> Callable[..., Any]: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def budget(self) -> BodyBudget: ...
    @property
    def route(self) -> Callable[[bytes], object] | None: ...
    @property
    def fallback(self) -> web.Server | None: ...
    @property
    def connections(self) -> set[Any]: ...
    @property
    def head_wait(self) -> float: ...


class Cap:
    """The cap on open client connections: one warning when it is reached, then one every 10 s."""

    __slots__ = ("_reported_at", "cap", "refused")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.refused = 0
        self._reported_at = -10.0

    def admit(self, open_now: int) -> bool:
        if open_now < self.cap:
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._reported_at >= 10.0:
            self._reported_at = now
            log.warning("client connections at the cap (max_client_connections=%d): new ones get 503 "
                        "(%d refused so far)", self.cap, self.refused)
        return False


class Refuser(asyncio.Protocol):
    """A connection beyond the cap: its head is read (so the answer is not lost to a reset),
    then 503 and a close; within 2 s and 16 KB at most."""

    def __init__(self) -> None:
        self._seen = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(2.0, self._answer)

    def data_received(self, data: bytes) -> None:
        self._seen = (self._seen + data)[-16384:]
        if b"\r\n\r\n" in self._seen or b"\n\n" in self._seen:
            self._answer()

    def _answer(self) -> None:
        t, self._transport = self._transport, None
        if t is not None and not t.is_closing():
            t.write(_TOO_MANY)
            t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
