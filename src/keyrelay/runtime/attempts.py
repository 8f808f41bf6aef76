"""The one retry loop: acquire a key → send → classify → record → retry elsewhere or return.

The loop's decisions live in :class:`Attempts`, which knows nothing of HTTP libraries. The
gateway (aiohttp) and library mode (httpx / httpx2 transports, sync and async) drive it with
their own I/O, so every caller follows the same rules:

- never the same key twice for one request; at most ``max_attempts`` keys; stop at ``deadline``;
- retry only on outcomes that say "another key may do better" (see ``RETRYABLE_OUTCOMES``);
- a ``client_error`` is returned as is; once a byte reached the caller, no more retries;
- except a key that may not use the requested model: it is skipped for that model for a while
  (``KeyPool.exclude``) and the request goes to a key that can; when no key can, the caller gets
  the upstream's answer. The model is read from the request body only when the pool has such
  exclusions or on that error path, never on the fast path.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from keyrelay.core.machine import UNVERIFIED
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers import Usage
from keyrelay.providers.classify_rules import MODEL_ACCESS
from keyrelay.runtime.pool import KeyPool

__all__ = ["Attempts", "NoKeyAvailable"]

_GONE = Verdict(Outcome.CLIENT_GONE)
#: the top-level ``"model": "…"`` of a JSON request body (escaped quotes inside strings never match)
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
#: once this many keys refused a model, it is most likely not there at all (a typo, a retired
#: model): requests for it stop failing over and get the upstream's answer from one key
MODEL_REFUSALS_BEFORE_GIVING_UP = 3


class Attempts:
    """The attempts of one request over one pool."""

    __slots__ = (
        "_body", "_model", "_model_read", "clock", "count", "deadline_at", "first_byte", "last", "last_lease", "lease", "origin",
        "policy", "pool", "tried",
    )

    def __init__(
        self, pool: KeyPool, clock: Callable[[], float] | None = None, body: bytes | Callable[[], bytes] = b""
    ) -> None:
        self.pool = pool
        self.policy = pool.settings.retry
        self.clock = clock or pool.clock
        self.deadline_at = self.clock() + self.policy.deadline
        self.tried: list[str] = []
        self.count = 0
        self.last: Verdict | None = None
        self.lease: Lease | None = None  # the attempt under way
        self.last_lease: Lease | None = None  # the latest attempt's, kept after it ends
        self.first_byte = 0.0  # perf_counter() when a stream's first byte went out (0: not streamed)
        #: the URL a library-mode request went to (the SDK's base URL, not the pool's): where a
        #: held key is verified; ``None`` in the gateway, which sends to the pool's base URL
        self.origin: str | None = None
        self._body = body  # the request body, or how to get it (read only when a model matters)
        self._model: str | None = None
        self._model_read = False

    def model(self) -> str | None:
        """The requested model, read from the body the first time it is needed."""
        if not self._model_read:
            self._model_read = True
            body = self._body() if callable(self._body) else self._body
            m = _MODEL.search(body[:65536]) if body else None
            self._model = m[1].decode("utf-8", "replace") if m else None
        return self._model

    def next(self) -> Lease | None:
        """The key for the next attempt, or ``None`` when the loop must stop and answer with the
        last verdict. Raises :class:`NoKeyAvailable` when the very first attempt finds no key."""
        if self.count >= self.policy.max_attempts or (self.count and self.clock() >= self.deadline_at):
            return None
        skip: list[str] = self.tried
        if self.pool.exclusions.by_model and self.pool.has_exclusions():
            model = self.model()
            if model is not None:
                skip = self.tried + self.pool.excluded_for(model)
        lease = self.pool.acquire(skip)
        if lease is None and skip is not self.tried and self.last is None:
            lease = self.pool.acquire(self.tried)  # no key may use the model: one asks, the caller gets its answer
        if lease is None:
            if self.last is None:
                raise self.pool.no_key()
            return None
        self.count += 1
        self.tried.append(lease.key_id)
        self.lease = self.last_lease = lease
        return lease

    def record(self, lease: Lease, verdict: Verdict, usage: Usage | None = None) -> None:
        """Count the outcome, release the key, and persist what it does to the key."""
        self.last = verdict
        self.lease = None
        if verdict.reason == UNVERIFIED and self.origin is not None:
            self.pool.verify_at(lease.key_id, self.origin)
        if verdict.reason == MODEL_ACCESS:
            model = self.model()
            if model is not None:
                self.pool.exclude(lease.key_id, model)
        self.pool.record(lease, verdict, usage)

    def abandon(self, lease: Lease) -> None:
        """The caller went away: release the key, at no cost to it."""
        self.lease = None
        self.pool.observe(lease, _GONE, release=True)

    def _another_key_may_have_it(self) -> bool:
        model = self.model()
        return model is not None and len(self.pool.excluded_for(model)) < MODEL_REFUSALS_BEFORE_GIVING_UP

    def should_retry(self, verdict: Verdict) -> bool:
        """Try another key after this verdict? (Before any byte reached the caller.)"""
        return (
            (verdict.retryable or (verdict.reason == MODEL_ACCESS and self._another_key_may_have_it()))
            and self.count < self.policy.max_attempts
            and self.clock() < self.deadline_at
        )
