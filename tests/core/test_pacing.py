"""The pace of key rows (``core/pacing.py``): the longest-waiting keys first, about ``rate`` a
second, none later than ``max_lag``, and a true count whatever two flushes did at once."""

from __future__ import annotations

from keyrelay.core.pacing import Pacer

T = 1_800_000_000.0


def _flush(p: Pacer, now: float, new: int = 0, every: bool = False) -> tuple[int, float]:
    """What one flush does with the pacer: keys arrive, some are written, the rest wait."""
    p.arrived(new, now)
    n, since = p.take(now, every=every)
    p.spent(n)
    p.left(p.waiting - n, now)
    return n, since


def test_a_few_busy_keys_are_written_every_flush() -> None:
    p = Pacer(500, 300, T)
    for s in range(10):
        assert _flush(p, T + s, new=40) == (40, T + s)
    assert p.waiting == 0


def test_many_busy_keys_are_written_at_the_rate_oldest_first_after_a_saved_up_burst() -> None:
    p = Pacer(500, 300, T, burst=2.0)
    assert _flush(p, T, new=10_000) == (1000, T)  # two seconds' worth saved up before any traffic
    assert _flush(p, T + 1, new=300)[0] == 500
    n, since = _flush(p, T + 2)
    assert n == 500 and since == T  # still the first cohort's keys
    written = 2000
    s = 2
    while p.waiting:
        s += 1
        n, since = _flush(p, T + s)
        assert n <= 500
        written += n
    assert written == 10_300 and since == T + 1  # the last written were the keys busy at T + 1
    assert s == 2 + (10_300 - 2000 + 499) // 500


def test_an_idle_spell_saves_up_only_a_burst() -> None:
    p = Pacer(500, 300, T, burst=2.0)
    _flush(p, T)
    assert _flush(p, T + 3600, new=50_000)[0] == 1000  # an hour idle: still two seconds' worth, not an hour's


def test_keys_waiting_the_longest_lag_are_written_whatever_the_rate() -> None:
    p = Pacer(100, 60, T, burst=1.0)
    _flush(p, T, new=10_000)  # 100 written
    for s in range(1, 60):
        assert _flush(p, T + s)[0] == 100
    assert p.waiting == 10_000 - 6000
    n, since = _flush(p, T + 60)
    assert n == 4000 and since == T  # the rest of the first cohort: overdue, all at once
    assert p.waiting == 0


def test_a_full_flush_takes_every_waiting_key() -> None:
    p = Pacer(500, 300, T)
    _flush(p, T, new=5000)
    assert _flush(p, T + 1, new=10, every=True) == (5000 - 1000 + 10, T)
    assert p.waiting == 0


def test_the_count_is_made_true_after_two_flushes_merged_what_they_kept() -> None:
    p = Pacer(500, 300, T)
    p.arrived(800, T)
    p.left(300, T + 1)  # the dict holds fewer keys than counted: the oldest are forgotten
    assert p.waiting == 300
    p.left(900, T + 2)  # more than counted: the extra join as of now
    assert p.waiting == 900
    n, since = p.take(T + 2)
    assert since == T and n == 900  # budget 1000 saved up
