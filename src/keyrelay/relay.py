"""The one retry loop: acquire a key → send → classify → record → retry elsewhere or return.

The loop's decisions live in :class:`Attempts`, which knows nothing of HTTP libraries. The
gateway (aiohttp) and library mode (httpx / httpx2 transports, sync and async) drive it with
their own I/O, so every caller follows the same rules:

- never the same key twice for one request; at most ``max_attempts`` keys; stop at ``deadline``;
- retry only on outcomes that say "another key may do better" (see ``RETRYABLE_OUTCOMES``);
- a ``client_error`` is returned as is; once a byte reached the caller, no more retries.
"""

from __future__ import annotations

from collections.abc import Callable

from keyrelay.core.model import Outcome, Transition, Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import KeyrelayError
from keyrelay.keypool import KeyPool
from keyrelay.providers import Usage

__all__ = ["Attempts", "NoKeyAvailable"]

_GONE = Verdict(Outcome.CLIENT_GONE)


class NoKeyAvailable(KeyrelayError):
    """No key of the pool may take this request now.

    ``retry_after`` (seconds) is when the soonest cooling key frees up, or ``None`` (no key will
    come back by itself); ``empty`` says the pool holds no key at all.
    """

    def __init__(self, pool: str, retry_after: float | None, *, empty: bool = False) -> None:
        if empty:
            msg = f"no usable key in pool {pool!r}: it holds no keys; add some with 'keyrelay keys add --pool {pool} KEY'"
        elif retry_after is not None:
            msg = f"no usable key in pool {pool!r}; the soonest cooling key frees up in {retry_after:.1f}s"
        else:
            msg = (
                f"no usable key in pool {pool!r}: every key is invalid, exhausted or disabled and none comes back "
                f"by itself; see 'keyrelay keys list --pool {pool}'"
            )
        super().__init__(msg)
        self.pool = pool
        self.retry_after = retry_after
        self.empty = empty


class Attempts:
    """The attempts of one request over one pool."""

    __slots__ = ("clock", "count", "deadline_at", "first_byte", "last", "last_lease", "lease", "policy", "pool", "tried")

    def __init__(self, pool: KeyPool, clock: Callable[[], float] | None = None) -> None:
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

    def next(self) -> Lease | None:
        """The key for the next attempt, or ``None`` when the loop must stop and answer with the
        last verdict. Raises :class:`NoKeyAvailable` when the very first attempt finds no key."""
        if self.count >= self.policy.max_attempts or (self.count and self.clock() >= self.deadline_at):
            return None
        lease = self.pool.acquire(self.tried)
        if lease is None:
            if self.last is None:
                raise self.pool.no_key()
            return None
        self.count += 1
        self.tried.append(lease.key_id)
        self.lease = self.last_lease = lease
        return lease

    def record(self, lease: Lease, verdict: Verdict, usage: Usage | None = None) -> Transition | None:
        """Count the outcome, release the key, and return the transition to persist (if any)."""
        self.last = verdict
        self.lease = None
        return self.pool.observe(lease, verdict, usage, release=True)

    def abandon(self, lease: Lease) -> None:
        """The caller went away: release the key, at no cost to it."""
        self.lease = None
        self.pool.observe(lease, _GONE, release=True)

    def should_retry(self, verdict: Verdict) -> bool:
        """Try another key after this verdict? (Before any byte reached the caller.)"""
        return (
            verdict.retryable
            and self.count < self.policy.max_attempts
            and self.clock() < self.deadline_at
        )
