"""Selection strategies over a pool's eligible keys: random (weighted), round_robin, least_busy.

Each strategy keeps its own index of the eligible keys so that a pick costs O(1) on average,
whatever the pool size (10,000 keys cost the same as 10). ``rng`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

__all__ = ["STRATEGIES", "LeastBusyStrategy", "RandomStrategy", "RoundRobinStrategy", "Strategy", "make_strategy"]



class Rng(Protocol):
    """What a strategy needs of a random generator (``random.Random`` fits); always passed in."""

    def random(self) -> float: ...

    def choices(self, population: Sequence[str], weights: Sequence[float]) -> list[str]: ...



class IndexedSet:
    """A set with O(1) add, discard and access by position (swap-remove)."""

    __slots__ = ("_pos", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        i = self._pos.pop(item, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self._pos[last] = i


class Strategy(Protocol):
    name: str
    #: does the strategy want :meth:`acquired` / :meth:`released` (requests in flight)?
    tracks_inflight: bool

    def add(self, key_id: str, weight: float) -> None: ...
    def discard(self, key_id: str) -> None: ...
    def pick(self, rng: Rng, exclude: Collection[str]) -> str | None: ...
    def acquired(self, key_id: str, inflight: int) -> None: ...
    def released(self, key_id: str, inflight: int) -> None: ...


def _pick_uniform(items: list[str], rng: Rng, exclude: Collection[str]) -> str | None:
    n = len(items)
    if n == 0:
        return None
    for _ in range(8):
        k = items[int(rng.random() * n)]
        if k not in exclude:
            return k
    rest = [k for k in items if k not in exclude]
    return rest[int(rng.random() * len(rest))] if rest else None


class RandomStrategy:
    """Weighted random. Equal weights cost one draw; unequal weights use rejection sampling."""

    name = "random"
    tracks_inflight = False

    def __init__(self) -> None:
        self._keys = IndexedSet()
        self._weights: dict[str, float] = {}
        self._census: dict[float, int] = {}  # weight -> how many keys have it
        self._wmax = 0.0
        self._uniform = True

    def add(self, key_id: str, weight: float) -> None:
        self.discard(key_id)
        self._keys.add(key_id)
        self._weights[key_id] = weight
        self._census[weight] = self._census.get(weight, 0) + 1
        self._refresh()

    def discard(self, key_id: str) -> None:
        self._keys.discard(key_id)
        w = self._weights.pop(key_id, None)
        if w is not None:
            left = self._census[w] - 1
            if left:
                self._census[w] = left
            else:
                del self._census[w]
            self._refresh()

    def _refresh(self) -> None:
        ws = self._census.keys()  # distinct weights: a handful, whatever the pool size
        self._wmax = max(ws, default=0.0)
        self._uniform = len(self._census) <= 1

    def pick(self, rng: Rng, exclude: Collection[str]) -> str | None:
        items = self._keys.items
        if self._uniform or self._wmax <= 0:
            return _pick_uniform(items, rng, exclude)
        n = len(items)
        weights = self._weights
        for _ in range(64):
            k = items[int(rng.random() * n)]
            if k not in exclude and rng.random() * self._wmax < weights[k]:
                return k
        rest = [k for k in items if k not in exclude and weights[k] > 0]
        if not rest:
            return None
        return rng.choices(rest, weights=[weights[k] for k in rest])[0]

    def acquired(self, key_id: str, inflight: int) -> None:
        pass

    def released(self, key_id: str, inflight: int) -> None:
        pass


class RoundRobinStrategy:
    """Each eligible key in turn."""

    name = "round_robin"
    tracks_inflight = False

    def __init__(self) -> None:
        self._keys = IndexedSet()
        self._cursor = 0

    def add(self, key_id: str, weight: float) -> None:
        self._keys.add(key_id)

    def discard(self, key_id: str) -> None:
        self._keys.discard(key_id)

    def pick(self, rng: Rng, exclude: Collection[str]) -> str | None:
        items = self._keys.items
        n = len(items)
        for _ in range(n):
            self._cursor = (self._cursor + 1) % n
            k = items[self._cursor]
            if k not in exclude:
                return k
        return None

    def acquired(self, key_id: str, inflight: int) -> None:
        pass

    def released(self, key_id: str, inflight: int) -> None:
        pass


class LeastBusyStrategy:
    """The key with the fewest requests in flight (ties broken at random).

    Keys sit in buckets by in-flight count, so a pick looks at the lowest non-empty bucket.
    """

    name = "least_busy"
    tracks_inflight = True

    def __init__(self) -> None:
        self._buckets: list[IndexedSet] = [IndexedSet()]
        self._level: dict[str, int] = {}

    def _put(self, key_id: str, level: int) -> None:
        while len(self._buckets) <= level:
            self._buckets.append(IndexedSet())
        self._buckets[level].add(key_id)
        self._level[key_id] = level

    def add(self, key_id: str, weight: float) -> None:
        if key_id not in self._level:
            self._put(key_id, 0)

    def discard(self, key_id: str) -> None:
        level = self._level.pop(key_id, None)
        if level is not None:
            self._buckets[level].discard(key_id)

    def pick(self, rng: Rng, exclude: Collection[str]) -> str | None:
        for bucket in self._buckets:
            if len(bucket):
                k = _pick_uniform(bucket.items, rng, exclude)
                if k is not None:
                    return k
        return None

    def _move(self, key_id: str, inflight: int) -> None:
        level = self._level.get(key_id)
        if level is not None and level != inflight:
            self._buckets[level].discard(key_id)
            self._put(key_id, max(0, inflight))

    def acquired(self, key_id: str, inflight: int) -> None:
        self._move(key_id, inflight)

    def released(self, key_id: str, inflight: int) -> None:
        self._move(key_id, inflight)


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "random": RandomStrategy,
    "round_robin": RoundRobinStrategy,
    "least_busy": LeastBusyStrategy,
}


def make_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})") from None
