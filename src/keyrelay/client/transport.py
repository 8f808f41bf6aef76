"""Transports that rotate keys inside an SDK's HTTP client: one implementation, two libraries.

``httpx`` (openai 1.x/2.x) and ``httpx2`` (openai ≥ 3) share their transport API —
``BaseTransport.handle_request``, ``AsyncBaseTransport.handle_async_request``,
``Response(status, headers=, stream=)``, ``SyncByteStream`` / ``AsyncByteStream`` — so
:func:`transport_classes` builds the classes for whichever module it is given. Each transport
WRAPS an inner one (``HTTPTransport()`` by default) and runs :func:`~keyrelay.client.flow.relay_flow`
for every request: the decisions are written once there, the I/O twice here (sync and async).

A stream handed to the caller replays the bytes peeked before the first event, then the rest,
watching for the usage chunk. When it ends the outcome is recorded: ok at the end of the stream
(or when the caller closes it after ``data: [DONE]``), ``upstream_fault`` if the upstream broke
it off — too late to fail over, so the caller gets an error event, as from the gateway — and
nothing at all if the caller closed it early.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from keyrelay.client import flow as f
from keyrelay.client.pool import Pool
from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import Dialect, Usage
from keyrelay.providers.sse import UsageScanner, stream_ended

__all__ = ["transport_classes"]

log = logging.getLogger("keyrelay.client")



class _Replay:
    """The bookkeeping shared by the sync and async replayed streams."""

    def __init__(
        self,
        response: Any,
        chunks: Any,
        first: bytes,
        dialect: Dialect,
        finish: Callable[[Verdict | None, Usage | None], None],
        network_errors: tuple[type[BaseException], ...],
    ) -> None:
        self._response = response
        self._chunks = chunks
        self._first = first
        self._finish = finish
        self._network_errors = network_errors
        self._scanner = UsageScanner(dialect)
        self._cut_event = dialect.stream_cut_event()
        self._scanner.feed(first)
        self._end_mark = end = dialect.stream_end  # b"[DONE]"; Anthropic's b'"message_stop"'
        self._done = end in first
        self._tail = first[-len(end) :]
        self._before, self._last = b"", first
        self._ended = False

    def _seen(self, chunk: bytes) -> None:
        self._scanner.feed(chunk)
        self._before, self._last = self._last, chunk
        if not self._done:
            both = self._tail + chunk
            self._done = self._end_mark in both
            self._tail = both[-len(self._end_mark) :]

    def _end(self, verdict: Verdict | None) -> None:
        if not self._ended:
            self._ended = True
            self._finish(verdict, self._scanner.usage if verdict is not None else None)

    def _cut(self, exc: BaseException) -> None:
        log.warning("upstream stream broke off: %s", type(exc).__name__)
        self._end(Verdict(Outcome.UPSTREAM_FAULT, 200, message=type(exc).__name__, reason="stream cut"))

    def _closed(self) -> None:
        done = self._done or stream_ended(self._before, self._last)  # e.g. the Responses API's last event
        self._end(Verdict.ok(200) if done else None)


def _run_sync(relay: f.Relay, inner: Any, request: Any) -> Any:
    gen = f.relay_flow(relay, request)
    result: Any = None
    try:
        step = next(gen)
        while True:
            try:
                match step:
                    case f.Send():
                        result = inner.handle_request(step.request)
                    case f.Read():
                        result = step.response.read()
                    case f.Next():
                        result = next(step.chunks, b"")
                    case f.Begin():
                        result = step.response.iter_bytes()
                    case f.Close():
                        _quietly(step.response.close)
                        result = None
                    case f.ReadRequest():
                        result = step.request.read()
                    case f.Persist():
                        relay.pool.persist_later(step.transition, step.verdict, step.version)
                        result = None
            except BaseException as exc:  # noqa: BLE001 — the flow decides: retry, abandon or raise
                step = gen.throw(exc)
            else:
                step = gen.send(result)
    except StopIteration as stop:
        return stop.value


async def _run_async(relay: f.Relay, inner: Any, request: Any) -> Any:
    gen = f.relay_flow(relay, request)
    result: Any = None
    try:
        step = next(gen)
        while True:
            try:
                match step:
                    case f.Send():
                        result = await inner.handle_async_request(step.request)
                    case f.Read():
                        result = await step.response.aread()
                    case f.Next():
                        result = await anext(step.chunks, b"")
                    case f.Begin():
                        result = step.response.aiter_bytes()
                    case f.Close():
                        await _aquietly(step.response.aclose)
                        result = None
                    case f.ReadRequest():
                        result = await step.request.aread()
                    case f.Persist():
                        await _apersist(relay, step)
                        result = None
            except BaseException as exc:  # noqa: BLE001 — the flow decides: retry, abandon or raise
                step = gen.throw(exc)
            else:
                step = gen.send(result)
    except StopIteration as stop:
        return stop.value


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


async def _apersist(relay: f.Relay, step: f.Persist) -> None:
    try:
        await relay.pool.apersist(step.transition, step.verdict, step.version)
    except Exception as exc:  # noqa: BLE001 — the store is down: the request goes on, the flush retries
        log.error("state write failed: %s: %s", type(exc).__name__, exc)


@functools.cache
def transport_classes(http: Any) -> tuple[type[Any], type[Any]]:
    """The (sync, async) key-rotating transport classes for ``http`` (``httpx`` or ``httpx2``)."""

    class ReplayStream(_Replay, http.SyncByteStream):  # type: ignore[misc]
        def __iter__(self) -> Iterator[bytes]:
            yield self._first
            try:
                for chunk in self._chunks:
                    self._seen(chunk)
                    yield chunk
            except self._network_errors as exc:
                self._cut(exc)
                yield self._cut_event
                return
            self._end(Verdict.ok(200))

        def close(self) -> None:
            try:
                self._response.close()
            finally:
                self._closed()

    class AsyncReplayStream(_Replay, http.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield self._first
            try:
                async for chunk in self._chunks:
                    self._seen(chunk)
                    yield chunk
            except self._network_errors as exc:
                self._cut(exc)
                yield self._cut_event
                return
            self._end(Verdict.ok(200))

        async def aclose(self) -> None:
            try:
                await self._response.aclose()
            finally:
                self._closed()

    class KeyRelayTransport(http.BaseTransport):  # type: ignore[misc]
        """Rotates the pool's keys over the requests of a sync client, failing over between them."""

        def __init__(self, pool: Pool, transport: Any = None) -> None:
            self.pool = pool
            self.inner = transport if transport is not None else http.HTTPTransport()
            self._relay = f.Relay(pool, http, self._stream)

        def _stream(self, resp: Any, chunks: Any, first: bytes, finish: Any) -> Any:
            return ReplayStream(resp, chunks, first, self.pool.dialect, finish, self._relay.network_errors)

        def handle_request(self, request: Any) -> Any:
            return _run_sync(self._relay, self.inner, request)

        def close(self) -> None:
            self.inner.close()

    class AsyncKeyRelayTransport(http.AsyncBaseTransport):  # type: ignore[misc]
        """Rotates the pool's keys over the requests of an async client, failing over between them."""

        def __init__(self, pool: Pool, transport: Any = None) -> None:
            self.pool = pool
            self.inner = transport if transport is not None else http.AsyncHTTPTransport()
            self._relay = f.Relay(pool, http, self._stream)

        def _stream(self, resp: Any, chunks: Any, first: bytes, finish: Any) -> Any:
            return AsyncReplayStream(resp, chunks, first, self.pool.dialect, finish, self._relay.network_errors)

        async def handle_async_request(self, request: Any) -> Any:
            return await _run_async(self._relay, self.inner, request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    for cls in (ReplayStream, AsyncReplayStream, KeyRelayTransport, AsyncKeyRelayTransport):
        cls.__module__ = __name__
        cls.__qualname__ = f"{cls.__name__}[{http.__name__}]"
    return KeyRelayTransport, AsyncKeyRelayTransport
