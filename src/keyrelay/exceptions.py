"""keyrelay's exceptions, in one tree. Foreign exceptions are mapped once, at the edge
(``raise … from exc``), and no exception text ever carries a full key.

::

    KeyrelayError
    ├── ConfigError            (config.py)      a setting is wrong; names the field
    ├── StoreError                              a store could not do what was asked
    │   └── StoreUnavailable                    the store cannot be reached right now (retry later)
    │       └── StoreLost                       it answers, but lost its data (flushed): nothing is
    │                                           written until it is re-initialised
    └── NoKeyAvailable                          no key of the pool may take a request now

    InvalidSecret (core/masking.py, a ValueError)  a key value that cannot be stored
"""

from __future__ import annotations

__all__ = ["KeyrelayError", "NoKeyAvailable", "StoreError", "StoreLost", "StoreUnavailable"]


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
