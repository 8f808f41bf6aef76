"""``memory://``: the reference store, kept in process. For tests and throw-away demos."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

from keyrelay.core.model import Counters, Event, KeyRecord, Transition
from keyrelay.stores.base import AddResult, Changes, TokenRecord, coalesces, key_id_for, refuse_import
from keyrelay.stores.evidence import scrub_event, scrub_transition
from keyrelay.stores.usage import RETENTION, STEPS, EventQuery, add_key_sums_by_parts, bucket_start, page_of

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._keys: dict[str, KeyRecord] = {}
        self._seq_of: dict[str, int] = {}
        self._removed: dict[str, int] = {}
        self._events: list[Event] = []
        self._tokens: dict[str, TokenRecord] = {}
        self._locks: dict[str, tuple[str, float]] = {}  # name → (owner, expires at)
        self._seq = itertools.count(1)
        self._cursor = 0
        self._usage: dict[tuple[str, int, float], Counters] = {}  # (scope, step, start) -> counters
        self._pruned: dict[int, float] = {}  # step -> the bucket last pruned at

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _bump(self, key_id: str) -> None:
        self._cursor = next(self._seq)
        self._seq_of[key_id] = self._cursor

    def _event(self, ev: Event) -> None:
        self._events.append(replace(ev, seq=len(self._events) + 1))

    async def add_keys(
        self, pool: str, secrets: Sequence[str], now: float, *, weight: float = 1.0, label: str = "",
        base_url: str | None = None,
        actor: str = "admin",
    ) -> AddResult:
        added: list[KeyRecord] = []
        dups: list[str] = []
        for secret in secrets:
            kid = key_id_for(pool, secret)
            if kid in self._keys:
                dups.append(kid)
                continue
            rec = KeyRecord(
                kid, pool, secret, since=now, weight=weight, label=label, added_at=now, base_url=base_url
            )
            self._keys[kid] = rec
            self._removed.pop(kid, None)
            self._bump(kid)
            self._event(Event(kid, pool, now, actor, "", "active", "added"))
            added.append(rec)
        return AddResult(tuple(added), tuple(dups))

    async def load(self, pool: str | None = None) -> list[KeyRecord]:
        return [r for r in self._keys.values() if pool is None or r.pool == pool]

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def apply(self, transition: Transition) -> KeyRecord | None:
        rec = self._keys.get(transition.key_id)
        if rec is None or rec.version != transition.expected_version:
            return None
        transition = scrub_transition(transition, [rec.secret])
        new = transition.applied_to(rec)
        self._keys[rec.id] = new
        self._bump(rec.id)
        t = transition
        ev = Event(t.key_id, t.pool, t.at, t.actor, t.from_state.value, t.to_state.value, t.reason, t.detail)
        i = next((i for i in range(len(self._events) - 1, -1, -1) if self._events[i].key_id == t.key_id), None)
        last = self._events[i] if i is not None else None
        if i is not None and last is not None and coalesces(t, (last.at, last.from_state, last.to_state)):
            self._events[i] = replace(ev, seq=last.seq)  # one event for a burst of re-coolings
        else:
            self._event(ev)
        return new

    async def remove(self, key_id: str, now: float, actor: str = "admin") -> bool:
        rec = self._keys.pop(key_id, None)
        if rec is None:
            return False
        self._seq_of.pop(key_id, None)
        self._cursor = next(self._seq)
        self._removed[key_id] = self._cursor
        self._event(Event(key_id, rec.pool, now, actor, rec.state.value, "removed", "removed by a person"))
        return True

    async def add_counters(self, deltas: Mapping[str, Counters]) -> None:
        for kid, d in deltas.items():
            rec = self._keys.get(kid)
            if rec is not None:
                self._keys[kid] = replace(rec, counters=rec.counters.plus(d))

    async def set_balance(self, key_id: str, balance: float | None, currency: str) -> None:
        rec = self._keys.get(key_id)
        if rec is not None:
            self._keys[key_id] = replace(rec, balance=balance, currency=currency)

    async def record_event(self, event: Event) -> None:
        rec = self._keys.get(event.key_id)
        self._event(scrub_event(event, [rec.secret] if rec else []))

    async def events(self, key_id: str | None = None, limit: int = 200) -> list[Event]:
        evs = [e for e in self._events if key_id is None or e.key_id == key_id]
        return evs[-limit:] if limit else evs

    async def query_events(self, query: EventQuery) -> list[Event]:
        return page_of(query, self._events)

    async def add_usage(self, at: float, rows: Mapping[str, Counters]) -> None:
        for step in STEPS:
            t = bucket_start(at, step)
            for scope, c in rows.items():
                old = self._usage.get((scope, step, t))
                self._usage[(scope, step, t)] = c if old is None else old.plus(c)
            if self._pruned.get(step) != t:  # prune once per bucket
                self._pruned[step] = t
                cutoff = at - RETENTION[step]
                for k in [k for k in self._usage if k[1] == step and k[2] + step <= cutoff]:
                    del self._usage[k]

    async def add_key_sums(self, at: float, sums: Mapping[str, Sequence[int]]) -> None:
        await add_key_sums_by_parts(self, at, sums)

    async def usage(self, scope: str, step: int, since: float, until: float) -> list[tuple[float, Counters]]:
        found = [(t, c) for (s, st, t), c in self._usage.items() if s == scope and st == step and since <= t < until]
        return sorted(found, key=lambda x: x[0])

    async def changes(self, since: int) -> Changes:
        recs = tuple(r for kid, r in self._keys.items() if self._seq_of.get(kid, 0) > since)
        gone = tuple(kid for kid, s in self._removed.items() if s > since)
        return Changes(self._cursor, recs, gone)

    async def try_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        held = self._locks.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def unlock(self, name: str, owner: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == owner:
            del self._locks[name]

    async def create_token(
        self, name: str, pools: Sequence[str], token_hash: str, now: float, *, admin: bool = False
    ) -> TokenRecord:
        if any(t.name == name and not t.revoked for t in self._tokens.values()):
            raise ValueError(f"a live token named {name!r} already exists")
        tid = "t" + token_hash[:10]
        rec = TokenRecord(tid, name, tuple(pools), token_hash, now, admin=admin)
        self._tokens[tid] = rec
        return rec

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: t.created_at)

    async def revoke_token(self, name_or_id: str, now: float) -> bool:
        for t in self._tokens.values():
            if (t.id == name_or_id or t.name == name_or_id) and not t.revoked:
                self._tokens[t.id] = replace(t, revoked_at=now)
                return True
        return False

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        t = self._tokens.get("t" + token_hash[:10])
        if t is None or t.revoked or t.token_hash != token_hash:
            return None
        return t

    async def import_records(
        self, records: Sequence[KeyRecord], events: Sequence[Event], tokens: Sequence[TokenRecord]
    ) -> None:
        live_names = {t.name for t in self._tokens.values() if not t.revoked}
        taken = [r.id for r in records if r.id in self._keys] + [t.id for t in tokens if t.id in self._tokens]
        taken += [f"live token {t.name!r}" for t in tokens if not t.revoked and t.name in live_names]
        refuse_import(records, tokens, taken)
        for rec in records:
            self._keys[rec.id] = rec
            self._removed.pop(rec.id, None)
            self._bump(rec.id)
        secrets = {r.id: r.secret for r in records}
        for ev in events:
            self._event(scrub_event(ev, [secrets[ev.key_id]] if ev.key_id in secrets else []))
        for tok in sorted(tokens, key=lambda t: t.created_at):
            self._tokens[tok.id] = tok
