"""keyrelay's exceptions, in one tree. Foreign exceptions are mapped once, at the edge
(``raise … from exc``), and no exception text ever carries a full key.

::

    KeyrelayError
    ├── ConfigError            (config.py)      a setting is wrong; names the field
    ├── StoreError                              a store could not do what was asked
    │   └── StoreUnavailable                    the store cannot be reached right now (retry later)
    │       └── StoreLost                       it answers, but lost its data (flushed): nothing is
    │                                           written until it is re-initialised
    └── NoKeyAvailable         (relay.py)       no key of the pool may take a request now

    InvalidSecret (core/masking.py, a ValueError)  a key value that cannot be stored
"""

from __future__ import annotations

__all__ = ["KeyrelayError", "StoreError", "StoreLost", "StoreUnavailable"]


class KeyrelayError(Exception):
    """Base of keyrelay's own errors."""


class StoreError(KeyrelayError):
    """A store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the caller may queue the write and retry."""


class StoreLost(StoreUnavailable):
    """The store answers but no longer holds its data (its schema marker is gone: a Redis
    flushed, or restarted without persistence). Writes are refused (so nothing half-written is
    put back) until someone re-initialises it; callers keep what they have in memory, as for
    an unreachable store."""
