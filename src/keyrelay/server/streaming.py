"""The aiohttp gateway's I/O for the relay flow (``runtime/flow.py``): send an attempt, read or
peek at its answer, relay a stream. Every decision is the flow's; this module only moves bytes
and watches the upstream read deadline."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from keyrelay.exceptions import ClientGone
from keyrelay.runtime.flow import MORE, PEEK, READ, Exchange, Reply, Stream
from keyrelay.server.deadlines import Deadline, ReadDeadlines

__all__ = ["NETWORK_ERRORS", "ClientGone", "relay", "reply_response"]

#: what aiohttp raises when the upstream cannot be reached or breaks off (our read deadline too)
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_UPSTREAM_BROKE = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError)


def reply_response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


async def relay(
    request: web.BaseRequest,
    ex: Exchange,
    session: aiohttp.ClientSession,
    timeout: aiohttp.ClientTimeout,
    deadlines: ReadDeadlines,
    read_timeout: float,
    body: bytes,
) -> web.StreamResponse:
    """Drive ``ex`` over aiohttp's client until it has the caller's answer, and send it."""
    reply = ex.start()
    method, data = request.method, body or None
    while reply is None:
        d = deadlines.arm(read_timeout)
        try:
            with d:
                up = await session.request(method, ex.url, data=data, headers=ex.headers, timeout=timeout,
                                           allow_redirects=False)
        except asyncio.CancelledError:
            deadlines.disarm(d)
            ex.abandon()
            raise
        except NETWORK_ERRORS as exc:
            deadlines.disarm(d)
            reply = ex.failed(exc)
            continue
        try:
            d.push()
            how = ex.head(up.status, up.headers)
            if how is READ:
                with d:
                    answer = await up.read()
                d.pause()
                reply = ex.body(answer)
                continue
            if how is PEEK:
                with d:
                    step = ex.peek(await up.content.readany())
                    while step is MORE:
                        d.push()
                        step = ex.peek(await up.content.readany())
            else:
                step = ex.passthrough()
            if isinstance(step, Stream):
                return await _relay_stream(request, up, step, d)
            d.pause()
            reply = step if isinstance(step, Reply) else None  # None: the next attempt
        except asyncio.CancelledError:
            ex.abandon()
            raise
        except NETWORK_ERRORS as exc:  # the answer broke off (or stalled) before we had it whole
            d.pause()
            reply = ex.failed(exc, broke_off=True)
        finally:
            deadlines.disarm(d)
            up.release()
    return reply_response(reply)


async def _relay_stream(
    request: web.BaseRequest, up: aiohttp.ClientResponse, stream: Stream, d: Deadline
) -> web.StreamResponse:
    """Relay the rest of an answer whose first event was fine; no retries once a byte is out."""
    resp = web.StreamResponse(status=stream.status, headers=stream.headers)
    try:
        d.pause()  # waiting on the client, not the upstream
        await resp.prepare(request)
        if stream.first:
            await resp.write(stream.first)
        d.push()
        try:
            with d:
                async for chunk in up.content.iter_any():
                    d.pause()
                    out = stream.chunk(chunk)
                    if out:
                        await resp.write(out)
                    d.push()
            tail = stream.end()
        except _UPSTREAM_BROKE as exc:  # the upstream cut or stalled the stream: too late to fail over
            tail = stream.cut(exc)
        d.pause()
        if tail:
            await resp.write(tail)
        await resp.write_eof()
    except asyncio.CancelledError:
        stream.gone()
        raise
    except ConnectionResetError:  # the client went away: mid-stream it costs the key nothing
        if not stream.gone():
            raise ClientGone(resp) from None
    return resp
