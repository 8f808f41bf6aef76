"""Per (key, model) exclusions: pure bookkeeping with ``now`` passed in."""

from __future__ import annotations

from keyrelay.core.exclusions import ModelExclusions


def test_empty_is_inactive_and_costs_nothing() -> None:
    ex = ModelExclusions()
    assert not ex.by_model and not ex.active(0.0)
    assert ex.keys_for("gpt-4o", 0.0) == []


def test_a_key_is_skipped_for_one_model_only_until_its_time() -> None:
    ex = ModelExclusions()
    ex.add("k1", "gpt-4o", until=100.0)
    assert ex.active(50.0)
    assert ex.keys_for("gpt-4o", 50.0) == ["k1"]
    assert ex.keys_for("gpt-4o-mini", 50.0) == []
    assert ex.keys_for("gpt-4o", 100.0) == []


def test_lapsed_exclusions_are_dropped_so_the_fast_path_returns() -> None:
    ex = ModelExclusions()
    ex.add("k1", "a", until=10.0)
    ex.add("k2", "b", until=20.0)
    assert ex.active(15.0) and list(ex.by_model) == ["b"]
    assert not ex.active(20.0) and not ex.by_model
