"""Per (key, model) exclusions: a key that may not use one model (a project without it, a
reseller token limited to some models) is skipped for that model only, for a while.

Pure and synchronous: the caller passes ``now`` and holds the pool's lock. Empty is the usual
case and costs one truthiness test; expired entries are dropped as soon as the soonest one is
due, so a pool whose exclusions all lapsed is back on the fast path.
"""

from __future__ import annotations

__all__ = ["ModelExclusions"]


class ModelExclusions:
    """Which keys may not serve which model, until when."""

    __slots__ = ("_next_expiry", "by_model")

    def __init__(self) -> None:
        #: model → key id → until; empty (the usual case) is the whole fast-path test
        self.by_model: dict[str, dict[str, float]] = {}
        self._next_expiry = float("inf")

    def active(self, now: float) -> bool:
        """Are there exclusions in force at ``now``?"""
        if not self.by_model:
            return False
        if now >= self._next_expiry:
            self._prune(now)
        return bool(self.by_model)

    def add(self, key_id: str, model: str, until: float) -> None:
        self.by_model.setdefault(model, {})[key_id] = until
        self._next_expiry = min(self._next_expiry, until)

    def keys_for(self, model: str, now: float) -> list[str]:
        """The keys that may not serve ``model`` at ``now``."""
        keys = self.by_model.get(model)
        if not keys:
            return []
        return [k for k, until in keys.items() if until > now]

    def _prune(self, now: float) -> None:
        nxt = float("inf")
        for model in list(self.by_model):
            keys = {k: u for k, u in self.by_model[model].items() if u > now}
            if keys:
                self.by_model[model] = keys
                nxt = min(nxt, *keys.values())
            else:
                del self.by_model[model]
        self._next_expiry = nxt
