"""The lean HTTP layer's exceptions.

Upstream failures are :class:`OSError` subclasses, so code that treats ``OSError`` as a network
error (the relay's classification) treats these alike; the timeouts are also
:class:`TimeoutError` (itself an ``OSError``). A request body refused by the server is a
:class:`BodyError`: the client's fault, answered with its :attr:`~BodyError.status`.
"""

from __future__ import annotations

__all__ = [
    "BodyError", "BodyTooLarge", "BodyTooSlow", "Busy", "ConnectTimeout", "MalformedBody", "ProxyError",
    "ReadTimeout", "UpstreamClosed", "UpstreamError", "UpstreamProtocolError",
]


class UpstreamError(OSError):
    """The upstream could not be reached, or its answer could not be read whole."""


class ConnectTimeout(UpstreamError, TimeoutError):
    """No connection (TCP, proxy tunnel and TLS handshake) within the connect timeout."""


class ReadTimeout(UpstreamError, TimeoutError):
    """The upstream sent nothing for the read timeout while an answer was awaited."""


class UpstreamClosed(UpstreamError):
    """The upstream closed the connection before its answer was whole (a body cut short)."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not valid HTTP/1.1."""


class ProxyError(UpstreamError):
    """The HTTP proxy refused the CONNECT tunnel."""


class BodyError(Exception):
    """A request body the server refuses; ``status`` is the answer's."""

    status = 400
    code = "malformed_body"


class BodyTooLarge(BodyError):
    """Over the size limit (or larger than the whole memory cap for bodies in flight): 413."""

    status = 413
    code = "request_too_large"


class BodyTooSlow(BodyError):
    """Stalled for the body timeout, or slower than the minimum rate: 408."""

    status = 408
    code = "request_timeout"


class Busy(BodyError):
    """The memory cap for bodies in flight is reached: 503, retry shortly."""

    status = 503
    code = "server_busy"


class MalformedBody(BodyError):
    """Bad chunked framing, a body cut short by the client: 400."""
