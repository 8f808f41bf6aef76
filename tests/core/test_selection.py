"""Selection strategies: how a pool spreads traffic over its eligible keys."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from keyrelay.core.selection import STRATEGIES, LeastBusyStrategy, make_strategy

DRAWS = 20_000
# chi-square critical values at p = 0.001, by degrees of freedom: a seeded run far beyond these
# means the strategy is biased, not unlucky.
CHI2_CRIT = {3: 16.27, 4: 18.47, 9: 27.88}


def chi_square(counts: Counter[str], expected: dict[str, float]) -> float:
    return sum((counts[k] - e) ** 2 / e for k, e in expected.items())


def keys(n: int) -> list[str]:
    return [f"k{i}" for i in range(n)]


# -- random ------------------------------------------------------------------------------


def test_random_is_roughly_uniform_over_equal_weights() -> None:
    s = make_strategy("random")
    ids = keys(10)
    for k in ids:
        s.add(k, 1.0)
    rng = random.Random(1234)

    counts = Counter(s.pick(rng, ()) for _ in range(DRAWS))

    assert set(counts) == set(ids)
    assert chi_square(counts, {k: DRAWS / 10 for k in ids}) < CHI2_CRIT[9]


def test_random_follows_weights() -> None:
    s = make_strategy("random")
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    for k, w in weights.items():
        s.add(k, w)
    rng = random.Random(99)

    counts = Counter(s.pick(rng, ()) for _ in range(DRAWS))

    total = sum(weights.values())
    assert chi_square(counts, {k: DRAWS * w / total for k, w in weights.items()}) < CHI2_CRIT[3]


def test_random_never_picks_a_zero_weight_key_among_weighted_ones() -> None:
    s = make_strategy("random")
    s.add("heavy", 5.0)
    s.add("light", 1.0)
    s.add("off", 0.0)
    rng = random.Random(5)

    counts = Counter(s.pick(rng, ()) for _ in range(5_000))

    assert counts["off"] == 0
    assert counts["heavy"] > 3 * counts["light"]


def test_random_follows_weights_when_the_heaviest_key_is_excluded() -> None:
    s = make_strategy("random")
    for k, w in {"a": 100.0, "b": 1.0, "c": 3.0}.items():
        s.add(k, w)
    rng = random.Random(7)

    counts = Counter(s.pick(rng, {"a"}) for _ in range(8_000))

    assert counts["a"] == 0
    assert chi_square(counts, {"b": 2_000.0, "c": 6_000.0}) < 10.83  # 1 dof, p = 0.001


def test_random_uses_a_changed_weight() -> None:
    s = make_strategy("random")
    s.add("a", 1.0)
    s.add("b", 1.0)
    s.add("a", 9.0)  # re-adding updates the weight
    rng = random.Random(3)

    counts = Counter(s.pick(rng, ()) for _ in range(10_000))

    assert chi_square(counts, {"a": 9_000.0, "b": 1_000.0}) < 10.83


def test_random_back_to_equal_weights_after_the_odd_one_leaves() -> None:
    s = make_strategy("random")
    for k in keys(4):
        s.add(k, 1.0)
    s.add("odd", 50.0)
    s.discard("odd")
    rng = random.Random(11)

    counts = Counter(s.pick(rng, ()) for _ in range(DRAWS))

    assert chi_square(counts, {k: DRAWS / 4 for k in keys(4)}) < CHI2_CRIT[3]


def test_same_seed_gives_the_same_picks() -> None:
    def run() -> list[str | None]:
        s = make_strategy("random")
        for k in keys(50):
            s.add(k, 1.0 + (k == "k3"))
        rng = random.Random(42)
        return [s.pick(rng, ()) for _ in range(200)]

    assert run() == run()


# -- round_robin -------------------------------------------------------------------------


def test_round_robin_visits_every_key_once_per_cycle() -> None:
    s = make_strategy("round_robin")
    ids = keys(7)
    for k in ids:
        s.add(k, 1.0)
    rng = random.Random(0)

    picks = [s.pick(rng, ()) for _ in range(7 * 5)]

    for cycle in range(5):
        assert sorted(picks[cycle * 7 : (cycle + 1) * 7]) == sorted(ids)  # type: ignore[type-var]


def test_round_robin_skips_excluded_keys_and_keeps_the_cycle() -> None:
    s = make_strategy("round_robin")
    for k in keys(4):
        s.add(k, 1.0)
    rng = random.Random(0)

    picks = [s.pick(rng, {"k2"}) for _ in range(9)]

    assert "k2" not in picks
    assert Counter(picks) == {"k0": 3, "k1": 3, "k3": 3}


def test_round_robin_survives_keys_leaving_mid_cycle() -> None:
    s = make_strategy("round_robin")
    for k in keys(5):
        s.add(k, 1.0)
    rng = random.Random(0)
    s.pick(rng, ())
    s.pick(rng, ())
    for k in ("k0", "k1", "k2", "k3"):
        s.discard(k)

    assert [s.pick(rng, ()) for _ in range(3)] == ["k4", "k4", "k4"]


# -- least_busy --------------------------------------------------------------------------


def test_least_busy_picks_the_key_with_fewest_requests_in_flight() -> None:
    s = LeastBusyStrategy()
    for k in ("a", "b", "c"):
        s.add(k, 1.0)
    s.acquired("a", 3)
    s.acquired("b", 1)
    s.acquired("c", 2)
    rng = random.Random(0)

    assert {s.pick(rng, ()) for _ in range(50)} == {"b"}
    s.released("a", 0)
    assert {s.pick(rng, ()) for _ in range(50)} == {"a"}


def test_least_busy_spreads_ties_at_random() -> None:
    s = make_strategy("least_busy")
    ids = keys(5)
    for k in ids:
        s.add(k, 1.0)
    rng = random.Random(8)

    counts = Counter(s.pick(rng, ()) for _ in range(DRAWS))

    assert chi_square(counts, {k: DRAWS / 5 for k in ids}) < CHI2_CRIT[4]


def test_least_busy_falls_back_to_a_busier_key_when_the_idle_ones_are_excluded() -> None:
    s = LeastBusyStrategy()
    for k in ("idle", "busy"):
        s.add(k, 1.0)
    s.acquired("busy", 4)

    assert s.pick(random.Random(0), {"idle"}) == "busy"


# -- every strategy ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_excluded_keys_are_never_picked(name: str) -> None:
    s = make_strategy(name)
    for k in keys(20):
        s.add(k, 1.0 + int(k[1:]) % 3)
    excluded = {f"k{i}" for i in range(0, 20, 2)}
    rng = random.Random(1)

    picks = {s.pick(rng, excluded) for _ in range(2_000)}

    assert picks and not (picks & excluded)
    assert None not in picks


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_pick_is_none_when_every_key_is_excluded(name: str) -> None:
    s = make_strategy(name)
    for k in keys(30):
        s.add(k, 2.0 if k == "k0" else 1.0)

    assert s.pick(random.Random(0), set(keys(30))) is None


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_pick_is_none_from_an_empty_strategy(name: str) -> None:
    assert make_strategy(name).pick(random.Random(0), ()) is None


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_discarded_key_is_never_picked(name: str) -> None:
    s = make_strategy(name)
    for k in keys(3):
        s.add(k, 1.0)
    s.discard("k1")
    s.discard("never-added")  # harmless
    rng = random.Random(2)

    assert {s.pick(rng, ()) for _ in range(300)} == {"k0", "k2"}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_single_remaining_key_is_found_among_ten_thousand_excluded(name: str) -> None:
    s = make_strategy(name)
    ids = keys(10_001)
    for k in ids:
        s.add(k, 1.0)
    excluded = set(ids) - {"k5000"}

    assert s.pick(random.Random(0), excluded) == "k5000"


def test_unknown_strategy_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'fastest'.*random, round_robin, least_busy"):
        make_strategy("fastest")


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_reports_its_name(name: str) -> None:
    assert make_strategy(name).name == name
