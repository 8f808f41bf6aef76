"""Key-rotating transports for ``httpx``: thin classes over the driver in ``client/transport.py``
(each method one call), for the SDK clients built on httpx."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator, Mapping

import httpx

from keyrelay.client import transport as drive
from keyrelay.client.pool import Pool
from keyrelay.runtime.flow import Stream

__all__ = ["AsyncKeyRelayTransport", "KeyRelayTransport"]


class ReplayStream(httpx.SyncByteStream):
    def __init__(self, stream: Stream, upstream: httpx.Response, chunks: Iterator[bytes]) -> None:
        self._stream, self._upstream, self._chunks = stream, upstream, chunks

    def __iter__(self) -> Iterator[bytes]:
        return drive.replay(self._stream, self._chunks)

    def close(self) -> None:
        drive.close_replay(self._stream, self._upstream)


class AsyncReplayStream(httpx.AsyncByteStream):
    def __init__(self, stream: Stream, upstream: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
        self._stream, self._upstream, self._chunks = stream, upstream, chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return drive.areplay(self._stream, self._chunks)

    async def aclose(self) -> None:
        await drive.aclose_replay(self._stream, self._upstream)


class _Library:
    """What the driver builds with, in httpx's classes."""

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes, extensions: Mapping[str, object]) -> httpx.Request:
        return httpx.Request(method, url, headers=headers, content=body, extensions=dict(extensions))

    def response(self, status: int, headers: dict[str, str], body: bytes, elapsed: float) -> httpx.Response:
        response = httpx.Response(status, headers=headers, content=body)
        response.elapsed = datetime.timedelta(seconds=elapsed)
        return response

    def stream_response(
        self, stream: Stream, upstream: httpx.Response, chunks: Iterator[bytes] | AsyncIterator[bytes]
    ) -> httpx.Response:
        body: httpx.SyncByteStream | httpx.AsyncByteStream
        if isinstance(chunks, Iterator):
            body = ReplayStream(stream, upstream, chunks)
        else:
            body = AsyncReplayStream(stream, upstream, chunks)
        return httpx.Response(stream.status, headers=stream.headers, stream=body, extensions=upstream.extensions)


_LIBRARY = _Library()


class KeyRelayTransport(httpx.BaseTransport):
    """Rotates the pool's keys over the requests of a sync client, failing over between them."""

    def __init__(self, pool: Pool, transport: httpx.BaseTransport | None = None) -> None:
        self.pool = pool
        self.inner = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return drive.relay(self.pool, _LIBRARY, self.inner, request)

    def close(self) -> None:
        self.inner.close()


class AsyncKeyRelayTransport(httpx.AsyncBaseTransport):
    """Rotates the pool's keys over the requests of an async client, failing over between them."""

    def __init__(self, pool: Pool, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.pool = pool
        self.inner = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await drive.arelay(self.pool, _LIBRARY, self.inner, request)

    async def aclose(self) -> None:
        await self.inner.aclose()
