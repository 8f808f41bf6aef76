"""``runtime/attempts.py``: the decisions of one request's attempts — never the same key twice,
at most ``max_attempts`` keys, nothing after the deadline, retry only where another key may do
better, and a model a key may not use skipped for that key."""

from __future__ import annotations

import pytest

from keyrelay.config import PoolSettings
from keyrelay.core.model import KeyRecord, Outcome, Verdict
from keyrelay.core.policy import RetryPolicy
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers.classify_rules import MODEL_ACCESS
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _pool(n: int, clock: Clock, **retry: float) -> KeyPool:
    settings = PoolSettings("p", strategy="round_robin", retry=RetryPolicy(**retry))  # type: ignore[arg-type]
    pool = KeyPool(settings, MemoryStore(), clock=clock)
    pool.writer = lambda t, v, version: None  # nothing to write here: memory is what is asked
    for i in range(n):
        pool.upsert(KeyRecord(f"k{i}", "p", f"sk-attempts-test-{i:020d}"))
    return pool


_NET = Verdict(Outcome.NETWORK_ERROR, message="ConnectError", reason="network error")


def test_no_key_is_tried_twice_and_the_budget_ends_the_loop() -> None:
    clock = Clock()
    attempts = Attempts(_pool(6, clock, max_attempts=4), clock)
    tried = []
    while (lease := attempts.next()) is not None:
        tried.append(lease.key_id)
        attempts.record(lease, _NET)
        assert attempts.should_retry(_NET) == (len(tried) < 4)
    assert len(tried) == 4 and len(set(tried)) == 4 and attempts.count == 4


def test_a_pool_smaller_than_the_budget_stops_when_its_keys_are_tried() -> None:
    clock = Clock()
    attempts = Attempts(_pool(2, clock), clock)
    first = attempts.next()
    assert first is not None
    attempts.record(first, _NET)
    second = attempts.next()
    assert second is not None and second.key_id != first.key_id
    attempts.record(second, _NET)
    assert attempts.next() is None  # no third key, and no NoKeyAvailable: the last answer stands


def test_nothing_is_tried_after_the_deadline() -> None:
    clock = Clock()
    attempts = Attempts(_pool(4, clock, deadline=5.0), clock)
    lease = attempts.next()
    assert lease is not None
    attempts.record(lease, _NET)
    clock.now += 6
    assert not attempts.should_retry(_NET)
    assert attempts.next() is None


def test_an_empty_pool_says_so_and_a_cooling_one_says_when() -> None:
    clock = Clock()
    with pytest.raises(NoKeyAvailable) as empty:
        Attempts(_pool(0, clock), clock).next()
    assert empty.value.empty and empty.value.retry_after is None
    pool = _pool(1, clock)
    lease = pool.acquire()
    assert lease is not None
    pool.record(lease, Verdict(Outcome.RATE_LIMITED, 429, retry_after=12.0))
    with pytest.raises(NoKeyAvailable) as cooling:
        Attempts(pool, clock).next()
    assert cooling.value.retry_after == pytest.approx(12.0, abs=1.0) and not cooling.value.empty


@pytest.mark.parametrize(
    ("verdict", "retried"),
    [
        (Verdict(Outcome.RATE_LIMITED, 429), True),
        (Verdict(Outcome.INVALID_KEY, 401), True),
        (Verdict(Outcome.QUOTA_EXHAUSTED, 429), True),
        (Verdict(Outcome.UPSTREAM_FAULT, 503), True),
        (Verdict(Outcome.CLIENT_ERROR, 400), False),  # the request's fault: every key would say the same
    ],
)
def test_only_what_another_key_may_fix_is_retried(verdict: Verdict, retried: bool) -> None:
    clock = Clock()
    attempts = Attempts(_pool(3, clock), clock)
    lease = attempts.next()
    assert lease is not None
    attempts.record(lease, verdict)
    assert attempts.should_retry(verdict) is retried


def test_a_key_that_may_not_use_a_model_is_skipped_for_it_and_only_for_it() -> None:
    clock = Clock()
    pool = _pool(2, clock)
    body = b'{"model":"gpt-5-pro","messages":[]}'
    attempts = Attempts(pool, clock, body=body)
    lease = attempts.next()
    assert lease is not None
    refused = Verdict(Outcome.CLIENT_ERROR, 403, reason=MODEL_ACCESS)
    attempts.record(lease, refused)
    assert attempts.should_retry(refused)  # another key may have the model
    for _ in range(4):  # later requests for that model never get the refusing key
        again = Attempts(pool, clock, body=body)
        got = again.next()
        assert got is not None and got.key_id != lease.key_id
        again.abandon(got)
    others = {a.key_id for a in (Attempts(pool, clock, body=b'{"model":"gpt-4o-mini"}').next() for _ in range(4)) if a}
    assert lease.key_id in others  # other models still use it
