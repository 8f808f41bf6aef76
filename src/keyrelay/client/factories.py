"""HTTP clients for the official SDKs, with key rotation built in.

    client = OpenAI(api_key="unused", base_url=..., max_retries=0, http_client=keyrelay.httpx_client(pool))

============================  =====================  =========================================
function                      returns                for
============================  =====================  =========================================
``httpx_client``              ``httpx2.Client``       openai ≥ 3 (``OpenAI``)
``async_httpx_client``        ``httpx2.AsyncClient``  openai ≥ 3 (``AsyncOpenAI``)
``legacy_httpx_client``       ``httpx.Client``        openai 1.x / 2.x, anything built on httpx
``legacy_async_httpx_client`` ``httpx.AsyncClient``   openai 1.x / 2.x (``AsyncOpenAI``)
============================  =====================  =========================================

Each library is imported only when its functions are called (extras ``keyrelay[httpx2]``,
``keyrelay[httpx]``). Keyword arguments go to the client, except the connection options —
``verify``, ``cert``, ``http1``, ``http2``, ``limits``, ``proxy``, ``retries``, ``trust_env``,
``local_address``, ``uds``, ``socket_options`` — which go to the wrapped transport (a client
given ``transport=`` ignores them). Pass ``transport=`` to wrap a transport of your own.
The client's own proxy settings from the environment are not applied: give ``proxy=``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keyrelay.client.pool import Pool

if TYPE_CHECKING:
    import httpx
    import httpx2

__all__ = ["async_httpx_client", "httpx_client", "legacy_async_httpx_client", "legacy_httpx_client"]

_TRANSPORT_OPTIONS = (
    "verify",
    "cert",
    "http1",
    "http2",
    "limits",
    "proxy",
    "retries",
    "trust_env",
    "local_address",
    "uds",
    "socket_options",
)
_EXTRA = {"httpx2": "keyrelay[httpx2]", "httpx": "keyrelay[httpx]"}


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed: pip install '{_EXTRA[name]}'") from exc


def _client(module: str, pool: Pool, asynchronous: bool, kwargs: dict[str, Any]) -> Any:
    if not isinstance(pool, Pool):
        raise TypeError(f"expected a keyrelay.Pool, got {type(pool).__name__}")
    http = _module(module)
    inner = kwargs.pop("transport", None)
    options = {k: kwargs.pop(k) for k in _TRANSPORT_OPTIONS if k in kwargs}
    if inner is None:
        # the connection limits the openai SDK gives its own default client
        options.setdefault("limits", http.Limits(max_connections=1000, max_keepalive_connections=100))
        inner = (http.AsyncHTTPTransport if asynchronous else http.HTTPTransport)(**options)
    retry = pool.retry
    kwargs.setdefault("timeout", http.Timeout(retry.read_timeout, connect=retry.connect_timeout))
    kwargs.setdefault("follow_redirects", True)
    transports = importlib.import_module(f"keyrelay.client.{module}_transport")  # imports the library
    if asynchronous:
        return http.AsyncClient(transport=transports.AsyncKeyRelayTransport(pool, inner), **kwargs)
    return http.Client(transport=transports.KeyRelayTransport(pool, inner), **kwargs)


def httpx_client(pool: Pool, **kwargs: Any) -> httpx2.Client:
    """An ``httpx2.Client`` whose every request goes out with a key of ``pool`` (openai ≥ 3)."""
    client: httpx2.Client = _client("httpx2", pool, False, kwargs)
    return client


def async_httpx_client(pool: Pool, **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` whose every request goes out with a key of ``pool`` (openai ≥ 3)."""
    client: httpx2.AsyncClient = _client("httpx2", pool, True, kwargs)
    return client


def legacy_httpx_client(pool: Pool, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` whose every request goes out with a key of ``pool`` (openai 1.x/2.x)."""
    client: httpx.Client = _client("httpx", pool, False, kwargs)
    return client


def legacy_async_httpx_client(pool: Pool, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every request goes out with a key of ``pool`` (openai 1.x/2.x)."""
    client: httpx.AsyncClient = _client("httpx", pool, True, kwargs)
    return client
