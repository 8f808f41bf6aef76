"""The store backends every contract test runs against.

Each entry of ``BACKENDS`` is an async context manager factory: given a fresh ``tmp_path`` it
yields an *opened* store that sees nothing from other tests, and cleans up afterwards. Adding
a backend (e.g. Redis with a unique key prefix per test) is one more entry.
"""

from __future__ import annotations

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


BACKENDS: dict[str, BackendFactory] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
}


@pytest_asyncio.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened
