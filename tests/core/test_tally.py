"""Counting outcomes into per-key and per-pool sums (core/tally.py)."""

from __future__ import annotations

from keyrelay.core.model import COUNTER_FIELDS, Counters, Outcome
from keyrelay.core.tally import OUTCOME_INDEX, merge_sums, sum_tally


def test_a_tally_sums_per_key_and_for_the_pool() -> None:
    tally = [
        ("a", OUTCOME_INDEX[Outcome.OK], 10, 4),
        ("b", OUTCOME_INDEX[Outcome.RATE_LIMITED], 0, 0),
        ("a", OUTCOME_INDEX[Outcome.OK], 3, 1),
    ]
    rows: dict[str, list[int]] = {}
    total = [0] * len(COUNTER_FIELDS)
    sum_tally(tally, rows, total)
    assert Counters(*rows["a"]) == Counters(requests=2, successes=2, prompt_tokens=13, completion_tokens=5)
    assert Counters(*rows["b"]) == Counters(requests=1, rate_limited=1)
    assert Counters(*total) == Counters(requests=3, successes=2, rate_limited=1, prompt_tokens=13, completion_tokens=5)


def test_sums_kept_for_later_add_to_what_is_there() -> None:
    into = {"a": [1, 1, 0, 0, 0, 0, 0, 0, 5, 2]}
    merge_sums(into, {"a": [2, 1, 1, 0, 0, 0, 0, 0, 1, 1], "b": [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]})
    assert Counters(*into["a"]) == Counters(requests=3, successes=2, rate_limited=1, prompt_tokens=6, completion_tokens=3)
    assert Counters(*into["b"]) == Counters(requests=1, client_error=1)
