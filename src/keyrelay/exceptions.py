"""keyrelay's exceptions, in one tree. Foreign exceptions are mapped once, at the edge
(``raise … from exc``), and no exception text ever carries a full key.

::

    KeyrelayError
    ├── ConfigError            (config.py)      a setting is wrong; names the field
    ├── StoreError                              a store could not do what was asked
    │   └── StoreUnavailable                    the store cannot be reached right now (retry later)
    └── NoKeyAvailable         (relay.py)       no key of the pool may take a request now

    InvalidSecret (core/masking.py, a ValueError)  a key value that cannot be stored
"""

from __future__ import annotations

__all__ = ["KeyrelayError", "StoreError", "StoreUnavailable"]


class KeyrelayError(Exception):
    """Base of keyrelay's own errors."""


class StoreError(KeyrelayError):
    """A store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the caller may queue the write and retry."""
