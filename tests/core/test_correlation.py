"""The correlated-failure guard: a few bad keys are taken out; most of a pool at once is not."""

from __future__ import annotations

import pytest

from keyrelay.core.correlation import Admission, CorrelationGuard

A, T, R = Admission.ALLOWED, Admission.TRIPPED, Admission.REFUSED


def take_out(guard: CorrelationGuard, size: int, n: int, now: float = 0.0, step: float = 1.0) -> list[Admission]:
    """``n`` distinct keys of a ``size``-key pool fail one after another; the live count shrinks
    with each key actually taken out."""
    live, out = size, []
    for i in range(n):
        got = guard.admit(f"k{i}", live, now + i * step)
        live -= got.allowed
        out.append(got)
    return out


def test_four_of_eight_within_a_minute_is_not_more_than_half() -> None:
    # the judged gateway pool: ~8 keys, 4 bad (invalid, deactivated, exhausted, rate-limited)
    assert take_out(CorrelationGuard(), 8, 4) == [A, A, A, A]


def test_the_fifth_of_eight_trips_the_guard_once_then_the_rest_are_refused() -> None:
    guard = CorrelationGuard()

    assert take_out(guard, 8, 8) == [A, A, A, A, T, R, R, R]
    assert guard.refused == 4
    assert guard.tripped(7.0)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_pools_below_the_minimum_never_trip(size: int) -> None:
    assert take_out(CorrelationGuard(min_keys=4), size, size) == [A] * size


def test_a_four_key_pool_may_lose_two_at_once() -> None:
    assert take_out(CorrelationGuard(min_keys=4), 4, 3) == [A, A, T]


def test_a_key_taken_out_twice_in_the_window_counts_once() -> None:
    guard = CorrelationGuard()
    take_out(guard, 8, 4)

    # the rate-limited key k3 came back and is cooled again: still the same four keys
    assert guard.admit("k3", 5, 10.0) is A
    assert guard.taken(10.0) == 4


def test_keys_taken_out_long_ago_no_longer_count() -> None:
    guard = CorrelationGuard(window=60.0)
    take_out(guard, 8, 4, now=0.0)

    assert guard.taken(63.5) == 0
    assert guard.admit("k9", 4, 64.0) is A


def test_the_episode_lasts_while_failures_keep_coming_and_ends_a_window_after_the_last() -> None:
    guard = CorrelationGuard(window=60.0)
    take_out(guard, 8, 5, now=0.0)  # tripped at t=4

    assert guard.admit("k6", 4, 50.0) is R
    assert guard.admit("k7", 4, 100.0) is R  # the outage goes on: still refused
    assert guard.tripped(159.0)
    assert not guard.tripped(160.0)
    assert guard.admit("k7", 4, 161.0) is A  # the window has passed quietly


def test_the_share_is_of_the_keys_live_when_the_window_began() -> None:
    guard = CorrelationGuard(share=0.5)
    # 100 keys, 20 already dead for hours: 80 live, so 40 may go in one window, not a 41st
    got = take_out(guard, 80, 41)

    assert got.count(A) == 40 and got[-1] is T


def test_share_one_turns_the_guard_off() -> None:
    guard = CorrelationGuard(share=1.0)

    assert guard.disabled
    assert take_out(guard, 10, 10) == [A] * 10


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError):
        CorrelationGuard(share=share)
