"""Keys: list (filter, search, sort, cursor), one key, add, import, disable, enable, recheck,
remove, bulk. Writes go through the same store calls and state machine as the CLI (``on_admin``,
``store.apply`` with its version check, ``store.remove``), recorded with the admin's name; the
key's new record is put into this process's pool at once (other processes sync as usual)."""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from keyrelay.core.machine import effective_state, on_admin
from keyrelay.core.masking import InvalidSecret, mask, validate_secret
from keyrelay.core.model import Counters, KeyRecord
from keyrelay.providers.probes import build_probes
from keyrelay.runtime.checker import Checker
from keyrelay.server.admin.context import Ctx
from keyrelay.server.admin.models import (
    Added,
    AddKeysIn,
    AddKeysOut,
    BulkIn,
    BulkOut,
    BulkResult,
    ImportIn,
    Key,
    KeyCounters,
    KeyPage,
    KeysQuery,
    Refused,
    given,
)
from keyrelay.server.admin.routing import ApiError, Call, Reply

__all__ = [
    "add_keys", "bulk", "disable_key", "enable_key", "get_key", "import_keys", "key_view", "list_keys",
    "recheck_key", "remove_key",
]

log = logging.getLogger("keyrelay.admin")

_BATCH = 5000
_RETRIES = 5


def _failures(c: Counters) -> int:
    return c.requests - c.successes


def key_view(rec: KeyRecord, now: float, counters: Counters | None = None) -> Key:
    c = rec.counters if counters is None else counters
    state = effective_state(rec, now).value
    return Key(
        id=rec.id, pool=rec.pool, masked=rec.masked, state=state, reason=rec.reason,  # type: ignore[arg-type]
        since=rec.since, until=rec.until or None, label=rec.label, weight=rec.weight, balance=rec.balance,
        base_url=getattr(rec, "base_url", None) or None,
        counters=KeyCounters(c.requests, _failures(c), c.prompt_tokens, c.completion_tokens, c.successes),
        stored_state=rec.state.value, currency=rec.currency, added_at=rec.added_at,
        version=rec.version,
    )


# -- listing ------------------------------------------------------------------------------------

_CURSOR_TYPES: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "id": (str,), "state": (str, str), "since": ((int, float), str), "requests": (int, str), "failures": (int, str),
}


def _sort_key(sort: str, now: float, counters: dict[str, Counters]) -> Callable[[KeyRecord], tuple[Any, ...]]:
    if sort == "id":
        return lambda r: (r.id,)
    if sort == "state":
        return lambda r: (effective_state(r, now).value, r.id)
    if sort == "since":
        return lambda r: (r.since, r.id)
    if sort == "requests":
        return lambda r: (counters.get(r.id, r.counters).requests, r.id)
    return lambda r: (_failures(counters.get(r.id, r.counters)), r.id)


def _cursor_of(sort_key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(sort_key))).decode().rstrip("=")


def _cursor_key(cursor: str, sort: str) -> tuple[Any, ...]:
    try:
        raw = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise ApiError(404, "cursor_not_found", "no page at this cursor (not one this API gave out)") from None
    types = _CURSOR_TYPES[sort]
    if (
        not isinstance(raw, list) or len(raw) != len(types)
        or not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(raw, types))
    ):
        raise ApiError(404, "cursor_not_found", "no page at this cursor for this sort order")
    return tuple(raw)


def _matches(q: str) -> Callable[[KeyRecord], bool]:
    tail = q if len(q) <= 4 else None  # the masked tail shows 4 characters at most

    def test(r: KeyRecord) -> bool:
        return r.id.startswith(q) or r.masked == q or (tail is not None and r.masked.endswith(tail))

    return test


async def list_keys(ctx: Ctx, call: Call) -> Reply:
    """Paging runs over this process's in-memory pools (kept in sync with the store): one pass to
    filter, a bounded heap for the page (no object per key). Sorting by counters uses the store's
    snapshot of every key's counters; otherwise the page's counters are read fresh."""
    q: KeysQuery = call.query
    pool_name, state_f, reason_f, text, cursor = given(q.pool), given(q.state), given(q.reason), given(q.q), given(q.cursor)
    pools = [ctx.pool(pool_name)] if pool_name is not None else list(ctx.runtime.pools.values())
    by_counters = q.sort in ("requests", "failures")
    counters = await ctx.counters() if by_counters else {}
    now = time.time()
    match = _matches(text) if text else None
    reason = reason_f.lower() if reason_f else None
    after = _cursor_key(cursor, q.sort) if cursor else None
    found: list[KeyRecord] = []
    for pool in pools:
        recs: Iterable[KeyRecord] = pool.records()
        if state_f is not None:
            recs = [r for r in recs if effective_state(r, now).value == state_f]
        if reason is not None:
            recs = [r for r in recs if reason in r.reason.lower()]
        if match is not None:
            recs = [r for r in recs if match(r)]
        found.extend(recs)
    key = _sort_key(q.sort, now, counters)
    desc = q.order == "desc"
    candidates: Iterable[KeyRecord] = found
    if after is not None:
        candidates = (r for r in found if (key(r) < after if desc else key(r) > after))
    page = (heapq.nlargest if desc else heapq.nsmallest)(q.limit + 1, candidates, key=key)
    more = len(page) > q.limit
    page = page[: q.limit]
    if not by_counters:  # fresh counters for the rows shown (sums of every worker, as flushed)
        stored = await asyncio.gather(*(ctx.runtime.store.get(r.id) for r in page))
        counters = {r.id: r.counters for r in stored if r is not None}
    data = [key_view(r, now, counters.get(r.id)) for r in page]
    return Reply(200, KeyPage(data, _cursor_of(key(page[-1])) if more else None, len(found)))


