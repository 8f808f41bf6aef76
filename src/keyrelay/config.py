"""Settings: a TOML file plus environment overrides, parsed once into frozen values.

This is the only module that reads the environment, and it takes ``environ`` as a parameter.
Every error is a :class:`ConfigError` naming the field, e.g. ``pools[0].strategy: unknown
strategy 'fastest' (choose from random, round_robin, least_busy)``.

The settings file is the first of: ``--config FILE``, ``$KEYRELAY_CONFIG``, ``./keyrelay.toml``,
``keyrelay.toml`` in the user's config directory (``platformdirs``: ``~/.config/keyrelay/`` on
Linux); else built-in defaults. A relative ``sqlite:///`` store path in a file is relative to
that file's directory.

Environment overrides (all optional):

- ``KEYRELAY_CONFIG`` — the file, when ``--config`` is not given
- ``KEYRELAY_HOST``, ``KEYRELAY_PORT``, ``KEYRELAY_LOG_LEVEL``, ``KEYRELAY_ENGINE`` — ``[server]``
- ``KEYRELAY_STORE_URL`` — ``[store] url``
- ``KEYRELAY_POOL_<NAME>_BASE_URL`` — a pool's ``base_url`` (name upper-cased, ``-`` → ``_``)
- ``KEYRELAY_SECRET_KEY`` — the secret the store's keys are encrypted with (at least 32
  characters); unset: a key file (``[store] secret_file``, default next to the store)
- ``KEYRELAY_NEW_SECRET_KEY`` — the new secret for ``keyrelay keys rotate-secret`` when the
  current one comes from ``KEYRELAY_SECRET_KEY``
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from keyrelay.config_ops import parse_alerts
from keyrelay.config_paths import find_config, next_to, sqlite_path
from keyrelay.config_schema import (
    ALERT_EVENTS,
    DEFAULT_BASE_URL,
    DEFAULT_STORE_URL,
    AlertSettings,
    MetricsSettings,
    PoolSettings,
    ServerSettings,
    Settings,
    TokenSettings,
    check_url,
    frozen,
    table,
)
from keyrelay.core.policy import CheckerPolicy, CoolingPolicy, RetryPolicy
from keyrelay.core.selection import STRATEGIES
from keyrelay.exceptions import ConfigError
from keyrelay.providers import DIALECTS, default_base_url
from keyrelay.providers.presets import PRESETS
from keyrelay.stores.base import hash_token
from keyrelay.stores.crypto import MIN_SECRET_LENGTH, SecretSource

__all__ = [
    "ALERT_EVENTS",
    "DEFAULT_BASE_URL",
    "DEFAULT_STORE_URL",
    "AlertSettings",
    "ConfigError",
    "MetricsSettings",
    "PoolSettings",
    "ServerSettings",
    "Settings",
    "TokenSettings",
    "find_config",
    "load_settings",
    "parse_settings",
    "sqlite_path",
]

def _pool(raw: Any, i: int, environ: Mapping[str, str]) -> PoolSettings:
    where = f"pools[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table ([[pools]])")
    raw = dict(raw)
    name = raw.pop("name", None)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ConfigError(f"{where}.name", "required: letters, digits, '-' or '_'")
    if name in ("v1", "healthz", "readyz", "admin", "metrics"):
        raise ConfigError(f"{where}.name", f"{name!r} is reserved")
    retry = frozen(RetryPolicy, raw.pop("retry", {}), f"{where}.retry")
    cooling = frozen(CoolingPolicy, raw.pop("cooling", {}), f"{where}.cooling")
    preset = PRESETS.get(raw.get("provider", "openai")) if isinstance(raw.get("provider", ""), str) else None
    checker_raw = raw.pop("checker", {})
    if preset is not None and preset.balance_api and isinstance(checker_raw, dict):
        checker_raw = {"balance_api": preset.balance_api, **checker_raw}  # its balance endpoint (presets.py)
    checker = frozen(CheckerPolicy, checker_raw, f"{where}.checker")
    if checker.balance_base_url:
        check_url(checker.balance_base_url, f"{where}.checker.balance_base_url")
    env_url = environ.get(f"KEYRELAY_POOL_{name.upper().replace('-', '_')}_BASE_URL")
    if env_url:
        raw["base_url"] = env_url
    provider = raw.get("provider", "openai")
    if not isinstance(provider, str) or provider not in DIALECTS:
        raise ConfigError(f"{where}.provider", f"unknown provider {provider!r} (known: {', '.join(sorted(DIALECTS))})")
    if "base_url" not in raw:  # each provider's own API; Azure's is a resource of its own: required
        raw["base_url"] = default_base_url(provider)
        if not raw["base_url"]:
            raise ConfigError(f"{where}.base_url", f"required for provider {provider!r} (e.g. https://<resource>.openai.azure.com)")
    pool: PoolSettings = frozen(PoolSettings, raw, where, name=name, retry=retry, cooling=cooling, checker=checker)
    if pool.strategy not in STRATEGIES:
        raise ConfigError(
            f"{where}.strategy", f"unknown strategy {pool.strategy!r} (choose from {', '.join(STRATEGIES)})"
        )
    check_url(pool.base_url, f"{where}.base_url")
    return replace(pool, base_url=pool.base_url.rstrip("/"))


def _token(raw: Any, i: int, pool_names: set[str], environ: Mapping[str, str]) -> TokenSettings:
    where = f"tokens[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table ([[tokens]])")
    unknown = set(raw) - {"name", "pools", "sha256", "token", "token_env"}
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}", "unknown field (known: name, pools, sha256, token, token_env)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name", "required")
    pools = raw.get("pools", [])
    if not isinstance(pools, list) or not pools or not all(isinstance(p, str) for p in pools):
        raise ConfigError(f"{where}.pools", "required: a list of pool names (or [\"*\"] for all)")
    for p in pools:
        if p != "*" and p not in pool_names:
            raise ConfigError(f"{where}.pools", f"no pool named {p!r}")
    given = [k for k in ("sha256", "token", "token_env") if k in raw]
    if len(given) != 1:
        raise ConfigError(where, "give exactly one of sha256, token or token_env")
    if given[0] == "sha256":
        h = str(raw["sha256"]).lower()
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ConfigError(f"{where}.sha256", "expected 64 hex digits (sha256 of the token)")
    elif given[0] == "token":
        h = hash_token(str(raw["token"]))
    else:
        var = str(raw["token_env"])
        if not environ.get(var):
            raise ConfigError(f"{where}.token_env", f"environment variable {var} is not set")
        h = hash_token(environ[var])
    return TokenSettings(name, tuple(pools), h)


def parse_settings(doc: Mapping[str, Any], environ: Mapping[str, str], source: str = "") -> Settings:
    """Settings from a decoded TOML document and the environment."""
    known = {"server", "store", "pools", "tokens", "metrics", "alerts"}
    for k in doc:
        if k not in known:
            raise ConfigError(k, f"unknown section (known: {', '.join(sorted(known))})")
    server_raw = dict(table(doc, "server", "server"))
    for env, key in (("KEYRELAY_HOST", "host"), ("KEYRELAY_PORT", "port"), ("KEYRELAY_LOG_LEVEL", "log_level"),
                     ("KEYRELAY_ENGINE", "engine")):
        if environ.get(env):
            server_raw[key] = environ[env]
    server: ServerSettings = frozen(ServerSettings, server_raw, "server")
    if not 0 < server.port < 65536:
        raise ConfigError("server.port", f"must be between 1 and 65535, got {server.port}")
    if server.workers < 1:
        raise ConfigError("server.workers", f"must be at least 1, got {server.workers}")
    for name in ("max_client_connections", "header_timeout", "keepalive_timeout", "max_header_bytes", "max_headers",
                 "max_line_size", "body_timeout", "max_body_memory"):
        if not getattr(server, name) > 0:
            raise ConfigError(f"server.{name}", f"must be greater than 0, got {getattr(server, name)}")
    if server.engine not in ("aiohttp", "lean"):
        raise ConfigError("server.engine", f"expected aiohttp or lean, got {server.engine!r}")
    if server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("server.log_level", f"expected debug, info, warning or error, got {server.log_level!r}")
    store = dict(table(doc, "store", "store"))
    unknown = set(store) - {"url", "secret_file"}
    if unknown:
        raise ConfigError(f"store.{min(unknown)}", "unknown field (known: secret_file, url)")
    store_url = environ.get("KEYRELAY_STORE_URL") or store.get("url", DEFAULT_STORE_URL)
    if not isinstance(store_url, str) or store_url.split(":", 1)[0] not in ("memory", "sqlite", "redis", "rediss", "unix"):
        raise ConfigError("store.url", f"expected memory://, sqlite:///path or redis://…, got {store_url!r}")
    if source and not environ.get("KEYRELAY_STORE_URL"):  # the file's own relative path: next to the file
        store_url = next_to(store_url, Path(source).parent)
    raw_pools = doc.get("pools")
    if raw_pools is None:
        pools: tuple[PoolSettings, ...] = (_pool({"name": "openai", "default": True}, 0, environ),)
    else:
        if not isinstance(raw_pools, list) or not raw_pools:
            raise ConfigError("pools", "must be a non-empty array of tables ([[pools]])")
        pools = tuple(_pool(p, i, environ) for i, p in enumerate(raw_pools))
    names = [p.name for p in pools]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError("pools", f"pool name {n!r} appears twice")
    if sum(p.default for p in pools) > 1:
        raise ConfigError("pools", "more than one pool is marked default")
    raw_tokens = doc.get("tokens", [])
    if not isinstance(raw_tokens, list):
        raise ConfigError("tokens", "must be an array of tables ([[tokens]])")
    tokens = tuple(_token(t, i, set(names), environ) for i, t in enumerate(raw_tokens))
    metrics: MetricsSettings = frozen(MetricsSettings, table(doc, "metrics", "metrics"), "metrics")
    alerts = parse_alerts(doc.get("alerts", []), set(names), environ)
    secret = _secret(store.get("secret_file"), store_url, environ, source)
    return Settings(server, store_url, pools, tokens, source, metrics, alerts, secret)


def _secret(file: Any, store_url: str, environ: Mapping[str, str], source: str) -> SecretSource:
    """Where the store's secret comes from: ``KEYRELAY_SECRET_KEY``, else ``[store] secret_file``
    (relative to the settings file), else the store's default key file (SQLite: next to the
    file; Redis: ``redis.key`` in the user's data directory)."""
    values = {}
    for var in ("KEYRELAY_SECRET_KEY", "KEYRELAY_NEW_SECRET_KEY"):
        value = environ.get(var) or None
        if value is not None and (len(value) < MIN_SECRET_LENGTH or not value.isprintable() or value != value.strip()):
            raise ConfigError(
                var, f"must be at least {MIN_SECRET_LENGTH} printable characters without surrounding spaces "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        values[var] = value
    if file is not None and (not isinstance(file, str) or not file):
        raise ConfigError("store.secret_file", "expected a file path")
    base = os.path.dirname(os.path.abspath(source)) if source else ""
    path = os.path.join(base, file) if file is not None and base else file
    return SecretSource(values["KEYRELAY_SECRET_KEY"], path, values["KEYRELAY_NEW_SECRET_KEY"])


def load_settings(
    path: str | None, environ: Mapping[str, str] | None = None, *, discover: bool = False,
    cwd: Path | None = None, user_file: Path | None = None,
) -> Settings:
    """Read ``path`` (or ``$KEYRELAY_CONFIG``; defaults when neither is given). With ``discover``
    (the CLI), look for ``./keyrelay.toml`` and the user's ``keyrelay.toml`` too (:func:`find_config`)."""
    env = os.environ if environ is None else environ
    if discover:
        path = find_config(path, env, cwd, user_file)
    else:
        path = path or env.get("KEYRELAY_CONFIG") or None
    if path is None:
        return parse_settings({}, env)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), "config file not found") from None
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read config file ({exc.strerror})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"invalid TOML: {exc}") from None
    return parse_settings(doc, env, str(p))
