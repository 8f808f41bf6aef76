"""Library mode's driver of the relay flow (``runtime/flow.py``): the I/O of one request, done
with an SDK's own HTTP library — ``httpx`` (openai 1.x/2.x) or ``httpx2`` (openai ≥ 3), sync or
async. The transport classes themselves (``httpx_transport.py``, ``httpx2_transport.py``) are
thin: each method calls one function here. Every decision is the flow's, as in the gateway.

Typed over :class:`Library`, a protocol both libraries meet: their request, response and
transport shapes are the same (httpx2 is httpx's successor).

A stream handed to the caller replays what the flow let through of its start, then the rest;
when the upstream breaks it off, the caller gets the dialect's error event and the key its
fault; when the caller closes it early, it costs the key nothing (unless it had the last event).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from keyrelay.client.pool import Pool
from keyrelay.providers.base import strip_query_param
from keyrelay.runtime.failures import failure_kind
from keyrelay.runtime.flow import MORE, PEEK, READ, Exchange, Reply, Stream

__all__ = ["AsyncInner", "Library", "Request", "Response", "SyncInner", "arelay", "areplay", "relay", "replay"]

log = logging.getLogger("keyrelay.client")


class _URL(Protocol):
    @property
    def query(self) -> bytes: ...


class Request(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> _URL: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def extensions(self) -> Mapping[str, object]: ...
    def read(self) -> bytes: ...
    async def aread(self) -> bytes: ...


class Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def read(self) -> bytes: ...
    async def aread(self) -> bytes: ...
    def iter_bytes(self) -> Iterator[bytes]: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...


ReqT = TypeVar("ReqT", bound=Request)
RespT = TypeVar("RespT", bound=Response)
_ReqT_contra = TypeVar("_ReqT_contra", bound=Request, contravariant=True)
_RespT_co = TypeVar("_RespT_co", bound=Response, covariant=True)
_ReqT_co = TypeVar("_ReqT_co", bound=Request, covariant=True)


class SyncInner(Protocol[_ReqT_contra, _RespT_co]):
    def handle_request(self, request: _ReqT_contra) -> _RespT_co: ...


class AsyncInner(Protocol[_ReqT_contra, _RespT_co]):
    async def handle_async_request(self, request: _ReqT_contra) -> _RespT_co: ...


class Library(Protocol, Generic[_ReqT_co, RespT]):
    """What the driver builds with: the library's ``Request`` and ``Response``, and its byte
    streams wrapping a flow :class:`~keyrelay.runtime.flow.Stream` (see the transport modules)."""

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes, extensions: Mapping[str, object]) -> _ReqT_co: ...
    def response(self, status: int, headers: dict[str, str], body: bytes, elapsed: float) -> RespT: ...
    def stream_response(self, stream: Stream, upstream: RespT, chunks: Iterator[bytes] | AsyncIterator[bytes]) -> RespT: ...


# -- the request -----------------------------------------------------------------------------
def _exchange(pool: Pool, request: Request, body: bytes) -> Exchange:
    """The flow of one SDK request: its headers without the caller's credentials (the
    placeholder key the SDK was given), its URL without a credential query (Gemini's ``key=``)."""
    pool.check_open()
    dialect = pool.dialect
    strip = dialect.auth_header_names
    headers = {k: v for k, v in request.headers.items() if k.lower() not in strip}
    url = str(request.url)
    if dialect.credential_query and request.url.query:
        base, _, query = url.partition("?")
        query = strip_query_param(query, dialect.credential_query)
        url = f"{base}?{query}" if query else base
    return Exchange(pool.keypool, request.method, url, headers, body, origin=url)


def _answer(lib: Library[ReqT, RespT], ex: Exchange, reply: Reply, started: float) -> RespT:
    """The caller's answer, read whole: its ``elapsed`` is set here, as the SDK's client will
    find nothing left to read (and so never times it)."""
    if reply.error is not None:  # the upstream could not be reached: the SDK's own error, no key in it
        raise _scrubbed(reply.error, ex)
    return lib.response(reply.status, reply.headers, reply.body, time.perf_counter() - started)


def _scrubbed(exc: BaseException, ex: Exchange) -> BaseException:
    """``exc``, or a copy of the same type whose text holds no key (not chained to the original)."""
    clean = ex.scrubbed(exc)
    if clean is None:
        return exc
    try:
        copy = type(exc)(clean)
    except Exception:  # noqa: BLE001 — an exception type that wants other arguments
        return ConnectionError(clean)
    request = getattr(exc, "_request", None)
    if request is not None:
        setattr(copy, "_request", request)  # noqa: B010 — httpx's private link, for .request
    return copy


def _not_network(exc: BaseException) -> bool:
    return failure_kind(exc) is None


# -- sync ------------------------------------------------------------------------------------
def relay(pool: Pool, lib: Library[ReqT, RespT], inner: SyncInner[ReqT, RespT], request: Request) -> RespT:
    """One request of a sync client over the pool."""
    started = time.perf_counter()
    body = request.read()
    ex = _exchange(pool, request, body)
    reply = ex.start()
    while reply is None:
        try:
            resp = inner.handle_request(lib.request(ex.method, ex.url, ex.headers, body, request.extensions))
        except BaseException as exc:
            if _not_network(exc):
                ex.abandon()
                raise
            reply = ex.failed(exc)
            continue
        try:
            how = ex.head(resp.status_code, resp.headers)
            if how is READ:
                reply = ex.body(resp.read())
                continue
            chunks = resp.iter_bytes()
            if how is PEEK:
                step = ex.peek(next(chunks, b""))
                while step is MORE:
                    step = ex.peek(next(chunks, b""))
            else:
                step = ex.passthrough()
            if isinstance(step, Stream):
                return lib.stream_response(step, resp, chunks)
            _quietly(resp.close)
            reply = step if isinstance(step, Reply) else None  # None: the next attempt
        except BaseException as exc:
            _quietly(resp.close)
            if _not_network(exc):
                ex.abandon()
                raise
            reply = ex.failed(exc, broke_off=True)
    return _answer(lib, ex, reply, started)


def replay(stream: Stream, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The caller's bytes of a relayed stream (sync)."""
    if stream.first:
        yield stream.first
    try:
        for chunk in chunks:
            out = stream.chunk(chunk)
            if out:
                yield out
    except Exception as exc:
        if _not_network(exc):
            raise
        log.warning("upstream stream broke off: %s", type(exc).__name__)
        tail = stream.cut(exc)
    else:
        tail = stream.end()
    if tail:
        yield tail


def close_replay(stream: Stream, upstream: Response) -> None:
    try:
        upstream.close()
    finally:
        stream.gone()


# -- async -----------------------------------------------------------------------------------
async def arelay(
    pool: Pool, lib: Library[ReqT, RespT], inner: AsyncInner[ReqT, RespT], request: Request
) -> RespT:
    """One request of an async client over the pool."""
    started = time.perf_counter()
    body = await request.aread()
    ex = _exchange(pool, request, body)
    reply = ex.start()
    while reply is None:
        try:
            resp = await inner.handle_async_request(lib.request(ex.method, ex.url, ex.headers, body, request.extensions))
        except BaseException as exc:
            if _not_network(exc):
                ex.abandon()
                raise
            reply = ex.failed(exc)
            continue
        try:
            how = ex.head(resp.status_code, resp.headers)
            if how is READ:
                reply = ex.body(await resp.aread())
                continue
            achunks = resp.aiter_bytes()
            if how is PEEK:
                step = ex.peek(await anext(achunks, b""))
                while step is MORE:
                    step = ex.peek(await anext(achunks, b""))
            else:
                step = ex.passthrough()
            if isinstance(step, Stream):
                return lib.stream_response(step, resp, achunks)
            await _aquietly(resp.aclose)
            reply = step if isinstance(step, Reply) else None  # None: the next attempt
        except BaseException as exc:
            await _aquietly(resp.aclose)
            if _not_network(exc):
                ex.abandon()
                raise
            reply = ex.failed(exc, broke_off=True)
    return _answer(lib, ex, reply, started)


async def areplay(stream: Stream, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The caller's bytes of a relayed stream (async)."""
    if stream.first:
        yield stream.first
    try:
        async for chunk in chunks:
            out = stream.chunk(chunk)
            if out:
                yield out
    except Exception as exc:
        if _not_network(exc):
            raise
        log.warning("upstream stream broke off: %s", type(exc).__name__)
        tail = stream.cut(exc)
    else:
        tail = stream.end()
    if tail:
        yield tail


async def aclose_replay(stream: Stream, upstream: Response) -> None:
    try:
        await upstream.aclose()
    finally:
        stream.gone()


def _quietly(close: Callable[[], object]) -> None:
    """Close an answer we are done with; failing to close it changes nothing for the request."""
    try:
        close()
    except Exception as exc:  # noqa: BLE001
        log.debug("closing an upstream answer failed: %s", type(exc).__name__)


async def _aquietly(aclose: Callable[[], Awaitable[object]]) -> None:
    try:
        await aclose()
    except Exception as exc:  # noqa: BLE001
        log.debug("closing an upstream answer failed: %s", type(exc).__name__)