async def _record(ctx: Ctx, key_id: str) -> KeyRecord:
    rec = await ctx.runtime.store.get(key_id)
    if rec is None:
        raise ApiError(404, "key_not_found", "no key with this id")
    return rec


async def get_key(ctx: Ctx, call: Call) -> Reply:
    return Reply(200, key_view(await _record(ctx, call.params["id"]), time.time()))


# -- adding -------------------------------------------------------------------------------------


async def _add(ctx: Ctx, pool: str, secrets: list[str], label: str, who: str) -> tuple[list[Added], list[str]]:
    kp = ctx.pool(pool)
    added: list[Added] = []
    dups: list[str] = []
    for i in range(0, len(secrets), _BATCH):
        res = await ctx.runtime.store.add_keys(pool, secrets[i:i + _BATCH], time.time(), label=label, actor=who)
        for rec in res.added:
            kp.upsert(rec)
            added.append(Added(rec.id, rec.masked))
        dups.extend(res.duplicates)
    log.info("admin %r added %d keys to pool %s (%d already there)", who, len(added), pool, len(dups))
    return added, dups


async def add_keys(ctx: Ctx, call: Call) -> Reply:
    body: AddKeysIn = call.body
    ctx.pool(body.pool)
    for i, s in enumerate(body.keys):
        try:
            validate_secret(s)
        except InvalidSecret as exc:
            raise ApiError(422, "invalid_key_value", f"keys[{i}]: {exc}; nothing added") from None
    added, dups = await _add(ctx, body.pool, list(dict.fromkeys(body.keys)), body.label, call.who)
    return Reply(201, AddKeysOut(added, dups))


async def import_keys(ctx: Ctx, call: Call) -> Reply:
    body: ImportIn = call.body
    ctx.pool(body.pool)
    refused: list[Refused] = []
    first: dict[str, int] = {}
    for n, line in enumerate(body.text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            validate_secret(s)
        except InvalidSecret as exc:
            refused.append(Refused(n, str(exc)))
            continue
        if s in first:
            refused.append(Refused(n, f"{mask(s)} repeats line {first[s]}"))
            continue
        first[s] = n
    added, dups = await _add(ctx, body.pool, list(first), body.label, call.who)
    return Reply(201, AddKeysOut(added, dups, refused))


# -- acting on one key --------------------------------------------------------------------------


async def _admin(ctx: Ctx, key_id: str, action: str, who: str) -> KeyRecord:
    store = ctx.runtime.store
    for _ in range(_RETRIES):
        rec = await _record(ctx, key_id)
        t = on_admin(rec, action, time.time(), actor=who)
        if t is None:
            return rec
        new = await store.apply(t)
        if new is not None:
            pool = ctx.runtime.pools.get(new.pool)
            if pool is not None:
                pool.upsert(new)
            return new
    raise ApiError(409, "key_busy", f"key {key_id} keeps changing; try again")


async def disable_key(ctx: Ctx, call: Call) -> Reply:
    return Reply(200, key_view(await _admin(ctx, call.params["id"], "disable", call.who), time.time()))


async def enable_key(ctx: Ctx, call: Call) -> Reply:
    return Reply(200, key_view(await _admin(ctx, call.params["id"], "enable", call.who), time.time()))


async def _recheck(ctx: Ctx, key_id: str) -> KeyRecord:
    rec = await _record(ctx, key_id)
    pool = ctx.runtime.pools.get(rec.pool)
    if pool is None:
        raise ApiError(409, "pool_not_served", f"key {key_id} belongs to pool {rec.pool!r}, which this gateway does not serve")
    pool.upsert(rec)
    probes = build_probes(pool.settings.checker, pool.settings.base_url, pool.dialect, None)
    checker = Checker(ctx.runtime.store, [pool], clock=ctx.runtime.clock)
    async with Checker.session() as session:
        await checker.check_key(pool, rec, probes, session)
    return await _record(ctx, key_id)


async def recheck_key(ctx: Ctx, call: Call) -> Reply:
    return Reply(200, key_view(await _recheck(ctx, call.params["id"]), time.time()))


async def _remove(ctx: Ctx, key_id: str, who: str) -> None:
    if not await ctx.runtime.store.remove(key_id, time.time(), actor=who):
        raise ApiError(404, "key_not_found", "no key with this id")
    for pool in ctx.runtime.pools.values():
        pool.remove(key_id)
    log.info("admin %r removed key %s", who, key_id)


async def remove_key(ctx: Ctx, call: Call) -> Reply:
    await _remove(ctx, call.params["id"], call.who)
    return Reply(204)


async def bulk(ctx: Ctx, call: Call) -> Reply:
    body: BulkIn = call.body
    results: list[BulkResult] = []
    for key_id in dict.fromkeys(body.ids):
        try:
            if body.action == "remove":
                await _remove(ctx, key_id, call.who)
            elif body.action == "recheck":
                await _recheck(ctx, key_id)
            else:
                await _admin(ctx, key_id, body.action, call.who)
        except ApiError as exc:
            results.append(BulkResult(key_id, False, exc.code))
        else:
            results.append(BulkResult(key_id, True))
    return Reply(200, BulkOut(results))
