"""What the parts of :class:`keyrelay.stores.redis.RedisStore` share: the attributes and
plumbing its mixins (:mod:`~keyrelay.stores.redis_usage`, :mod:`~keyrelay.stores.redis_tokens`)
may use — defined by ``RedisStore`` itself — and the batching helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis

from keyrelay.stores.crypto import KeyCipher
from keyrelay.stores.redis_health import Health
from keyrelay.stores.redis_keys import Names

__all__ = ["BATCH", "READ_CHUNK", "RedisParts", "chunks", "flat"]

_R = TypeVar("_R")
BATCH = 1_000  # keys (or buckets) per Lua call
READ_CHUNK = 10_000  # keys (or events) per pipeline round trip


def chunks(seq: Sequence[_R], size: int) -> Iterator[Sequence[_R]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def flat(rows: Iterable[Iterable[object]]) -> list[object]:
    return [x for row in rows for x in row]


class RedisParts:
    """The store's state and plumbing, as its mixins see it (``RedisStore`` defines them)."""

    names: Names
    where: str
    origin: str
    _health: Health
    _redis: aioredis.Redis | None
    _plain: dict[str, str]

    @property
    def cipher(self) -> KeyCipher:
        raise NotImplementedError

    @property
    def _r(self) -> aioredis.Redis:
        raise NotImplementedError

    async def _run(self, script: str, keys: Sequence[object], args: Sequence[object], client: Any = None) -> Any:
        raise NotImplementedError

    def _guard(self, results: list[Any]) -> list[Any]:
        raise NotImplementedError
