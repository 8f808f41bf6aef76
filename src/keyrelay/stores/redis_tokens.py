"""Client tokens and migration imports of :class:`keyrelay.stores.redis.RedisStore` (a mixin, to
keep that module short). Tokens live in one hash of JSON rows by id, with a name index and a
hash of revocation times (layout: :mod:`keyrelay.stores.redis_keys`; the ``token``, ``revoke``
and ``import`` scripts: :mod:`keyrelay.stores.redis_scripts`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from keyrelay.core.model import Event, KeyRecord
from keyrelay.stores.base import TokenRecord, refuse_import
from keyrelay.stores.evidence import scrub_event
from keyrelay.stores.redis_base import BATCH, READ_CHUNK, RedisParts, chunks, flat
from keyrelay.stores.redis_health import edge
from keyrelay.stores.redis_keys import MAX_EVENTS, MAX_KEY_EVENTS, event_json, hash_of, num

__all__ = ["TokenMixin"]


def _admin_of(row: Sequence[Any]) -> bool:
    """A token's admin flag (layout 3; tokens written before it are client tokens)."""
    return bool(row[6]) if len(row) > 6 else False


class TokenMixin(RedisParts):
    # -- client tokens ---------------------------------------------------------------------
    def _token_keys(self) -> list[str]:
        n = self.names
        return [n.tokens, n.token_names, n.token_revoked, n.token_seq]

    async def _put_token(self, t: TokenRecord, client: Any = None) -> Any:
        body = json.dumps([t.id, t.name, list(t.pools), t.token_hash, float(t.created_at), t.admin])
        revoked = num(t.revoked_at) if t.revoked else ""
        return await self._run("token", self._token_keys(), [t.id, t.name, body, revoked], client=client)

    @edge
    async def create_token(
        self, name: str, pools: Sequence[str], token_hash: str, now: float, *, admin: bool = False
    ) -> TokenRecord:
        rec = TokenRecord("t" + token_hash[:10], name, tuple(pools), token_hash, now, admin=admin)
        if int(await self._put_token(rec)) == 0:
            raise ValueError(f"a live token named {name!r} already exists")
        return rec

    @edge
    async def list_tokens(self) -> list[TokenRecord]:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.names.tokens)
            pipe.hgetall(self.names.token_revoked)
            bodies, revoked = await pipe.execute()
        rows = sorted(json.loads(b) for b in bodies.values())
        rows.sort(key=lambda r: r[5])  # by created_at, then creation order (sort is stable)
        return [
            TokenRecord(r[1], r[2], tuple(r[3]), r[4], float(r[5]), float(revoked.get(r[1], 0)), _admin_of(r))
            for r in rows
        ]

    @edge
    async def revoke_token(self, name_or_id: str, now: float) -> bool:
        n = self.names
        return int(await self._run("revoke", [n.tokens, n.token_names, n.token_revoked], [name_or_id, num(now)])) == 1

    @edge
    async def find_token(self, token_hash: str) -> TokenRecord | None:
        tid = "t" + token_hash[:10]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(self.names.tokens, tid)
            pipe.hexists(self.names.token_revoked, tid)
            body, revoked = await pipe.execute()
        if body is None or revoked:
            return None
        r = json.loads(body)
        return TokenRecord(r[1], r[2], tuple(r[3]), r[4], float(r[5]), admin=_admin_of(r)) if r[4] == token_hash else None

    # -- migration -------------------------------------------------------------------------
    @edge
    async def import_records(
        self, records: Sequence[KeyRecord], events: Sequence[Event], tokens: Sequence[TokenRecord]
    ) -> None:
        """Insert whole records, events (renumbered, order kept) and tokens, for migration only.
        Refuses, writing nothing, when any key or token id is already here (checked first; a
        key added meanwhile by someone else stops the import at its batch of 1,000)."""
        n = self.names
        async with self._r.pipeline(transaction=False) as pipe:
            for r in records:
                pipe.exists(n.key(r.id))
            for t in tokens:
                pipe.hexists(n.tokens, t.id)
                pipe.hexists(n.token_names, t.name)
            found = await pipe.execute()
        taken = [r.id for r, hit in zip(records, found) if hit]
        hits = iter(found[len(records):])
        for t, id_hit, name_hit in zip(tokens, hits, hits):
            if id_hit:
                taken.append(t.id)
            if name_hit and not t.revoked:
                taken.append(f"live token {t.name!r}")
        refuse_import(records, tokens, taken)
        for batch in chunks(records, BATCH):
            keys = [n.seq, n.changes, n.removed, n.keys, n.lookups,
                    *flat((n.key(r.id), n.pool(r.pool)) for r in batch)]
            fields = [hash_of(r, self.cipher) for r in batch]
            args = [n.channel, self.origin, *flat([r.id, len(f) // 2, *f] for r, f in zip(batch, fields))]
            clash = await self._run("import", keys, args)
            if clash:  # written meanwhile by someone else: nothing of this batch was written
                refuse_import((), (), list(clash))
        self._plain.update((r.id, r.secret) for r in records)
        for chunk in chunks(events, READ_CHUNK):
            async with self._r.pipeline(transaction=False) as pipe:
                for e in chunk:
                    e = scrub_event(e, [self._plain[e.key_id]] if e.key_id in self._plain else [])
                    ev = event_json(e.key_id, e.pool, e.at, e.actor, e.from_state, e.to_state, e.reason, e.detail)
                    await self._run("event", [n.events, n.event_seq, n.key_events(e.key_id)],
                                    [ev, MAX_EVENTS, MAX_KEY_EVENTS], client=pipe)
                self._guard(await pipe.execute())
        for t in sorted(tokens, key=lambda t: t.created_at):
            await self._put_token(t)
