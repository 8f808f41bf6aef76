"""The key checker's schedule (:mod:`keyrelay.core.schedule`): which keys are due for a probe
and when, per the pool's :class:`~keyrelay.core.policy.CheckerPolicy`, and what a sweep already
wrote about a key."""

from __future__ import annotations

import pytest

from core.test_on_probe import NOW, OK_FUNDS, POLICY, SINCE, UNKNOWN, A, C, D, E, I, rec
from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.policy import CheckerPolicy, next_reset
from keyrelay.core.schedule import Schedule

# -- the schedule ------------------------------------------------------------------------------------


def test_disabled_and_cooling_keys_are_never_due() -> None:
    assert POLICY.due_at(rec(D), None, NOW) is None
    assert POLICY.due_at(rec(C, until=NOW + 5), None, NOW) is None


def test_an_active_key_is_due_now_until_probed_then_an_interval_later() -> None:
    assert POLICY.due_at(rec(A), None, NOW) == NOW
    assert POLICY.due_at(rec(A), (NOW + 60, 3), NOW) == NOW + 60  # any version: active keys keep their slot
    assert POLICY.due_at(rec(C, until=NOW - 1), None, NOW) == NOW  # cooling over counts as active
    assert CheckerPolicy(active_interval=0).due_at(rec(A), None, NOW) is None


def test_an_exhausted_or_invalid_key_is_due_at_its_recheck_time() -> None:
    assert POLICY.due_at(rec(E, until=NOW + 99), None, NOW) == NOW + 99
    assert POLICY.due_at(rec(I, until=NOW + 77), None, NOW) == NOW + 77
    assert POLICY.due_at(rec(E), None, NOW) == SINCE + 6 * 3600  # no recheck time stored
    assert CheckerPolicy(invalid_interval=0).due_at(rec(I), None, NOW) is None


def test_the_checkers_own_note_wins_while_nobody_changed_the_key() -> None:
    assert POLICY.due_at(rec(E, until=NOW - 5), (NOW + 3600, 7), NOW) == NOW + 3600
    assert POLICY.due_at(rec(E, until=NOW - 5), (NOW + 3600, 6), NOW) == NOW - 5  # changed since: the store's


def test_a_configured_reset_brings_an_exhausted_key_due_sooner() -> None:
    policy = CheckerPolicy(reset="daily")
    r = rec(E, until=SINCE + 30 * 86400)

    assert policy.due_at(r, None, NOW) == next_reset("daily", SINCE)


def test_the_next_probe_follows_the_state_the_key_is_left_in() -> None:
    assert POLICY.next_probe(rec(A), False, 0.0, NOW, 1.0) == NOW + 60
    assert POLICY.next_probe(rec(A), False, 0.0, NOW, 1.1) == pytest.approx(NOW + 66)
    assert POLICY.next_probe(rec(E, until=NOW + 500), True, 0.0, NOW, 1.0) == NOW + 500
    assert POLICY.next_probe(rec(E, until=NOW - 1), False, NOW + 900, NOW, 1.0) == NOW + 900
    assert POLICY.next_probe(rec(I, until=NOW - 1), False, 0.0, NOW, 1.0) == NOW + 86400
    assert CheckerPolicy(active_interval=0).next_probe(rec(A), False, 0.0, NOW, 1.0) == float("inf")


# -- one pool's schedule between sweeps --------------------------------------------------------------


def test_a_pool_is_swept_again_once_nine_tenths_of_its_interval_have_passed() -> None:
    s = Schedule()
    assert s.sweep_due(POLICY, NOW)  # never swept
    s.last_sweep = NOW
    assert not s.sweep_due(POLICY, NOW + 53)
    assert s.sweep_due(POLICY, NOW + 54)


def test_due_keys_come_soonest_first_and_a_probed_key_waits_for_its_next_probe() -> None:
    s = Schedule()
    spent, active, later = rec(E, until=NOW - 100, key_id="k1"), rec(A, key_id="k2"), rec(E, until=NOW + 5, key_id="k3")
    assert [r.id for r in s.due([active, later, spent], POLICY, NOW, False)] == ["k1", "k2"]

    s.probed("k2", active, False, OK_FUNDS, POLICY, NOW, 1.0)
    assert [r.id for r in s.due([active, later, spent], POLICY, NOW + 4, False)] == ["k1"]
    assert [r.id for r in s.due([active, later, spent], POLICY, NOW + 30, False)] == ["k1", "k3"]
    assert [r.id for r in s.due([active, later, spent], POLICY, NOW + 60, False)] == ["k1", "k3", "k2"]


def test_a_forced_sweep_takes_every_key_but_disabled_and_still_cooling_ones() -> None:
    s = Schedule()
    keys = [rec(A, key_id="a"), rec(E, until=NOW + 999, key_id="e"), rec(I, until=NOW + 999, key_id="i"),
            rec(D, key_id="d"), rec(C, until=NOW + 5, key_id="c"), rec(C, until=NOW - 5, key_id="c2")]
    assert sorted(r.id for r in s.due(keys, POLICY, NOW, True)) == ["a", "c2", "e", "i"]


def test_an_unknown_answer_is_news_once_until_a_known_answer_or_other_evidence() -> None:
    s = Schedule()
    assert s.note_unknown("k1", UNKNOWN)
    assert not s.note_unknown("k1", UNKNOWN)
    assert s.note_unknown("k1", ProbeResult(ProbeKind.UNKNOWN, "billing", "endpoint not found", 500))
    s.answered("k1")
    assert s.note_unknown("k1", ProbeResult(ProbeKind.UNKNOWN, "billing", "endpoint not found", 500))


def test_a_balance_is_written_only_when_it_differs_from_the_last_one_stored() -> None:
    s = Schedule()
    r = rec(A)  # stored balance: none
    assert s.balance_changed(r, OK_FUNDS)
    s.balance_stored("k1", OK_FUNDS)
    assert not s.balance_changed(r, OK_FUNDS)
    assert s.balance_changed(r, ProbeResult(ProbeKind.OK, "balance", "balance left", 200, balance=3.5, currency="CNY"))
    assert not s.balance_changed(r, UNKNOWN)  # read no balance


def test_keys_gone_from_the_pool_are_forgotten() -> None:
    s = Schedule()
    for kid in ("k1", "k2"):
        s.probed(kid, rec(A, key_id=kid), False, OK_FUNDS, POLICY, NOW, 1.0)
        s.note_unknown(kid, UNKNOWN)
        s.balance_stored(kid, OK_FUNDS)
    s.forget_gone([rec(A, key_id="k2")])
    assert (set(s.next_due), set(s.noted), set(s.balances)) == ({"k2"}, {"k2"}, {"k2"})
