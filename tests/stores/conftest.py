"""The store backends every contract test runs against.

Each entry of ``BACKENDS`` is an async context manager factory: given a fresh ``tmp_path`` it
yields an *opened* store that sees nothing from other tests, and cleans up afterwards. Adding
a backend (e.g. Redis with a unique key prefix per test) is one more entry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio

from keyrelay.stores.base import Store
from keyrelay.stores.memory import MemoryStore
from keyrelay.stores.sqlite import SQLiteStore

BackendFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


@asynccontextmanager
async def _opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def memory_backend(tmp_path: Path) -> AbstractAsyncContextManager[Store]:
    return _opened(MemoryStore())


def sqlite_backend(tmp_path: Path) -> AbstractAsyncContextManager[Store]:
    return _opened(SQLiteStore(f"sqlite:///{tmp_path / 'keyrelay.db'}"))


REDIS_URL = os.environ.get("KEYRELAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def redis_cleanup(prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN + DEL: never FLUSHDB a shared server)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(batch), 1000):
            await client.delete(*batch[i:i + 1000])
    finally:
        await client.aclose()


async def redis_reachable() -> None:
    """Skip (locally) or fail (under CI=true) when no Redis answers at ``REDIS_URL``."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        await client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but no Redis answers at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL} (start one, or set KEYRELAY_TEST_REDIS); CI=true makes this fail")
    finally:
        await client.aclose()


def unique_prefix() -> str:
    return f"krtest-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def _redis(tmp_path: Path) -> AsyncIterator[Store]:
    from keyrelay.stores.redis import RedisStore

    await redis_reachable()
    prefix = unique_prefix()
    try:
        async with _opened(RedisStore(f"{REDIS_URL}?prefix={prefix}")) as store:
            yield store
    finally:
        await redis_cleanup(prefix)


def redis_backend(tmp_path: Path) -> AbstractAsyncContextManager[Store]:
    return _redis(tmp_path)


BACKENDS: dict[str, BackendFactory] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "redis": redis_backend,
}


@pytest_asyncio.fixture
async def new_redis_url() -> AsyncIterator[Callable[[], str]]:
    """A factory of Redis store URLs, each with a fresh prefix; every key under them is
    deleted afterwards. Skips (fails under CI=true) without a Redis."""
    await redis_reachable()
    prefixes: list[str] = []

    def new() -> str:
        prefixes.append(unique_prefix())
        return f"{REDIS_URL}?prefix={prefixes[-1]}"

    try:
        yield new
    finally:
        for prefix in prefixes:
            await redis_cleanup(prefix)


@pytest_asyncio.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened
