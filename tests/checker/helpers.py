"""Helpers of the checker tests: a clock, a pool over a store with a checker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keyrelay.config import PoolSettings
from keyrelay.core.model import KeyRecord
from keyrelay.core.policy import CheckerPolicy
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.base import Store, key_id_for

NOW = 1_750_000_000.0  # 2025-06-15
HOUR = 3600.0
DAY = 86400.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def make_pool(
    store: Store, base_url: str, secrets: Sequence[str], clock: Clock, name: str = "main", **checker: Any
) -> KeyPool:
    """A pool of ``secrets`` (added to ``store``) with a checker; no pacing unless asked."""
    checker.setdefault("max_rate", 0.0)
    checker.setdefault("jitter", 0.0)
    settings = PoolSettings(name, base_url=base_url, checker=CheckerPolicy(enabled=True, **checker))
    await store.add_keys(name, list(secrets), clock())
    pool = KeyPool(settings, store, clock=clock)
    for rec in await store.load(name):
        pool.upsert(rec)
    return pool


async def stored(store: Store, pool: str, secret: str) -> KeyRecord:
    rec = await store.get(key_id_for(pool, secret))
    assert rec is not None
    return rec
