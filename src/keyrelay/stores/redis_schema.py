"""The layout version of a Redis store (``{prefix}:schema``) and the ordered steps that upgrade
an older layout in place when :meth:`keyrelay.stores.redis.RedisStore.open` meets one.

A new (empty) store is stamped with :data:`SCHEMA_VERSION` at once. An older one takes every
step of :data:`UPGRADES` above its version, in order, each as one optimistic transaction:
``WATCH`` the schema marker and the key index, read what the step needs, then ``MULTI`` its
writes and the version bump, ``EXEC``. When another process changed either meanwhile (it ran the
same step, or added a key) ``EXEC`` fails and the step is tried again from the version found, so
several gateways opening an old store at once upgrade it exactly once, and a crash leaves the
store at the last whole step.

Versions: 1 the first layout; 2 adds the ``base_url`` field of a key (absent: its pool's),
encrypts the keys (``secret`` sealed, ``lookup`` and the ``lookup`` hash, ``cipher``
fingerprint) and redacts the events v1 stored with a plaintext key in them; 3 admin tokens and
usage buckets (nothing rewritten).
Secret rotation (:func:`rotate`) is one optimistic transaction the same way.

To add version N: write ``_to_N(pipe, names, upgrade)`` — it reads through ``pipe`` (in WATCH
mode, so reads run at once) and returns a function that queues its writes — and add
``N: _to_N`` to :data:`UPGRADES`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import WatchError

from keyrelay.core.masking import redact
from keyrelay.exceptions import StoreError
from keyrelay.stores.crypto import KeyCipher, KeyRing
from keyrelay.stores.redis_keys import Names

__all__ = ["SCHEMA_VERSION", "UPGRADES", "Upgrade", "open_schema", "rotate"]


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What an upgrade step may need besides the connection."""

    where: str
    cipher: KeyCipher


#: A step reads through the watching pipeline and returns what queues its writes.
Step = Callable[[Any, Names, Upgrade], Awaitable[Callable[[Any], None]]]


async def _redacted_events(pipe: Any, names: Names, plain: dict[str, str]) -> list[tuple[str, int, str]]:
    """(list, index, line) for every event line that held its key in plaintext (v1 let probe
    messages in unredacted); WATCHes the lists so that the rewrite by index stays right."""
    lists = [names.events, *(names.key_events(k) for k in plain)]
    await pipe.watch(*lists)
    fixed: list[tuple[str, int, str]] = []
    for name in lists:
        for i, line in enumerate(await pipe.lrange(name, 0, -1)):
            seq, key_id, pool, at, actor, frm, to, reason, detail = json.loads(line)
            own = [plain[key_id]] if key_id in plain else []
            new = [redact(reason, own), redact(detail, own)]
            if new != [reason, detail]:
                fixed.append((name, i, json.dumps([seq, key_id, pool, at, actor, frm, to, *new])))
    return fixed


async def _to_2(pipe: Any, names: Names, upgrade: Upgrade) -> Callable[[Any], None]:
    """Version 2: a key may carry ``base_url`` (a missing field reads as none); keys are
    encrypted and found by their keyed hash; events lose the plaintext keys v1 let in."""
    cipher = upgrade.cipher
    ids = await pipe.zrange(names.keys, 0, -1)
    rows = [await pipe.hmget(names.key(k), ["pool", "secret"]) for k in ids]
    plain = {k: secret for k, (pool, secret) in zip(ids, rows) if secret is not None}
    pools = {k: pool for k, (pool, secret) in zip(ids, rows) if secret is not None}
    fixed = await _redacted_events(pipe, names, plain)

    def write(multi: Any) -> None:
        for k, secret in plain.items():
            lookup = cipher.lookup(pools[k], secret)
            multi.hset(names.key(k), mapping={"secret": cipher.seal(k, secret), "lookup": lookup})
            multi.hset(names.lookups, lookup, k)
        for name, i, line in fixed:
            multi.lset(name, i, line)
        multi.set(names.cipher, cipher.fingerprint)

    return write


