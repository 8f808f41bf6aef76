"""Stores: where keys, their history, counters and client tokens live."""

from __future__ import annotations

from keyrelay.stores.base import AddResult, Changes, Store, TokenRecord, hash_token, key_id_for
from keyrelay.stores.crypto import SecretSource

__all__ = ["AddResult", "Changes", "SecretSource", "Store", "TokenRecord", "hash_token", "key_id_for", "open_store"]


def open_store(url: str, secret: SecretSource | None = None, *, create: bool = True) -> Store:
    """A store for ``url`` (not yet opened: ``await store.open()``). Backends load lazily.
    ``secret``: where the secret that encrypts the keys at rest comes from (SQLite and Redis;
    default: a key file next to the store, created on first use). ``create``: false for
    commands that only read, so a Redis store that is empty (or was flushed) is not stamped as
    new by them (SQLite: the CLI checks that the file exists)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from keyrelay.stores.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from keyrelay.stores.sqlite import SQLiteStore

        return SQLiteStore(url, secret)
    if scheme in ("redis", "rediss", "unix"):
        from keyrelay.stores.redis import RedisStore

        return RedisStore(url, secret, create=create)
    raise ValueError(f"unsupported store URL {url!r} (use memory://, sqlite:///path or redis://host:port/db)")
