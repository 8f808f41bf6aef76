"""Fixtures for library mode: a fake upstream on its own thread (so sync SDK clients can call it
from the test's thread), and pools over it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyrelay.client import Pool
from keyrelay.core.model import KeyState
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

GOOD = [f"sk-good-0000000000000000000000{c}{c}" for c in "ABCDE"]
INVALID = "sk-invalid-000000000000000000inv1"
DEACTIVATED = "sk-deactivated-0000000000000dea1"
QUOTA = "sk-quota-0000000000000000000quo1"
CREDIT = "sk-credit-00000000000000000cred1"
RATE = "sk-rate-000000000000000000000rat1"
BAD = [INVALID, DEACTIVATED, QUOTA, CREDIT, RATE]

#: healthy, invalid, exhausted and rate-limited keys — as many healthy as bad: when more than
#: half of a pool fails at once the correlated-failure guard blames the upstream, not the keys
MIXED: dict[str, Behavior | KeySpec] = {
    **dict.fromkeys(GOOD, Behavior.OK),
    INVALID: Behavior.INVALID,
    DEACTIVATED: Behavior.DEACTIVATED,
    QUOTA: Behavior.QUOTA,
    CREDIT: Behavior.CREDIT_EXHAUSTED,
    RATE: KeySpec(Behavior.RATE_LIMITED, retry_after=3600),
}

#: where each bad key must end
EXPECTED = {
    INVALID: KeyState.INVALID,
    DEACTIVATED: KeyState.INVALID,
    QUOTA: KeyState.EXHAUSTED,
    CREDIT: KeyState.EXHAUSTED,
    RATE: KeyState.COOLING,
}


class ThreadedUpstream:
    """A :class:`FakeUpstream` served by an event loop on its own thread."""

    def __init__(self, keys: dict[str, Behavior | KeySpec], **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-upstream", daemon=True)
        self.thread.start()
        self.fake = self._call(self._make(keys, kwargs))
        self.url: str = self._call(self.fake.start())

    @staticmethod
    async def _make(keys: dict[str, Behavior | KeySpec], kwargs: dict[str, Any]) -> FakeUpstream:
        return FakeUpstream(keys, **kwargs)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def count(self, key: str) -> int:
        return self.fake.count(key)

    def close(self) -> None:
        try:
            self._call(self.fake.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def upstream() -> Iterator[Callable[..., ThreadedUpstream]]:
    """A factory of fake upstreams on their own threads, closed after the test."""
    made: list[ThreadedUpstream] = []

    def make(keys: dict[str, Behavior | KeySpec] | None = None, **kwargs: Any) -> ThreadedUpstream:
        up = ThreadedUpstream(MIXED if keys is None else keys, **kwargs)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    """``make_pool(keys, **Pool.from_keys options)``; every pool is closed after the test."""
    made: list[Pool] = []

    def make(keys: list[str], **kwargs: Any) -> Pool:
        pool = Pool.from_keys(keys, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def states(pool: Pool) -> dict[str, KeyState]:
    """Each key's state as the pool sees it in memory (updated at once by the hot path)."""
    return {r.secret: r.state for r in pool.keypool.records()}
