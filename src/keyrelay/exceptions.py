"""keyrelay's exceptions, in one tree. Foreign exceptions are mapped once, at the edge
(``raise … from exc``), and no exception text ever carries a full key.

::

    KeyrelayError
    ├── ConfigError            (also a ValueError) a setting is wrong; names the field.
    │                          A user error: the CLI prints ``config error: …`` and exits 2.
    ├── StoreError             a store could not do what was asked (refused credentials, a schema
    │   │                      newer than this keyrelay, a damaged key file…). Opening a store that
    │   │                      fails is a user error to the CLI (exit 2); failing mid-way, exit 1.
    │   ├── SecretMismatch     the store's keys were sealed with another secret than the one given
    │   │                      (a user error: the wrong key file or ``KEYRELAY_SECRET``)
    │   ├── MigrationMismatch  ``keyrelay migrate``: the destination does not hold what was copied
    │   └── StoreUnavailable   an outage: the store cannot be reached right now. The gateway keeps
    │       │                  serving from memory and retries; nothing here is the user's fault.
    │       └── StoreLost      it answers, but lost its data (flushed): nothing is written until
    │                          it is re-initialised
    ├── BodyRefused            the gateway will not read a client's request body; each becomes a
    │   │                      JSON error in the client's API shape, never a 5xx traceback
    │   ├── BodyTooLarge       over ``max_body_bytes`` (or the memory cap): 413
    │   ├── BodyTooSlow        stalled, or slower than ``body_min_rate``: 408
    │   ├── MalformedBody      bad chunked framing, a body cut short…: 400
    │   ├── Busy               the memory cap for bodies in flight is reached: 503
    │   └── Closing            the server is shutting down before the body arrived whole
    ├── ReadTimeout            (also an ``asyncio.TimeoutError``) the upstream sent nothing for the
    │                          pool's ``read_timeout``: the attempt's outcome is a timeout
    ├── ApiError               the admin API's error answer (status, code, message), raised anywhere
    │                          in a handler and turned into the error shape once
    ├── ClientGone             the caller hung up mid-stream, before its last event: it costs the key
    │                          nothing (``response``: what the gateway had started to send)
    └── NoKeyAvailable         no key of the pool may take a request now (``retry_after``: when
                               the soonest cooling key frees up); the gateway answers 503

Outside this module, for reasons of layer:

- ``CliError`` / ``CliFailure`` (``cli/common.py``) are ``click.ClickException`` s as well as
  ``KeyrelayError`` s (exit codes 2 and 1); this module must not import click.
- ``InvalidSecret`` (``core/masking.py``, a ``ValueError``): a key value that cannot be stored.
  ``core/`` sits below this module and imports nothing of keyrelay outside itself.
- Private control-flow exceptions, never raised to a caller (``_Grew`` in ``server/bodies.py``,
  the fake upstream's ``_Cut``), stay where they are used.

The old homes (``keyrelay.config.ConfigError``, ``keyrelay.migrate.MigrationMismatch``,
``keyrelay.stores.crypto.SecretMismatch``, ``keyrelay.server.bodies.*``,
``keyrelay.server.deadlines.ReadTimeout``, ``keyrelay.server.admin.routing.ApiError``) re-export
the same classes.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ApiError",
    "BodyRefused",
    "BodyTooLarge",
    "BodyTooSlow",
    "Busy",
    "ClientGone",
    "Closing",
    "ConfigError",
    "KeyrelayError",
    "MalformedBody",
    "MigrationMismatch",
    "NoKeyAvailable",
    "ReadTimeout",
    "SecretMismatch",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
]


class KeyrelayError(Exception):
    """Base of keyrelay's own errors."""


class ConfigError(KeyrelayError, ValueError):
    """A configuration problem, naming the field at fault."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


# -- stores ------------------------------------------------------------------------------------


class StoreError(KeyrelayError):
    """A store could not do what was asked."""


class SecretMismatch(StoreError):
    """The store's keys were encrypted with another secret than the one given."""


class MigrationMismatch(StoreError):
    """The destination does not hold what was copied into it."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the caller may queue the write and retry."""


class StoreLost(StoreUnavailable):
    """The store answers but no longer holds its data (its schema marker is gone: a Redis
    flushed, or restarted without persistence). Writes are refused (so nothing half-written is
    put back) until someone re-initialises it; callers keep what they have in memory, as for
    an unreachable store."""


# -- the gateway ---------------------------------------------------------------------------------


class BodyRefused(KeyrelayError):
    """A client's request body the gateway will not read (each subclass names its status)."""


class Closing(BodyRefused):
    """The server is shutting down before the request body arrived whole."""


class BodyTooLarge(BodyRefused):
    """Over the pool's ``max_body_bytes`` (or over the whole memory cap): 413."""


class BodyTooSlow(BodyRefused):
    """Stalled, or slower than ``body_min_rate``: 408."""


class Busy(BodyRefused):
    """The memory cap for bodies in flight is reached: 503."""


class MalformedBody(BodyRefused):
    """Bad chunked framing, a body cut short…: 400."""


class ReadTimeout(KeyrelayError, asyncio.TimeoutError):
    """The upstream sent nothing for the pool's ``read_timeout``."""


class ApiError(KeyrelayError):
    """An answer in the error shape, raised anywhere in a handler."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- the pool ------------------------------------------------------------------------------------


class NoKeyAvailable(KeyrelayError):
    """No key of the pool may take this request now.

    ``retry_after`` (seconds) is when the soonest cooling key frees up, or ``None`` (no key will
    come back by itself); ``empty`` says the pool holds no key at all.
    """

    def __init__(self, pool: str, retry_after: float | None, *, empty: bool = False) -> None:
        if empty:
            msg = f"no usable key in pool {pool!r}: it holds no keys; add some with 'keyrelay keys add --pool {pool} KEY'"
        elif retry_after is not None:
            msg = f"no usable key in pool {pool!r}; the soonest cooling key frees up in {retry_after:.1f}s"
        else:
            msg = (
                f"no usable key in pool {pool!r}: every key is invalid, exhausted or disabled and none comes back "
                f"by itself; see 'keyrelay keys list --pool {pool}'"
            )
        super().__init__(msg)
        self.pool = pool
        self.retry_after = retry_after
        self.empty = empty


class ClientGone(KeyrelayError):
    """The caller hung up mid-stream, before its last event: it costs the key nothing.
    ``response``: the answer the gateway had started to send (a driver's response object)."""

    def __init__(self, response: object) -> None:
        super().__init__("the client went away mid-stream")
        self.response = response
