"""The process's one redaction: a :class:`~keyrelay.core.redaction.Redactor` over the keys of
every live pool, rebuilt (lazily, at the next use) when a pool's key set changes — or, for a
big pool, built beforehand off the event loop and installed with the keys (``runtime/process.py``).

Pools register themselves (:class:`~keyrelay.runtime.pool.KeyPool`) and call :func:`changed` when
a key arrives or leaves. Log lines, error bodies, response headers, SSE error events and
events' details all go through :func:`current` — one set of keys, whatever pool the text came
from (an upstream may echo any key it was sent, and a log line may name any).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from itertools import chain
from typing import Protocol

from keyrelay.core.redaction import EMPTY, Redactor

__all__ = ["changed", "current", "install", "prepare", "register", "scrub"]


class _HasSecrets(Protocol):
    def secrets(self) -> Iterable[str]: ...


_pools: weakref.WeakSet[_HasSecrets] = weakref.WeakSet()
_lock = threading.Lock()
_generation = 0
_cached: tuple[int, Redactor] = (0, EMPTY)


def register(pool: _HasSecrets) -> None:
    """Include ``pool``'s keys from now on (held weakly: a pool gone is forgotten)."""
    with _lock:
        _pools.add(pool)
    changed()


def changed() -> None:
    """A pool's key set changed: the next :func:`current` builds a new redactor."""
    global _generation
    _generation += 1


def current() -> Redactor:
    """The redactor over every registered pool's keys (cheap when nothing changed)."""
    global _cached
    gen, r = _cached
    if gen == _generation:
        return r
    with _lock:
        gen = _generation
        if _cached[0] == gen:
            return _cached[1]
        pools = list(_pools)
        r = Redactor(s for p in pools for s in p.secrets())
        _cached = (gen, r)
        return r


def prepare(extra: Iterable[str] = ()) -> Redactor:
    """A redactor over every registered pool's keys and ``extra`` (keys about to arrive), built
    but not yet in use: safe to call from a worker thread, so a big pool's rebuild (about a
    second at 100,000 keys) need not hold the event loop. See :func:`install`."""
    with _lock:
        pools = list(_pools)
    return Redactor(chain((s for p in pools for s in p.secrets()), extra))


def install(r: Redactor) -> None:
    """Use ``r`` from now on. It must know every key registered now: build it with
    :func:`prepare`, given the keys that arrived since."""
    global _cached
    with _lock:
        _cached = (_generation, r)


def scrub(text: str) -> str:
    """``text`` without any key of any pool (nor any fragment of 8 characters or more)."""
    return current().text(text)
