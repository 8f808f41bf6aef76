"""The settings' shape (frozen dataclasses, one per table of the settings file) and how one field
of a table is read and checked. :mod:`keyrelay.config` parses a whole file into these (and
:mod:`keyrelay.config_ops` the ``[[alerts]]`` tables); both import from here, not each other.
Every error is a :class:`~keyrelay.exceptions.ConfigError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from keyrelay.core.policy import CheckerPolicy, CoolingPolicy, RetryPolicy
from keyrelay.exceptions import ConfigError
from keyrelay.stores.crypto import SecretSource

__all__ = [
    "ALERT_EVENTS",
    "DEFAULT_BASE_URL",
    "DEFAULT_STORE_URL",
    "AlertSettings",
    "MetricsSettings",
    "PoolSettings",
    "ServerSettings",
    "Settings",
    "TokenSettings",
    "check_url",
    "coerce",
    "frozen",
    "table",
]

DEFAULT_STORE_URL = "sqlite:///keyrelay.db"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8787
    log_level: str = "info"
    #: refresh interval of the in-memory pool from the store (seconds)
    sync_interval: float = 0.5
    #: how often batched counters are written (seconds)
    flush_interval: float = 1.0
    #: upper bound on concurrent upstream connections (all pools)
    max_connections: int = 1000
    #: gateway processes sharing the port and the store (``keyrelay serve --workers``)
    workers: int = 1
    #: the HTTP layer: "aiohttp" (its server and client), or "lean" (keyrelay.http1: asyncio
    #: protocols + httptools, the relay flow driven from callbacks; other paths still on aiohttp)
    engine: str = "lean"
    # -- limits on clients (server/connections.py, server/bodies.py) --
    #: open client connections at most (each beyond gets 503); lowered to fit the fd limit
    max_client_connections: int = 10000
    #: seconds a connection has to send a whole request head (from its first byte, or its opening)
    header_timeout: float = 10.0
    #: seconds an idle keep-alive connection stays open
    keepalive_timeout: float = 75.0
    #: bytes of one request head (request line and headers) at most: 431 beyond
    max_header_bytes: int = 32768
    #: header lines of one request at most; bytes of the request line or of one header line at most
    max_headers: int = 100
    max_line_size: int = 8190
    #: seconds a request body may stall; after that long, bytes a second it must average
    body_timeout: float = 30.0
    body_min_rate: float = 10240.0
    #: bytes held by request bodies still arriving, all requests together: 503 beyond
    max_body_memory: int = 268435456
    #: unknown tokens a client address may send in a row; then 429 until it slows to
    #: ``auth_failure_rate`` a second (0 turns throttling off)
    auth_failure_burst: int = 20
    auth_failure_rate: float = 1.0
    #: ``/readyz`` (pools and eligible keys) answers without a token
    readyz_public: bool = False


@dataclass(frozen=True, slots=True)
class PoolSettings:
    name: str
    provider: str = "openai"
    base_url: str = DEFAULT_BASE_URL
    strategy: str = "random"
    default: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cooling: CoolingPolicy = field(default_factory=CoolingPolicy)
    checker: CheckerPolicy = field(default_factory=CheckerPolicy)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """A client token declared in the config file (tokens can also live in the store)."""

    name: str
    pools: tuple[str, ...]
    token_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint ``GET /metrics`` (server/metrics.py)."""

    enabled: bool = True
    #: answer only a bearer admin token (401 without a token, 403 for a client token)
    require_admin: bool = False


#: what ``[[alerts]] on`` may name
ALERT_EVENTS = ("key_retired", "pool_low", "guard_tripped")


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """One ``[[alerts]]`` webhook (alerts.py); parsed by config_ops.py."""

    url: str = field(repr=False)  # a Slack webhook URL is a secret: never logged whole
    kind: str = "json"  # json | slack
    on: tuple[str, ...] = ALERT_EVENTS
    pools: tuple[str, ...] = ()  # empty: every pool
    threshold: int = 1  # pool_low: fewer eligible keys than this
    timeout: float = 5.0  # seconds per delivery attempt
    retries: int = 4  # further attempts after a failed one (backoff 1, 2, 4, 8 s …)


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store_url: str = DEFAULT_STORE_URL
    pools: tuple[PoolSettings, ...] = (PoolSettings("openai", default=True),)
    tokens: tuple[TokenSettings, ...] = ()
    source: str = ""
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: tuple[AlertSettings, ...] = ()
    #: where the secret that encrypts the store's keys comes from
    secret: SecretSource = field(default_factory=SecretSource)

    @property
    def default_pool(self) -> PoolSettings:
        for p in self.pools:
            if p.default:
                return p
        return self.pools[0]

    def pool(self, name: str) -> PoolSettings:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


# -- reading one field -----------------------------------------------------------------------


def table(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(where, "must be a table")
    return v


def frozen(cls: type, raw: Mapping[str, Any], where: str, **extra: Any) -> Any:
    """Build a frozen dataclass from a table, checking names and types of every field."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = dict(extra)
    for k, v in raw.items():
        if k not in known or k in extra:
            raise ConfigError(f"{where}.{k}", f"unknown field (known: {', '.join(sorted(set(known) - set(extra)))})")
        f = known[k]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kwargs[k] = coerce(v, default, f"{where}.{k}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, str(exc)) from None


def coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(where, f"expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(where, f"expected an integer, got {value!r}")  # never truncate 8080.5
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ConfigError(where, f"expected an integer, got {value!r}") from None
        if n < 0:
            raise ConfigError(where, f"must not be negative, got {n}")
        return n
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ConfigError(where, f"expected a number, got {value!r}")
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ConfigError(where, f"expected a number, got {value!r}") from None
        if x < 0 or math.isnan(x):
            raise ConfigError(where, f"must be a non-negative number, got {value!r}")
        return x
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(where, f"expected a string, got {value!r}")
        return value
    return value


def check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(where, f"expected an http(s) URL, got {url!r}")
    return url.rstrip("/")
