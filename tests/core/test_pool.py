"""The in-memory pool: which keys may take traffic, leases and in-flight counts."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrelay.core.model import KeyRecord, KeyState
from keyrelay.core.pool import Lease, PoolState
from keyrelay.core.selection import STRATEGIES

NOW = 1_000.0
ALL_STRATEGIES = pytest.mark.parametrize("strategy", list(STRATEGIES))


def key(
    kid: str, state: KeyState = KeyState.ACTIVE, until: float = 0.0, version: int = 1, weight: float = 1.0
) -> KeyRecord:
    return KeyRecord(
        id=kid,
        pool="p",
        secret=f"sk-secret-{kid}-0123456789abcdef",
        state=state,
        until=until,
        version=version,
        weight=weight,
    )


def pool_of(*records: KeyRecord, strategy: str = "random") -> PoolState:
    p = PoolState("p", strategy)
    p.load(records)
    return p


def picks(
    pool: PoolState, n: int, now: float = NOW, seed: int = 0, exclude: frozenset[str] = frozenset()
) -> Counter[str]:
    """Acquire-and-release ``n`` times and count the keys lent."""
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    for _ in range(n):
        lease = pool.acquire(now, rng, exclude)
        assert lease is not None
        out[lease.key_id] += 1
        pool.release(lease)
    return out


# -- eligibility ---------------------------------------------------------------------------

ELIGIBILITY = {
    "an active key is lent": (KeyState.ACTIVE, 0.0, True),
    "a cooling key is not lent before its time": (KeyState.COOLING, NOW + 5.0, False),
    "a cooling key is lent once its time has passed": (KeyState.COOLING, NOW - 5.0, True),
    "a cooling key is lent exactly at its time": (KeyState.COOLING, NOW, True),
    "an exhausted key is not lent": (KeyState.EXHAUSTED, NOW - 5.0, False),
    "an invalid key is not lent": (KeyState.INVALID, NOW - 5.0, False),
    "a disabled key is not lent": (KeyState.DISABLED, 0.0, False),
}


@ALL_STRATEGIES
@pytest.mark.parametrize(("state", "until", "lent"), ELIGIBILITY.values(), ids=ELIGIBILITY.keys())
def test_only_active_and_rested_keys_are_lent(strategy: str, state: KeyState, until: float, lent: bool) -> None:
    pool = pool_of(key("only", state, until), strategy=strategy)

    lease = pool.acquire(NOW, random.Random(0))

    assert (lease is not None) == lent
    assert pool.eligible_count(NOW) == int(lent)


@ALL_STRATEGIES
def test_a_cooling_key_comes_back_by_itself_when_its_time_passes(strategy: str) -> None:
    pool = pool_of(key("k", KeyState.COOLING, until=NOW + 30.0), strategy=strategy)
    rng = random.Random(0)

    assert pool.acquire(NOW, rng) is None
    assert pool.acquire(NOW + 29.9, rng) is None
    lease = pool.acquire(NOW + 30.0, rng)
    assert lease is not None and lease.key_id == "k"


def test_the_lease_carries_the_secret_and_the_version_it_was_lent_at() -> None:
    pool = pool_of(key("k", version=4))

    lease = pool.acquire(NOW, random.Random(0))

    assert lease == Lease("k", "p", "sk-secret-k-0123456789abcdef", 4, "sk-…cdef")


def test_a_lease_never_shows_its_secret() -> None:
    lease = pool_of(key("k", version=4)).acquire(NOW, random.Random(0))
    assert lease is not None
    assert "0123456789abcdef" not in repr(lease)
    assert "cdef" in repr(lease)


def test_a_key_moving_to_cooling_stops_being_lent() -> None:
    pool = pool_of(key("a"), key("b"))
    pool.upsert(key("a", KeyState.COOLING, until=NOW + 60.0, version=2))

    assert set(picks(pool, 200)) == {"b"}
    assert set(picks(pool, 400, now=NOW + 60.0)) == {"a", "b"}


def test_a_key_moving_back_to_active_is_lent_again() -> None:
    pool = pool_of(key("a", KeyState.INVALID), key("b"))
    assert set(picks(pool, 100)) == {"b"}

    pool.upsert(key("a", KeyState.ACTIVE, version=2))

    assert set(picks(pool, 400)) == {"a", "b"}


def test_no_key_means_no_lease() -> None:
    assert PoolState("empty").acquire(NOW, random.Random(0)) is None


# -- soonest_free ---------------------------------------------------------------------------


def test_soonest_free_is_the_earliest_cooling_deadline() -> None:
    pool = pool_of(
        key("a", KeyState.COOLING, until=NOW + 50.0),
        key("b", KeyState.COOLING, until=NOW + 10.0),
        key("c", KeyState.COOLING, until=NOW + 30.0),
        key("d", KeyState.EXHAUSTED, until=NOW + 1.0),  # a recheck time is not a cooldown
    )

    assert pool.soonest_free(NOW) == NOW + 10.0
    assert pool.soonest_free(NOW + 10.0) == NOW + 30.0  # b is free by then
    assert pool.soonest_free(NOW + 100.0) is None


def test_soonest_free_ignores_a_cooldown_that_was_replaced() -> None:
    pool = pool_of(key("a", KeyState.COOLING, until=NOW + 5.0), key("b", KeyState.COOLING, until=NOW + 40.0))
    pool.upsert(key("a", KeyState.COOLING, until=NOW + 90.0, version=2))  # extended
    pool.upsert(key("b", KeyState.INVALID, version=2))  # retired

    assert pool.soonest_free(NOW) == NOW + 90.0


def test_soonest_free_is_none_when_nothing_cools() -> None:
    assert pool_of(key("a")).soonest_free(NOW) is None


# -- upsert / remove ------------------------------------------------------------------------


def test_upsert_with_an_older_version_is_ignored() -> None:
    pool = pool_of(key("a", KeyState.INVALID, version=5))

    pool.upsert(key("a", KeyState.ACTIVE, version=4))

    rec = pool.get("a")
    assert rec is not None and rec.state is KeyState.INVALID and rec.version == 5
    assert pool.acquire(NOW, random.Random(0)) is None


def test_upsert_with_a_newer_version_replaces_the_record() -> None:
    pool = pool_of(key("a", KeyState.INVALID, version=5))

    pool.upsert(key("a", KeyState.ACTIVE, version=6))

    rec = pool.get("a")
    assert rec is not None and rec.state is KeyState.ACTIVE
    assert pool.acquire(NOW, random.Random(0)) is not None


def test_upsert_of_a_new_weight_changes_the_share_of_traffic() -> None:
    pool = pool_of(key("a"), key("b"))
    pool.upsert(key("a", version=2, weight=9.0))

    counts = picks(pool, 10_000, seed=4)

    assert 0.86 < counts["a"] / 10_000 < 0.94


@ALL_STRATEGIES
def test_a_removed_key_is_never_lent(strategy: str) -> None:
    pool = pool_of(key("a"), key("b"), strategy=strategy)

    pool.remove("a")

    assert pool.get("a") is None
    assert len(pool) == 1
    assert set(picks(pool, 200)) == {"b"}


def test_a_removed_cooling_key_does_not_come_back_when_its_time_passes() -> None:
    pool = pool_of(key("a", KeyState.COOLING, until=NOW + 1.0))

    pool.remove("a")

    assert pool.acquire(NOW + 10.0, random.Random(0)) is None
    assert pool.soonest_free(NOW) is None


def test_iterating_a_pool_lists_its_records() -> None:
    pool = pool_of(key("a"), key("b", KeyState.DISABLED))
    assert sorted(r.id for r in pool) == ["a", "b"]


# -- leases and in-flight counts ------------------------------------------------------------


def test_release_decrements_in_flight() -> None:
    pool = pool_of(key("a"))
    rng = random.Random(0)

    first = pool.acquire(NOW, rng)
    second = pool.acquire(NOW, rng)
    assert first is not None and second is not None
    assert pool.inflight("a") == 2

    pool.release(first)
    assert pool.inflight("a") == 1
    pool.release(second)
    assert pool.inflight("a") == 0
    pool.release(second)  # a double release never goes negative
    assert pool.inflight("a") == 0


@ALL_STRATEGIES
def test_exclude_is_honoured_and_none_when_everything_is_excluded(strategy: str) -> None:
    pool = pool_of(key("a"), key("b"), key("c"), strategy=strategy)

    assert set(picks(pool, 300, exclude=frozenset({"a", "c"}))) == {"b"}
    assert pool.acquire(NOW, random.Random(0), {"a", "b", "c"}) is None


def test_least_busy_lends_the_key_with_fewest_requests_in_flight() -> None:
    pool = pool_of(*(key(k) for k in "abcd"), strategy="least_busy")
    rng = random.Random(0)

    held = [pool.acquire(NOW, rng) for _ in range(4)]
    assert sorted(lease.key_id for lease in held if lease) == ["a", "b", "c", "d"]  # ties spread

    done = next(lease for lease in held if lease and lease.key_id == "c")
    pool.release(done)
    lease = pool.acquire(NOW, rng)
    assert lease is not None and lease.key_id == "c"


def test_least_busy_remembers_requests_in_flight_across_a_cooldown() -> None:
    pool = pool_of(key("a"), key("b"), strategy="least_busy")
    rng = random.Random(0)
    held = [pool.acquire(NOW, rng) for _ in range(4)]  # two each
    assert Counter(lease.key_id for lease in held if lease) == {"a": 2, "b": 2}

    pool.upsert(key("a", KeyState.COOLING, until=NOW + 1.0, version=2))
    for lease in held:
        if lease and lease.key_id == "b":
            pool.release(lease)  # b is idle now, a still has two in flight

    lease = pool.acquire(NOW + 1.0, rng)  # a is back, but busier than b
    assert lease is not None and lease.key_id == "b"


@ALL_STRATEGIES
def test_a_pool_of_ten_thousand_keys_lends_every_kind_of_key_it_should(strategy: str) -> None:
    n = 10_000
    records = [
        key(
            f"k{i}",
            KeyState.ACTIVE if i % 4 == 0 else KeyState.COOLING if i % 4 == 1 else KeyState.INVALID,
            until=NOW + 60.0,
        )
        for i in range(n)
    ]
    pool = pool_of(*records, strategy=strategy)
    rng = random.Random(0)

    assert len(pool) == n
    assert pool.eligible_count(NOW) == n // 4
    lent = set()
    for _ in range(2_000):
        lease = pool.acquire(NOW, rng)
        assert lease is not None
        assert int(lease.key_id[1:]) % 4 == 0
        lent.add(lease.key_id)
        pool.release(lease)
    assert len(lent) > 1_000  # spread, not stuck on a few keys

    assert pool.eligible_count(NOW + 60.0) == n // 2
    only = pool.acquire(NOW + 60.0, rng, exclude={f"k{i}" for i in range(n) if i != 4001})
    assert only is not None and only.key_id == "k4001"


# -- property: whatever happens, nothing ineligible or excluded is lent ---------------------

IDS = [f"k{i}" for i in range(6)]

upserts = st.tuples(
    st.just("upsert"),
    st.sampled_from(IDS),
    st.sampled_from(list(KeyState)),
    st.floats(min_value=0.0, max_value=60.0),  # until, relative to now
    st.integers(min_value=-1, max_value=2),  # version step (negative = a stale write)
    st.sampled_from([0.5, 1.0, 3.0]),
)
acquires = st.tuples(st.just("acquire"), st.frozensets(st.sampled_from(IDS)))
releases = st.tuples(st.just("release"), st.integers(min_value=0, max_value=50))
waits = st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=30.0))
removes = st.tuples(st.just("remove"), st.sampled_from(IDS))
ops = st.lists(st.one_of(upserts, acquires, acquires, releases, waits, removes), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(list(STRATEGIES)), script=ops, rng=st.randoms(use_true_random=False))
def test_acquire_never_lends_an_ineligible_or_excluded_key(
    strategy: str, script: list[tuple[object, ...]], rng: random.Random
) -> None:
    pool = PoolState("p", strategy)
    expected: dict[str, KeyRecord] = {}  # what the pool should hold
    held: list[Lease] = []
    now = NOW
    for op in script:
        match op:
            case ("upsert", str(kid), KeyState() as state, float(until), int(step), float(weight)):
                old = expected.get(kid)
                version = (old.version if old else 1) + step
                rec = replace(key(kid, state, now + until, max(version, 0)), weight=weight)
                pool.upsert(rec)
                if old is None or rec.version >= old.version:
                    expected[kid] = rec
            case ("acquire", frozenset() as exclude):
                lease = pool.acquire(now, rng, exclude)
                allowed = {k for k, r in expected.items() if r.eligible(now) and k not in exclude}
                if lease is None:
                    assert not allowed, "a lendable key was left unused"
                else:
                    assert lease.key_id in allowed
                    assert lease.version == expected[lease.key_id].version
                    held.append(lease)
            case ("release", int(i)):
                if held:
                    pool.release(held.pop(i % len(held)))
            case ("wait", float(dt)):
                now += dt
            case ("remove", str(kid)):
                pool.remove(kid)
                expected.pop(kid, None)
        assert {r.id: r for r in pool} == expected
        in_flight = Counter(lease.key_id for lease in held)
        for kid in IDS:
            assert pool.inflight(kid) == in_flight[kid]
        assert pool.eligible_count(now) == sum(r.eligible(now) for r in expected.values())
