"""Stores: where keys, their history, counters and client tokens live."""

from __future__ import annotations

from keyrelay.stores.base import AddResult, Changes, Store, TokenRecord, hash_token, key_id_for

__all__ = ["AddResult", "Changes", "Store", "TokenRecord", "hash_token", "key_id_for", "open_store"]


def open_store(url: str) -> Store:
    """A store for ``url`` (not yet opened: ``await store.open()``). Backends load lazily."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from keyrelay.stores.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from keyrelay.stores.sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from keyrelay.stores.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store URL {url!r} (use memory://, sqlite:///path or redis://host:port/db)")
