"""The gateway's SSE relay: peek at a stream's first event (an error there fails over), then
relay the rest as it arrives, keeping keys out of in-band error events, reading usage, and
ending a stream the upstream cut with the dialect's error frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.providers import Usage
from keyrelay.providers.sse import FIRST_EVENT_LIMIT, UsageScanner, first_data, stream_ended
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.server.deadlines import Deadline
from keyrelay.server.http import response_headers
from keyrelay.server.stream_guard import StreamGuard

__all__ = ["ClientGone", "peek", "relay_stream"]

_OK = Verdict.ok(200)

#: how an outcome is counted and persisted (the proxy's ``_record``)
Record = Callable[[KeyPool, Attempts, Lease, Verdict, "Usage | None"], Awaitable[None]]


async def peek(up: aiohttp.ClientResponse, pool: KeyPool, d: Deadline) -> tuple[bytes, Verdict]:
    """Read up to the first data event, and classify it."""
    buf = b""
    while True:
        chunk = await up.content.readany()
        if not chunk:
            break
        d.push()
        buf += chunk
        data = first_data(buf)
        if data is not None:
            v = pool.dialect.classify_event(data)
            return buf, v if v is not None else _OK
        if len(buf) > FIRST_EVENT_LIMIT:
            break
    if not buf:
        return buf, Verdict(Outcome.UPSTREAM_FAULT, 200, message="empty stream", reason="empty stream")
    return buf, _OK


async def relay_stream(
    request: web.BaseRequest,
    up: aiohttp.ClientResponse,
    first: bytes,
    pool: KeyPool,
    attempts: Attempts,
    lease: Lease,
    d: Deadline,
    record: Record,
) -> web.StreamResponse:
    """Relay an SSE answer whose first event was read (``first``) and found ok; count it
    with ``record`` once it ended, or as a success when the client hung up after its last
    event; no retries once a byte is out."""
    hdrs = response_headers(up.headers)
    hdrs["x-keyrelay-attempts"] = str(attempts.count)
    hdrs["x-keyrelay-key"] = lease.key_id
    resp = web.StreamResponse(status=up.status, headers=hdrs)
    scanner = UsageScanner(pool.dialect)
    scanner.feed(first)
    guard = StreamGuard()  # keys out of in-band error events after the first byte
    verdict = _OK
    before, last, ended = b"", b"", False  # the last two chunks written: did they end the stream?
    try:
        d.pause()  # waiting on the client, not the upstream
        await resp.prepare(request)
        await resp.write(guard.pass_(first))
        attempts.first_byte = time.perf_counter()
        last = first
        d.push()
        try:
            with d:
                async for chunk in up.content.iter_any():
                    d.pause()
                    if guard.held or not chunk.endswith(b"\n\n") or b"error" in chunk:
                        await resp.write(guard.pass_(chunk))
                    else:
                        await resp.write(chunk)
                    before, last = last, chunk
                    d.push()
                    if scanner.wants(chunk):
                        scanner.feed(chunk)
            ended = True
        except _UPSTREAM_BROKE as exc:  # the upstream cut or stalled the stream: too late to fail over
            d.pause()
            await resp.write(guard.rest())
            verdict = Verdict(Outcome.UPSTREAM_FAULT, 200, message=type(exc).__name__, reason="stream cut")
            await resp.write(pool.dialect.stream_cut_event())
        d.pause()
        if guard.held:
            await resp.write(guard.rest())
        await resp.write_eof()
    except asyncio.CancelledError:
        if verdict is _OK and (ended or stream_ended(before, last)):  # hung up after the last event
            await asyncio.shield(record(pool, attempts, lease, verdict, scanner.usage))
        else:
            attempts.abandon(lease)
        raise
    except ConnectionResetError:  # the client went away: mid-stream it costs the key nothing
        if not (verdict is _OK and (ended or stream_ended(before, last))):
            attempts.abandon(lease)
            raise ClientGone(resp) from None
    await record(pool, attempts, lease, verdict, scanner.usage)
    return resp


_UPSTREAM_BROKE = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError)


class ClientGone(Exception):
    """The client hung up before the stream's last event: it costs the key nothing."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