async def _to_3(pipe: Any, names: Names, upgrade: Upgrade) -> Callable[[Any], None]:
    """Version 3: admin tokens (a 7th element in a token's JSON; absent = a client token) and
    usage buckets (new keys): nothing to rewrite, only the version moves."""
    return lambda multi: None


#: target version → the step that brings a store from the version before it; run in order.
UPGRADES: dict[int, Step] = {
    2: _to_2,
    3: _to_3,
}
SCHEMA_VERSION = max(UPGRADES)


async def open_schema(client: Any, names: Names, where: str, ring: KeyRing, create: bool = True) -> KeyCipher:
    """Stamp a new store (unless ``create`` is false: then :class:`StoreError`), or upgrade an
    older one step by step; returns the cipher of its keys. Raises ``RuntimeError`` for a layout
    newer than this keyrelay's, :class:`SecretMismatch` for keys encrypted with another secret."""
    while True:
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(names.schema, names.keys, names.cipher)
                found = int(await pipe.get(names.schema) or 0)
                if found > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"the Redis store at {where} (prefix {names.prefix!r}) has layout version "
                        f"{found}, newer than the {SCHEMA_VERSION} this keyrelay supports: upgrade keyrelay to use it"
                    )
                stored = await pipe.get(names.cipher) if found >= 2 else None
                empty = int(await pipe.zcard(names.keys)) == 0
                cipher = ring.settle(stored, f"the Redis store at {where} (prefix {names.prefix!r})", empty)
                if found == SCHEMA_VERSION and stored == cipher.fingerprint:
                    return cipher
                writes: Callable[[Any], None] = lambda multi: None
                if found == 0 and not create:
                    raise StoreError(
                        f"no keyrelay store at {where} (prefix {names.prefix!r}): it is empty, or its data was "
                        "lost (flushed). `keyrelay store init` creates one; `keyrelay migrate --to` restores a copy"
                    )
                if found == 0:  # a new store: the current layout at once
                    target = SCHEMA_VERSION
                elif found < SCHEMA_VERSION:
                    target = found + 1
                    writes = await UPGRADES[target](pipe, names, Upgrade(where, cipher))
                else:  # current, but without keys and stamped with another secret
                    target = found
                pipe.multi()
                writes(pipe)
                pipe.set(names.cipher, cipher.fingerprint)  # a new store, or one without keys, takes this secret
                pipe.set(names.schema, target)
                await pipe.execute()
            except WatchError:
                continue  # another process changed the store meanwhile: read again


async def rotate(client: Any, names: Names, old: KeyCipher, new: KeyCipher) -> int:
    """Re-encrypt every key under ``new`` in one MULTI/EXEC (all or nothing: a crash or a lost
    connection midway leaves every key under ``old``); tried again when a key is added or
    removed meanwhile. Returns how many keys were re-encrypted."""
    while True:
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(names.keys, names.cipher)
                if await pipe.get(names.cipher) != old.fingerprint:
                    raise RuntimeError("the store's secret changed while rotating it: run rotate-secret again")
                ids = await pipe.zrange(names.keys, 0, -1)
                rows = [await pipe.hmget(names.key(k), ["pool", "secret"]) for k in ids]
                pipe.multi()
                pipe.delete(names.lookups)
                count = 0
                for k, (pool, sealed) in zip(ids, rows):
                    if sealed is None:
                        continue
                    secret = old.open(k, sealed)
                    lookup = new.lookup(pool, secret)
                    pipe.hset(names.key(k), mapping={"secret": new.seal(k, secret), "lookup": lookup})
                    pipe.hset(names.lookups, lookup, k)
                    count += 1
                pipe.set(names.cipher, new.fingerprint)
                await pipe.execute()
                return count
            except WatchError:
                continue
