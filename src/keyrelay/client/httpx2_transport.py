"""Key-rotating transports for ``httpx2``: thin classes over the driver in ``client/transport.py``
(each method one call), for the SDK clients built on httpx2."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator, Mapping

import httpx2

from keyrelay.client import transport as drive
from keyrelay.client.pool import Pool
from keyrelay.runtime.flow import Stream

__all__ = ["AsyncKeyRelayTransport", "KeyRelayTransport"]


class ReplayStream(httpx2.SyncByteStream):
    def __init__(self, stream: Stream, upstream: httpx2.Response, chunks: Iterator[bytes]) -> None:
        self._stream, self._upstream, self._chunks = stream, upstream, chunks

    def __iter__(self) -> Iterator[bytes]:
        return drive.replay(self._stream, self._chunks)

    def close(self) -> None:
        drive.close_replay(self._stream, self._upstream)


class AsyncReplayStream(httpx2.AsyncByteStream):
    def __init__(self, stream: Stream, upstream: httpx2.Response, chunks: AsyncIterator[bytes]) -> None:
        self._stream, self._upstream, self._chunks = stream, upstream, chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return drive.areplay(self._stream, self._chunks)

    async def aclose(self) -> None:
        await drive.aclose_replay(self._stream, self._upstream)


class _Library:
    """What the driver builds with, in httpx2's classes."""

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes, extensions: Mapping[str, object]) -> httpx2.Request:
        return httpx2.Request(method, url, headers=headers, content=body, extensions=dict(extensions))

    def response(self, status: int, headers: dict[str, str], body: bytes, elapsed: float) -> httpx2.Response:
        response = httpx2.Response(status, headers=headers, content=body)
        response.elapsed = datetime.timedelta(seconds=elapsed)
        return response

    def stream_response(
        self, stream: Stream, upstream: httpx2.Response, chunks: Iterator[bytes] | AsyncIterator[bytes]
    ) -> httpx2.Response:
        body: httpx2.SyncByteStream | httpx2.AsyncByteStream
        if isinstance(chunks, Iterator):
            body = ReplayStream(stream, upstream, chunks)
        else:
            body = AsyncReplayStream(stream, upstream, chunks)
        return httpx2.Response(stream.status, headers=stream.headers, stream=body, extensions=upstream.extensions)


_LIBRARY = _Library()


class KeyRelayTransport(httpx2.BaseTransport):
    """Rotates the pool's keys over the requests of a sync client, failing over between them."""

    def __init__(self, pool: Pool, transport: httpx2.BaseTransport | None = None) -> None:
        self.pool = pool
        self.inner = transport if transport is not None else httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return drive.relay(self.pool, _LIBRARY, self.inner, request)

    def close(self) -> None:
        self.inner.close()


class AsyncKeyRelayTransport(httpx2.AsyncBaseTransport):
    """Rotates the pool's keys over the requests of an async client, failing over between them."""

    def __init__(self, pool: Pool, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.pool = pool
        self.inner = transport if transport is not None else httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await drive.arelay(self.pool, _LIBRARY, self.inner, request)

    async def aclose(self) -> None:
        await self.inner.aclose()
