"""Parsing of the operations sections of the config: ``[[alerts]]`` webhooks.

Kept out of config.py so that file stays about the gateway itself. Every error is a
:class:`~keyrelay.exceptions.ConfigError` naming the field (``alerts[0].on: unknown event
'key_died' (known: key_retired, pool_low, guard_tripped)``): the CLI prints it as one line and
exits with code 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyrelay.config_schema import ALERT_EVENTS, AlertSettings, check_url, coerce
from keyrelay.exceptions import ConfigError

__all__ = ["parse_alerts"]

_FIELDS = ("url", "url_env", "kind", "on", "pools", "threshold", "timeout", "retries")
_KINDS = ("json", "slack")


def parse_alerts(raw: Any, pool_names: set[str], environ: Mapping[str, str]) -> tuple[AlertSettings, ...]:
    """The ``[[alerts]]`` tables (an empty tuple when there are none)."""
    if not isinstance(raw, list):
        raise ConfigError("alerts", "must be an array of tables ([[alerts]])")
    return tuple(_alert(a, i, pool_names, environ) for i, a in enumerate(raw))


def _alert(raw: Any, i: int, pool_names: set[str], environ: Mapping[str, str]) -> AlertSettings:
    where = f"alerts[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table ([[alerts]])")
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}", f"unknown field (known: {', '.join(_FIELDS)})")
    given = [k for k in ("url", "url_env") if k in raw]
    if len(given) != 1:
        raise ConfigError(where, "give exactly one of url or url_env (the webhook to POST to)")
    if given[0] == "url":
        url = raw["url"]
        if not isinstance(url, str):
            raise ConfigError(f"{where}.url", "expected a string")
        # the URL itself may hold a secret (Slack's do): errors name its scheme and host only
        _check_url_quietly(url, f"{where}.url")
    else:
        var = raw["url_env"]
        if not isinstance(var, str) or not environ.get(var):
            raise ConfigError(f"{where}.url_env", f"environment variable {var} is not set")
        url = environ[var]
        _check_url_quietly(url, f"{where}.url_env ({var})")
    kind = raw.get("kind", "json")
    if kind not in _KINDS:
        raise ConfigError(f"{where}.kind", f"unknown kind {kind!r} (choose from {', '.join(_KINDS)})")
    on = raw.get("on", list(ALERT_EVENTS))
    if not isinstance(on, list) or not on or not all(isinstance(e, str) for e in on):
        raise ConfigError(f"{where}.on", f"expected a list of events from {', '.join(ALERT_EVENTS)}")
    for event in on:
        if event not in ALERT_EVENTS:
            raise ConfigError(f"{where}.on", f"unknown event {event!r} (known: {', '.join(ALERT_EVENTS)})")
    pools = raw.get("pools", [])
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise ConfigError(f"{where}.pools", "expected a list of pool names")
    for p in pools:
        if p not in pool_names:
            raise ConfigError(f"{where}.pools", f"no pool named {p!r}")
    defaults = AlertSettings("")
    threshold = coerce(raw.get("threshold", defaults.threshold), defaults.threshold, f"{where}.threshold")
    if threshold < 1:
        raise ConfigError(f"{where}.threshold", "must be at least 1 (alert when fewer eligible keys remain)")
    timeout = coerce(raw.get("timeout", defaults.timeout), defaults.timeout, f"{where}.timeout")
    if timeout <= 0:
        raise ConfigError(f"{where}.timeout", "must be above 0 seconds")
    retries = coerce(raw.get("retries", defaults.retries), defaults.retries, f"{where}.retries")
    if retries > 20:
        raise ConfigError(f"{where}.retries", f"at most 20, got {retries}")
    return AlertSettings(url, kind, tuple(dict.fromkeys(on)), tuple(pools), threshold, timeout, retries)


def _check_url_quietly(url: str, where: str) -> None:
    try:
        check_url(url, where)
    except ConfigError:
        raise ConfigError(where, f"expected an http(s) URL, got {safe_url(url)!r}") from None


def safe_url(url: str) -> str:
    """A webhook URL fit for a log line: its scheme and host, never its path or query (a Slack
    webhook's path is its secret)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not host:
        return "<not a URL>"
    return f"{parts.scheme}://{host}{port}/…"
