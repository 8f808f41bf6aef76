"""The layout version of a Redis store (``{prefix}:schema``) and the ordered steps that upgrade
an older layout in place when :meth:`keyrelay.stores.redis.RedisStore.open` meets one.

A new (empty) store is stamped with :data:`SCHEMA_VERSION` at once. An older one takes every
step of :data:`UPGRADES` above its version, in order, each as one optimistic transaction:
``WATCH`` the schema marker and the key index, read what the step needs, then ``MULTI`` its
writes and the version bump, ``EXEC``. When another process changed either meanwhile (it ran the
same step, or added a key) ``EXEC`` fails and the step is tried again from the version found, so
several gateways opening an old store at once upgrade it exactly once, and a crash leaves the
store at the last whole step.

Versions: 1 the first layout; 2 adds the ``base_url`` field of a key (absent: its pool's).
To add version N: write ``_to_N(pipe, names, upgrade)`` — it reads through ``pipe`` (in WATCH
mode, so reads run at once) and returns a function that queues its writes — and add
``N: _to_N`` to :data:`UPGRADES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import WatchError

from keyrelay.stores.redis_keys import Names

__all__ = ["SCHEMA_VERSION", "UPGRADES", "Upgrade", "open_schema"]


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What an upgrade step may need besides the connection."""

    where: str


#: A step reads through the watching pipeline and returns what queues its writes.
Step = Callable[[Any, Names, Upgrade], Awaitable[Callable[[Any], None]]]


async def _to_2(pipe: Any, names: Names, upgrade: Upgrade) -> Callable[[Any], None]:
    """Version 2: a key may carry ``base_url``; a missing field reads as none, so nothing to write."""
    return lambda multi: None


#: target version → the step that brings a store from the version before it; run in order.
UPGRADES: dict[int, Step] = {
    2: _to_2,
}
SCHEMA_VERSION = max(UPGRADES)


async def open_schema(client: Any, names: Names, upgrade: Upgrade) -> int:
    """Stamp a new store, or upgrade an older one step by step; returns the version found at first
    (0 for a new store). Raises ``RuntimeError`` for a layout newer than this keyrelay's."""
    first: int | None = None
    while True:
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(names.schema, names.keys)
                found = int(await pipe.get(names.schema) or 0)
                if first is None:
                    first = found
                if found > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"the Redis store at {upgrade.where} (prefix {names.prefix!r}) has layout version "
                        f"{found}, newer than the {SCHEMA_VERSION} this keyrelay supports: upgrade keyrelay to use it"
                    )
                if found == SCHEMA_VERSION:
                    return first
                if found == 0:
                    target = SCHEMA_VERSION
                    writes: Callable[[Any], None] = lambda multi: None
                else:
                    target = found + 1
                    writes = await UPGRADES[target](pipe, names, upgrade)
                pipe.multi()
                writes(pipe)
                pipe.set(names.schema, target)
                await pipe.execute()
            except WatchError:
                continue  # another process changed the store meanwhile: read again
