"""``redis://host:port/db``, ``rediss://…`` (TLS), ``unix:///path.sock``: the store several
gateways share, with the ``redis`` package's asyncio client (``pip install 'keyrelay[redis]'``).

URL: anything redis-py's ``from_url`` reads, plus ``?prefix=NAME`` (default ``keyrelay``): every
Redis key of the store starts with ``NAME:``, so several stores can share one database. The
layout is in :mod:`keyrelay.stores.redis_keys`, the Lua scripts in
:mod:`keyrelay.stores.redis_scripts`, error mapping and outage tracking in
:mod:`keyrelay.stores.redis_health`; client tokens and migration imports in
:mod:`keyrelay.stores.redis_tokens`, event queries and usage in :mod:`keyrelay.stores.redis_usage`. Plain hashes, sets, sorted sets, lists and EVALSHA only:
Redis ≥ 6 or Valkey, no modules; not Redis Cluster.

- **Atomic transitions.** Every add, transition and removal is one Lua script: the version
  check, the write (``since`` changes only with the state, ``version`` + 1, exactly as
  :meth:`Transition.applied_to`), the event, the change sequence and a ``PUBLISH`` happen
  together or not at all. Scripts run through ``register_script`` (EVALSHA; after a
  ``SCRIPT FLUSH`` or a failover redis-py loads the script again on NOSCRIPT).
- **Time.** Deadlines (``until``) and event times (``at``) are absolute epoch seconds from the
  clock of the process that decided (its ``time.time()``), written as given: keep the clocks of
  the gateways in sync (NTP). Redis's own clock is never read.
- **History** is capped: the last 100,000 events of the store and the last 1,000 of each key
  (``MAX_EVENTS`` / ``MAX_KEY_EVENTS``); ``events(key_id)`` reads the key's own list.
- **Change feed.** :meth:`RedisStore.changes` reads the cursor and the changed ids in one
  MULTI; :meth:`RedisStore.watch` subscribes to the change channel so other processes sync at
  once instead of at their next poll.
- **Errors.** Connection failures and timeouts become :class:`StoreUnavailable` naming only
  ``host:port`` (never the password), refused credentials a :class:`StoreError`.
- **Outages.** Once open, the store logs one line when the server stops answering and one when
  it is back (calls and the watch alike, however many fail meanwhile). While it is down, calls
  fail at once with :class:`StoreUnavailable`, except one attempt per backoff step (0.1 s
  doubling to 5 s), so callers that queue their writes (the gateway) are not slowed down.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets as _secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from keyrelay.core.model import Counters, Event, KeyRecord, Transition
from keyrelay.exceptions import StoreError, StoreLost
from keyrelay.stores.base import COALESCE_WINDOW, AddResult, Changes, key_id_for
from keyrelay.stores.crypto import KeyCipher, SecretSource, key_ring
from keyrelay.stores.evidence import scrub_event, scrub_transition
from keyrelay.stores.redis_base import BATCH, READ_CHUNK, chunks, flat
from keyrelay.stores.redis_health import Health, edge, watch
from keyrelay.stores.redis_keys import (
    FIELDS,
    MAX_EVENTS,
    MAX_KEY_EVENTS,
    Names,
    event_json,
    event_of,
    num,
    pairs_of,
    record_of_hash,
    record_of_values,
    split_url,
)
from keyrelay.stores.redis_schema import open_schema, rotate
from keyrelay.stores.redis_scripts import GUARDED, LOST, LUA
from keyrelay.stores.redis_tokens import TokenMixin
from keyrelay.stores.redis_usage import UsageMixin
from keyrelay.stores.usage import add_key_sums_by_parts

__all__ = ["RedisStore", "default_key_file"]

log = logging.getLogger("keyrelay.store")



def default_key_file() -> str:
    """The key file of Redis stores when neither ``KEYRELAY_SECRET_KEY`` nor a file is given:
    ``redis.key`` in the user's data directory (``~/.local/share/keyrelay/`` on Linux), so every
    gateway of this user on this machine finds the same secret, whatever the server or prefix."""
    import platformdirs

    home = platformdirs.user_data_path("keyrelay")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(home / "redis.key")


class RedisStore(UsageMixin, TokenMixin):
    """The Store protocol on Redis; also :meth:`watch` for instant change notifications."""

    max_events = MAX_EVENTS

    def __init__(self, url: str, secret: SecretSource | None = None, *, create: bool = True) -> None:
        self.url = url
        self._client_url, prefix, self.where = split_url(url)
        self.names = Names(prefix)
        self.secret = secret or SecretSource()
        self.create = create  # False: opening a store without its schema marker fails (read-only commands)
        self._cipher: KeyCipher | None = None
        self._plain: dict[str, str] = {}
        #: the schema marker was found gone (see StoreLost); ``epoch`` grows at each re-initialisation
        self.lost = False
        self.epoch = 0  # key id → key, of the records read: what events are scrubbed with
        #: the key file, when opening created it (the CLI prints its path)
        self.created_key_file: str | None = None
        #: the key file the secret comes from (None: KEYRELAY_SECRET_KEY)
        self.key_file: str | None = None
        self.origin = _secrets.token_hex(8)  # tags our own change notifications
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._health = Health(self.where)  # one log line per outage, backoff while down

    # -- plumbing --------------------------------------------------------------------------
    @property
    def cipher(self) -> KeyCipher:
        if self._cipher is None:
            raise RuntimeError(f"the Redis store at {self.where} is not open (await store.open() first)")
        return self._cipher

    @property
    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError(f"the Redis store at {self.where} is not open (await store.open() first)")
        return self._redis

    async def _run(self, script: str, keys: Sequence[object], args: Sequence[object], client: Any = None) -> Any:
        """Run one of ``LUA`` (EVALSHA; loaded again on NOSCRIPT), on ``client`` (a pipeline) if
        given. A guarded script gets the schema marker's name last and raises :class:`StoreLost`
        when the marker is gone (pipelines: :meth:`_guard` their results)."""
        redis_client = self._r  # raises when the store is not open
        if script in GUARDED:
            if self.lost:
                await self._relost()
            args = [*args, self.names.schema]
        if client is not None:
            return await self._scripts[script](keys=keys, args=args, client=client)
        return self._guard([await self._scripts[script](keys=keys, args=args, client=redis_client)])[0]

    def _guard(self, results: list[Any]) -> list[Any]:
        """``results`` of guarded scripts, or :class:`StoreLost` (one error line when first seen)."""
        if any(r == LOST for r in results):
            if not self.lost:
                self.lost = True
                log.error(
                    "redis store at %s (prefix %s) lost its data (its schema marker is gone: flushed, or restarted "
                    "empty): serving from memory and writing nothing to it until it is re-initialised "
                    "(`keyrelay store init`, or `keyrelay migrate --to` it from a backup)", self.where, self.names.prefix,
                )
            raise StoreLost(f"the redis store at {self.where} lost its data")
        return results

    async def _relost(self) -> None:
        """While lost: refuse, and when the marker is back (re-initialised), refuse this one call
        too but grow ``epoch``, so callers read the store again before writing to it."""
        if await self._r.exists(self.names.schema):
            self.lost, self.epoch = False, self.epoch + 1
            log.warning("redis store at %s (prefix %s) was re-initialised: reading it again before writing to it",
                        self.where, self.names.prefix)
        raise StoreLost(f"the redis store at {self.where} lost its data")

    async def _records(self, ids: Sequence[str]) -> list[KeyRecord]:
        out: list[KeyRecord] = []
        for chunk in chunks(ids, READ_CHUNK):
            async with self._r.pipeline(transaction=False) as pipe:
                for batch in chunks(chunk, BATCH):
                    await self._run("fetch", [self.names.key(k) for k in batch], FIELDS, client=pipe)
                replies = await pipe.execute()
            # a key removed meanwhile comes back empty and is skipped
            cipher = self.cipher
            out.extend(record_of_values(v, cipher) for reply in replies for v in json.loads(reply) if v[0])
        self._plain.update((r.id, r.secret) for r in out)
        return out

    async def _secret_of(self, key_id: str) -> list[str]:
        """The key of ``key_id`` (read once, then remembered), to scrub its events with."""
        secret = self._plain.get(key_id)
        if secret is None:
            sealed = await self._r.hget(self.names.key(key_id), "secret")
            if sealed is None:
                return []
            secret = self._plain[key_id] = self.cipher.open(key_id, str(sealed))
        return [secret]

    # -- lifecycle -------------------------------------------------------------------------
    @edge
    async def open(self) -> None:
        if self._redis is not None:
            return
        client = aioredis.from_url(
            self._client_url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)),
        )
        try:
            await client.ping()  # no key file for a server that cannot be reached
            ring = key_ring(self.secret, "" if self.secret.value or self.secret.file else default_key_file())
            self._cipher = await open_schema(client, self.names, self.where, ring, self.create)
            self.created_key_file = ring.file if ring.created else None
            self.key_file = ring.file
        except BaseException:
            await client.aclose()
            raise
        self._scripts = {name: client.register_script(src) for name, src in LUA.items()}
        self._redis = client

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    # -- keys ------------------------------------------------------------------------------
    @edge
    async def add_keys(
        self, pool: str, secrets: Sequence[str], now: float, *, weight: float = 1.0, label: str = "",
        base_url: str | None = None,
        actor: str = "admin",
    ) -> AddResult:
        n, cipher = self.names, self.cipher
        ids = [key_id_for(pool, s) for s in secrets]
        head_keys = [n.seq, n.changes, n.removed, n.keys, n.pool(pool), n.events, n.event_seq, n.lookups]
        event_tail = json.dumps([pool, float(now), actor, "", "active", "added", ""])[1:]  # the script adds the id
        head_args = [pool, num(now), num(weight), label, MAX_EVENTS, MAX_KEY_EVENTS, n.channel, self.origin, event_tail]
        flags: list[bool] = []
        for start in range(0, len(ids), READ_CHUNK):  # a few MB per round trip: no socket write timeout
            async with self._r.pipeline(transaction=False) as pipe:
                for lo in range(start, min(start + READ_CHUNK, len(ids)), BATCH):
                    batch = [
                        (k, cipher.seal(k, s), cipher.lookup(pool, s))
                        for k, s in zip(ids[lo:lo + BATCH], secrets[lo:lo + BATCH])
                    ]
                    keys = head_keys + flat((n.key(k), n.key_events(k)) for k, _, _ in batch)
                    await self._run("add", keys, [*head_args, json.dumps(batch), base_url or ""], client=pipe)
                flags += [x == "1" for batch_flags in self._guard(await pipe.execute()) for x in batch_flags]
        new = functools.partial(
            KeyRecord, pool=pool, since=now, weight=weight, label=label, added_at=now, base_url=base_url
        )
        added = tuple(new(id=k, secret=s) for k, s, ok in zip(ids, secrets, flags) if ok)
        self._plain.update((r.id, r.secret) for r in added)
        return AddResult(added, tuple(k for k, ok in zip(ids, flags) if not ok))

    @edge
    async def load(self, pool: str | None = None) -> list[KeyRecord]:
        index = self.names.keys if pool is None else self.names.pool(pool)
        return await self._records(json.loads(await self._run("members", [index], [])) or [])

    @edge
    async def get(self, key_id: str) -> KeyRecord | None:
        h = cast(dict[str, str], await self._r.hgetall(self.names.key(key_id)))
        if not h:
            return None
        rec = record_of_hash(h, self.cipher)
        self._plain[rec.id] = rec.secret
        return rec

    @edge
    async def apply(self, transition: Transition) -> KeyRecord | None:
        t, n = scrub_transition(transition, await self._secret_of(transition.key_id)), self.names
        ev = event_json(t.key_id, t.pool, t.at, t.actor, t.from_state.value, t.to_state.value, t.reason, t.detail)
        keys = [n.key(t.key_id), n.seq, n.changes, n.events, n.event_seq, n.key_events(t.key_id)]
        args = [
            t.expected_version, t.to_state.value, t.reason, num(t.at), num(t.until), ev,
            MAX_EVENTS, MAX_KEY_EVENTS, n.channel, self.origin, t.key_id, COALESCE_WINDOW,
        ]
        result = await self._run("apply", keys, args)
        return record_of_hash(pairs_of(result), self.cipher) if isinstance(result, list) else None

    @edge
    async def remove(self, key_id: str, now: float, actor: str = "admin") -> bool:
        n = self.names
        for _ in range(100):  # retried only while the key keeps changing under us
            got = cast(list[str | None], await self._r.hmget(n.key(key_id), ["pool", "state", "version"]))
            pool, state, version = got
            if pool is None or state is None or version is None:
                return False
            keys = [
                n.key(key_id), n.seq, n.changes, n.removed, n.keys, n.pool(pool),
                n.events, n.event_seq, n.key_events(key_id), n.lookups,
            ]
            ev = event_json(key_id, pool, now, actor, state, "removed", "removed by a person", "")
            args = [version, pool, key_id, ev, MAX_EVENTS, MAX_KEY_EVENTS, n.channel, self.origin]
            done = int(await self._run("remove", keys, args))
            if done >= 0:
                return done == 1
        raise StoreError(f"key {key_id} kept changing while being removed")

    async def add_key_sums(self, at: float, sums: Mapping[str, Sequence[int]]) -> None:
        await add_key_sums_by_parts(self, at, sums)  # two pipelines of BATCH keys: the keys' hashes, their buckets

    @edge
    async def add_counters(self, deltas: Mapping[str, Counters]) -> None:
        rows = [(kid, [(f, v) for f, v in d.as_dict().items() if v]) for kid, d in deltas.items()]
        rows = [(kid, pairs) for kid, pairs in rows if pairs]
        if not rows:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for batch in chunks(rows, BATCH):
                keys = [self.names.key(kid) for kid, _ in batch]
                args = flat([len(pairs), *flat(pairs)] for _, pairs in batch)
                await self._run("counters", keys, args, client=pipe)
            self._guard(await pipe.execute())

    @edge
    async def set_balance(self, key_id: str, balance: float | None, currency: str) -> None:
        await self._run("balance", [self.names.key(key_id)], ["" if balance is None else num(balance), currency])

    # -- events and changes ----------------------------------------------------------------
    @edge
    async def record_event(self, event: Event) -> None:
        e, n = scrub_event(event, await self._secret_of(event.key_id)), self.names
        ev = event_json(e.key_id, e.pool, e.at, e.actor, e.from_state, e.to_state, e.reason, e.detail)
        await self._run("event", [n.events, n.event_seq, n.key_events(e.key_id)], [ev, MAX_EVENTS, MAX_KEY_EVENTS])

    @edge
    async def events(self, key_id: str | None = None, limit: int = 200) -> list[Event]:
        name = self.names.events if key_id is None else self.names.key_events(key_id)
        lines = await self._run("lines", [name], [-limit if limit > 0 else 0, -1])
        return [event_of(line) for line in lines.split("\n")] if lines else []

    @edge
    async def changes(self, since: int) -> Changes:
        n = self.names
        snapshot = await self._run("changes", [n.seq, n.changes, n.removed], [f"({int(since)}"])
        cursor, ids, gone = json.loads(snapshot)  # the cursor and the ids: one atomic read
        # Records read after the snapshot may be newer (fine: versions only grow) or gone
        # (skipped: their removal has a later seq, seen by the next call).
        return Changes(int(cursor), tuple(await self._records(ids or [])), tuple(gone or []))

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` whenever another process changes a key, until cancelled (see
        :func:`keyrelay.stores.redis_health.watch`)."""
        await watch(self._r, self.names.channel, self.origin, self._health, on_change)

    # -- locks -----------------------------------------------------------------------------
    @edge
    async def try_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        gc_ms = int((ttl + 60) * 1000)
        return int(await self._run("lock", [self.names.lock(name)], [owner, num(now), num(now + ttl), gc_ms])) == 1

    @edge
    async def unlock(self, name: str, owner: str) -> None:
        await self._run("unlock", [self.names.lock(name)], [owner])

    # -- keys at rest ----------------------------------------------------------------------
    @edge
    async def rotate_secret(self, new: KeyCipher) -> int:
        """Re-encrypt every key under ``new`` atomically (one MULTI/EXEC); returns how many."""
        count = await rotate(self._r, self.names, self.cipher, new)
        self._cipher = new
        return count
