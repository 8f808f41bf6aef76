"""Session, pools, tokens, events (and their live feed), check and usage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

import msgspec
from aiohttp import web

from keyrelay.core.machine import effective_state
from keyrelay.core.model import COUNTER_FIELDS, Counters, Event
from keyrelay.runtime.checker import Checker
from keyrelay.server.admin.auth import cookie_header
from keyrelay.server.admin.context import Ctx
from keyrelay.server.admin.models import (
    STATES,
    Bucket,
    CheckIn,
    CheckOut,
    CheckRowOut,
    EventOut,
    EventPage,
    EventsQuery,
    KeyEventsQuery,
    Pool,
    PoolList,
    SessionIn,
    SessionOut,
    StateCounts,
    TokenCreated,
    TokenIn,
    TokenList,
    TokenOut,
    UsageOut,
    UsageQuery,
    given,
)
from keyrelay.server.admin.routing import ApiError, Call, Reply
from keyrelay.stores import hash_token
from keyrelay.stores.usage import HOUR, MINUTE, RETENTION, EventQuery, bucket_start, key_scope, pool_scope

__all__ = [
    "check", "create_token", "events", "events_stream", "key_events", "list_pools", "list_tokens", "revoke_token",
    "session_get", "sign_in", "sign_out", "usage",
]

log = logging.getLogger("keyrelay.admin")

PING_SECONDS = 15.0


# -- session ------------------------------------------------------------------------------------


async def sign_in(ctx: Ctx, call: Call) -> Reply:
    body: SessionIn = call.body
    rec = await ctx.auth.admin_of(body.token)
    value = ctx.auth.session_for(rec)
    return Reply(200, SessionOut(rec.name, ctx.auth.csrf_for(rec, value)),
                 {"Set-Cookie": cookie_header(value, call.request)})


async def session_get(ctx: Ctx, call: Call) -> Reply:
    return Reply(200, SessionOut(call.who, call.csrf))


async def sign_out(ctx: Ctx, call: Call) -> Reply:
    return Reply(204, None, {"Set-Cookie": cookie_header("", call.request, max_age=0)})


# -- pools --------------------------------------------------------------------------------------


async def list_pools(ctx: Ctx, call: Call) -> Reply:
    now = time.time()
    out = []
    for name, pool in ctx.runtime.pools.items():
        counts = dict.fromkeys(STATES, 0)
        records = pool.records()
        for r in records:
            counts[effective_state(r, now).value] += 1
        s = pool.settings
        out.append(Pool(name, s.provider, s.base_url, len(records), pool.eligible_count(), StateCounts(**counts)))
    return Reply(200, PoolList(out))


# -- tokens -------------------------------------------------------------------------------------


async def list_tokens(ctx: Ctx, call: Call) -> Reply:
    toks = await ctx.runtime.store.list_tokens()
    return Reply(200, TokenList([
        TokenOut(t.id, t.name, list(t.pools), t.admin, t.created_at, t.revoked_at if t.revoked else None) for t in toks
    ]))


async def create_token(ctx: Ctx, call: Call) -> Reply:
    body: TokenIn = call.body
    if body.admin and body.pools:
        raise ApiError(409, "admin_token_pools", "an admin token uses no pool: leave 'pools' empty")
    if not body.admin and not body.pools:
        raise ApiError(409, "token_pools_required", "give the pools the token may use ('*' for every pool)")
    for p in body.pools:
        if p != "*":
            ctx.pool(p)
    token = "kr-" + secrets.token_urlsafe(32)
    try:
        rec = await ctx.runtime.store.create_token(
            body.name, list(dict.fromkeys(body.pools)), hash_token(token), time.time(), admin=body.admin
        )
    except ValueError as exc:
        raise ApiError(409, "token_exists", str(exc)) from None
    ctx.auth.forget()
    log.info("admin %r created %stoken %r (id %s)", call.who, "admin " if rec.admin else "", rec.name, rec.id)
    return Reply(201, TokenCreated(rec.id, rec.name, token))


async def revoke_token(ctx: Ctx, call: Call) -> Reply:
    tid = call.params["id"]
    live = [t for t in await ctx.runtime.store.list_tokens() if t.id == tid and not t.revoked]
    if live and live[0].name == call.who and live[0].admin:
        raise ApiError(409, "own_token", "this is the token you are signed in with; revoke it from another admin "
                       "token or with 'keyrelay tokens revoke'")
    if not live or not await ctx.runtime.store.revoke_token(tid, time.time()):
        raise ApiError(404, "token_not_found", "no live token with this id")
    ctx.auth.forget()
    log.info("admin %r revoked token %r (id %s)", call.who, live[0].name, tid)
    return Reply(204)


# -- events -------------------------------------------------------------------------------------


def event_out(e: Event) -> EventOut:
    return EventOut(e.seq, e.key_id, e.pool, e.at, e.from_state, e.to_state, e.reason, e.detail, e.actor)


def _before(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) < 2**62:
        raise ApiError(404, "cursor_not_found", "no page at this cursor (not one this API gave out)")
    return int(cursor)


async def _page(ctx: Ctx, q: EventQuery) -> Reply:
    found = await ctx.runtime.store.query_events(q)
    more = len(found) == q.limit and found[-1].seq > 1
    return Reply(200, EventPage([event_out(e) for e in found], str(found[-1].seq) if more else None))


async def events(ctx: Ctx, call: Call) -> Reply:
    q: EventsQuery = call.query
    pool = given(q.pool)
    if pool is not None:
        ctx.pool(pool)
    query = EventQuery(given(q.key), pool, given(q.since), given(q.until), before=_before(given(q.cursor)), limit=q.limit)
    return await _page(ctx, query)


async def key_events(ctx: Ctx, call: Call) -> Reply:
    q: KeyEventsQuery = call.query
    return await _page(ctx, EventQuery(call.params["id"], before=_before(given(q.cursor)), limit=q.limit))


_encode = msgspec.json.Encoder().encode


async def events_stream(ctx: Ctx, call: Call) -> web.StreamResponse:
    """Server-sent events: ``event: transition`` per event, ``: ping`` every 15 s."""
    queue = await ctx.feed.listen()
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
    })
    try:
        await resp.prepare(call.request)
        await resp.write(b": connected\n\n")
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), PING_SECONDS)
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            if ev is None:  # shutting down
                break
            await resp.write(b"event: transition\ndata: " + _encode(event_out(ev)) + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        ctx.feed.leave(queue)
        raise
    ctx.feed.leave(queue)
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


# -- check --------------------------------------------------------------------------------------


async def check(ctx: Ctx, call: Call) -> Reply:
    body: CheckIn = call.body if call.body is not None else CheckIn()
    pools = [ctx.pool(body.pool)] if body.pool is not None else list(ctx.runtime.pools.values())
    checker = Checker(ctx.runtime.store, pools, clock=ctx.runtime.clock)
    rows: list[CheckRowOut] = []
    async with Checker.session() as session:
        for pool in pools:
            report = await checker.sweep(pool, session, force=True, dry_run=body.dry_run, pace=False)
            if report.locked_out:
                raise ApiError(409, "sweep_running", f"pool {pool.name}: a sweep is running elsewhere; try again shortly")
            rows.extend(
                CheckRowOut(r.key_id, r.pool, r.before.value, r.after.value, r.result.describe(),
                            r.masked, r.changed)
                for r in report.rows
            )
    return Reply(200, CheckOut(rows, body.dry_run))


# -- usage --------------------------------------------------------------------------------------

_OUTCOMES = {"successes": "ok"} | {f: f for f in COUNTER_FIELDS if f not in ("requests", "successes", "prompt_tokens", "completion_tokens")}
_MAX_BUCKETS = 1440


async def usage(ctx: Ctx, call: Call) -> Reply:
    q: UsageQuery = call.query
    step = MINUTE if q.resolution == "minute" else HOUR
    now = time.time()
    asked_until, asked_since, key, pool = given(q.until), given(q.since), given(q.key), given(q.pool)
    until = min(asked_until if asked_until is not None else now, now + step)
    since = asked_since if asked_since is not None else until - (60 * MINUTE if step == MINUTE else 24 * HOUR)
    since = max(since, until - _MAX_BUCKETS * step, now - RETENTION[step] - step)
    if key is not None:
        scopes = [key_scope(key)]
    elif pool is not None:
        scopes = [pool_scope(ctx.pool(pool).name)]
    else:
        scopes = [pool_scope(p) for p in ctx.runtime.pools]
    first = bucket_start(since, step)
    sums: dict[float, list[int]] = {}
    for scope in scopes:
        for t, c in await ctx.runtime.store.usage(scope, step, first, until):
            row = sums.setdefault(t, [0] * len(COUNTER_FIELDS))
            for i, v in enumerate(c.values()):
                row[i] += v
    buckets = []
    t = first
    while t < until:
        c = Counters(*sums[t]) if t in sums else Counters()
        d = c.as_dict()
        buckets.append(Bucket(t, c.requests, {name: d[f] for f, name in _OUTCOMES.items()},
                              c.prompt_tokens, c.completion_tokens))
        t += step
    return Reply(200, UsageOut(q.resolution, buckets))
