"""Running a request's handler on the lean server (``connection.py`` dispatches): a handler that
answers by itself (now, or later from callbacks) returns ``None`` and costs no task; one that
returns a coroutine runs in a task, and whatever that coroutine leaves unanswered (a body
refused, a failure, no answer at all) is answered here, and the connection goes on or closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from keyrelay.http1.answers import error_answer
from keyrelay.http1.errors import BodyError
from keyrelay.http1.request import Request
from keyrelay.http1.writer import ResponseWriter

__all__ = ["raised", "run_handler"]

log = logging.getLogger("keyrelay.server")


class _Answering(Protocol):
    """What of its connection a handler's task needs (``connection.py``'s ``Connection``)."""

    def write(self, data: bytes) -> None: ...
    def answered(self, req: Request, close: bool) -> None: ...
    def close(self) -> None: ...


async def raised(exc: Exception) -> None:
    """A handler's synchronous exception, raised where its coroutine's would be."""
    raise exc


async def run_handler(conn: _Answering, req: Request, w: ResponseWriter, answer: Awaitable[None]) -> None:
    """Await a handler's coroutine; answer what it left unanswered."""
    try:
        await answer
    except BodyError as exc:
        if not w.started:
            w.close_after = True
            _answer_error(conn, req, w, error_answer(exc.status, str(exc) or exc.code, exc.code,
                                                     "server_error" if exc.status >= 500 else "invalid_request_error"))
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("the request handler failed (%s %s)", req.method, req.path)
        if not w.started:
            _answer_error(conn, req, w, error_answer(500, "internal error", "internal_error", "server_error"))
        else:
            conn.close()
    else:
        if not w.ended:
            if w.started:
                w.end()
            else:
                log.error("the request handler returned without an answer (%s %s)", req.method, req.path)
                _answer_error(conn, req, w, error_answer(500, "no answer", "internal_error", "server_error"))


def _answer_error(conn: _Answering, req: Request, w: ResponseWriter, answer: bytes) -> None:
    """A whole error answer (it closes the connection), in place of the handler's."""
    w.started = w.ended = True
    conn.write(answer)
    conn.answered(req, True)
