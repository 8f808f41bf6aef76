"""Logging set-up: one structured ``key=value`` line per event on stderr.

Lines never carry a full upstream key: the code logs masked keys only, and a last-line-of-defence
filter redacts anything key-shaped that a foreign exception text might bring in.
"""

from __future__ import annotations

import logging
import sys
import time

from keyrelay.core.masking import redact

__all__ = ["setup_logging", "LogfmtFormatter"]


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg`` — the message itself is already ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg = f"{msg} exc={record.exc_info[0].__name__ if record.exc_info[0] else ''}"
            record.exc_info = None
        if record.name != "keyrelay.access":  # access lines are built from masked values only
            msg = redact(msg)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} {msg}"


def setup_logging(level: str = "info", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
