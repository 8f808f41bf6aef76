"""Logging set-up: one structured ``key=value`` line per event on stderr.

Lines never carry a full upstream key: the code logs masked keys only, and every line but the
access line (built from masked values) passes the process's one redaction (``redactor.py``:
every key of every pool, and any fragment of 8 characters or more), then the old key-shape
pattern.

Lines cannot be forged: every value put into a line is escaped (:func:`escape`: control
characters, CR and LF included, quotes and backslashes become ``\\xNN``), so a value can
neither start a line of its own nor close a quoted value early. The access line's path (the
client's, decoded) is escaped the same way, spaces too, and cut at :data:`PATH_LIMIT`.

The access log is on the hot path (one line per request), so lines are written through a
buffer that a small thread flushes every 0.2 s, and at once for warnings and errors; the
logging module's per-record extras we do not print (caller's file and line, thread, process)
are switched off.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import deque
from typing import TextIO

from keyrelay.core.masking import redact
from keyrelay.core.pool import Lease
from keyrelay.runtime import redactor

__all__ = ["AccessLog", "BufferedStreamHandler", "LogfmtFormatter", "access_log", "escape", "setup_logging"]

#: the longest path an access line shows (the rest is cut, with ``…`` to say so)
PATH_LIMIT = 200


def _hex(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o < 256 else f"\\u{o:04x}"


def escape(value: str, space: bool = False) -> str:
    """``value`` safe inside a log line: control and other non-printable characters (CR, LF,
    NUL, ESC, U+2028…), ``"`` and ``\\`` written as ``\\xNN`` (and spaces too with ``space``)."""
    if value.isprintable() and '"' not in value and "\\" not in value and not (space and " " in value):
        return value
    bad = ' "\\' if space else '"\\'
    return "".join(_hex(c) if c in bad or not c.isprintable() else c for c in value)


def _path(path: str) -> str:
    """A client's path as an access line shows it: escaped, spaces too, and cut."""
    if len(path) > PATH_LIMIT:
        return escape(path[:PATH_LIMIT], True)[:PATH_LIMIT] + "…"
    if path.isprintable() and " " not in path and '"' not in path and "\\" not in path:
        return path
    return escape(path, True)[:PATH_LIMIT]


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg`` — the message itself is already ``key=value`` pairs."""

    _sec = -1
    _ts = ""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and args:  # every value escaped: no forged lines or values
            record.args = tuple(escape(a) if isinstance(a, str) else a for a in args)
        msg = record.getMessage()
        if not msg.isprintable():  # a non-str value (an exception's text) with a CR/LF in it
            msg = "".join(c if c.isprintable() else _hex(c) for c in msg)
        if record.exc_info:
            msg = f"{msg} exc={record.exc_info[0].__name__ if record.exc_info[0] else ''}"
            record.exc_info = None
        if record.name != "keyrelay.access":  # access lines are built from masked values only
            msg = redact(redactor.scrub(msg))
        sec = int(record.created)
        if sec != self._sec:  # one strftime per second, not per line
            self._sec, self._ts = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"ts={self._ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} {msg}"


class BufferedStreamHandler(logging.Handler):
    """Writes lines to ``stream`` in batches: at most ``interval`` seconds late, at once for
    records at WARNING and above."""

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._lines: deque[str] = deque()  # appended without a lock (deque.append is atomic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyrelay-log-flush", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as logging.Handler does: a bad record must not take the request down
            self.handleError(record)
            return
        self._lines.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # one flush at a time keeps the lines in order
            q = self._lines
            lines = [q.popleft() for _ in range(len(q))]  # only flushes take from the left
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # stream closed at exit
                    pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


#: "000" … "999": a format spec (``:03d``, ``:.1f``) costs more than the rest of the line
_MILLIS = tuple(f"{i:03d}" for i in range(1000))


class AccessLog:
    """The access log's fast path: one preformatted line per request, straight into the
    buffered handler (no LogRecord, no formatter pass). Without :func:`setup_logging` (tests,
    embedding), lines go through the ``keyrelay.access`` logger as usual."""

    __slots__ = ("_handler", "_logger", "_sec", "_ts")

    def __init__(self) -> None:
        self._handler: BufferedStreamHandler | None = None
        self._logger = logging.getLogger("keyrelay.access")
        self._sec = -1
        self._ts = ""

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def request(
        self,
        pool: str,
        lease: Lease | None,
        method: str,
        path: str,
        status: int,
        outcome: str,
        attempts: int,
        started: float,
        client: str,
    ) -> None:
        """One request's line (masked key only); ``started`` is its ``time.perf_counter()``."""
        tenths = int((time.perf_counter() - started) * 10_000 + 0.5)  # of a millisecond
        key, masked = ("-", "-") if lease is None else (lease.key_id, lease.masked)
        if len(path) > PATH_LIMIT or not path.isprintable() or " " in path or '"' in path or "\\" in path:
            path = _path(path)
        h = self._handler
        if h is None:
            self._logger.info(
                "pool=%s key=%s masked=%s method=%s path=%s status=%d outcome=%s attempts=%d ms=%.1f client=%s",
                pool, key, masked, escape(method, True), path, status, outcome, attempts, tenths / 10, client,
            )
            return
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec, self._ts = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        h._lines.append(
            f"ts={self._ts}.{_MILLIS[int((now - sec) * 1000)]}Z level=info logger=keyrelay.access pool={pool} key={key} "
            f"masked={masked} method={method} path={path} status={status} outcome={outcome} attempts={attempts} "
            f"ms={tenths // 10}.{tenths % 10} client={client}"
        )


access_log = AccessLog()


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    logging._srcfile = None  # no caller lookup per record: we never print it
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    access_log._handler = handler
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
