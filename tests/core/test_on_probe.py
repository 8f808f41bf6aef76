"""What a probe's answer does to a key (``on_probe``), how several answers combine, and the
checker's policy (reset times, validation)."""

from __future__ import annotations

import pytest

from keyrelay.core.machine import ProbeKind, ProbeResult, combine_probes, on_probe
from keyrelay.core.model import KeyRecord, KeyState, Transition
from keyrelay.core.policy import CheckerPolicy, next_reset

NOW = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
SINCE = NOW - 7 * 3600.0
POLICY = CheckerPolicy()  # exhausted every 6 h, invalid every 24 h
A, C, E, I, D = KeyState.ACTIVE, KeyState.COOLING, KeyState.EXHAUSTED, KeyState.INVALID, KeyState.DISABLED

OK_FUNDS = ProbeResult(ProbeKind.OK, "balance", "balance left", 200, balance=4.0, currency="CNY", funds=True)
OK_VALID = ProbeResult(ProbeKind.OK, "models", "key valid", 200)
SPENT = ProbeResult(ProbeKind.EXHAUSTED, "billing", "usage reached the hard limit", 200, balance=0.0, funds=True)
EXPIRED = ProbeResult(ProbeKind.INVALID, "billing", "expired", 200)
REVOKED = ProbeResult(ProbeKind.INVALID, "models", "invalid api key", 401, "invalid_api_key")
UNKNOWN = ProbeResult(ProbeKind.UNKNOWN, "billing", "endpoint not found", 404)


def rec(state: KeyState, until: float = 0.0, reason: str = "earlier", key_id: str = "k1") -> KeyRecord:
    return KeyRecord(key_id, "main", "sk-test-0123456789abcdefghij", state, reason, SINCE, until, version=7)


def moved(t: Transition | None) -> tuple[KeyState, KeyState, str] | None:
    return None if t is None else (t.from_state, t.to_state, t.reason)


@pytest.mark.parametrize("result", [OK_FUNDS, OK_VALID, SPENT, EXPIRED, REVOKED, UNKNOWN])
@pytest.mark.parametrize("state", list(KeyState))
def test_unknown_never_changes_anything_and_disabled_never_changes(state: KeyState, result: ProbeResult) -> None:
    t = on_probe(rec(state, until=NOW - 1), result, POLICY, NOW)

    if state is D or result.kind is ProbeKind.UNKNOWN:
        assert t is None


@pytest.mark.parametrize("result", [SPENT, EXPIRED, REVOKED, OK_FUNDS])
def test_a_cooling_key_is_left_to_time(result: ProbeResult) -> None:
    assert on_probe(rec(C, until=NOW + 30), result, POLICY, NOW) is None


def test_an_active_key_found_expired_is_invalid_and_rechecked_in_a_day() -> None:
    t = on_probe(rec(A), EXPIRED, POLICY, NOW)

    assert t is not None
    assert moved(t) == (A, I, "expired")
    assert (t.until, t.actor, t.expected_version, t.at) == (NOW + 86400, "checker", 7, NOW)
    assert t.detail == "probe billing: expired, http 200"


def test_an_active_key_found_spent_is_exhausted_and_rechecked_in_six_hours() -> None:
    t = on_probe(rec(A), SPENT, POLICY, NOW)

    assert moved(t) == (A, E, "usage reached the hard limit")
    assert t is not None and t.until == NOW + 6 * 3600
    assert "balance 0" in t.detail


def test_a_cooling_key_whose_time_passed_counts_as_active() -> None:
    assert moved(on_probe(rec(C, until=NOW - 1), REVOKED, POLICY, NOW)) == (C, I, "invalid api key")


def test_an_active_key_that_probes_fine_is_left_alone() -> None:
    assert on_probe(rec(A), OK_FUNDS, POLICY, NOW) is None
    assert on_probe(rec(A), OK_VALID, POLICY, NOW) is None


def test_a_provider_reset_sooner_than_the_slow_schedule_is_the_recheck_time() -> None:
    soon = ProbeResult(ProbeKind.EXHAUSTED, "balance", "spent", 200, balance=0.0, funds=True, reset_at=NOW + 600)

    t = on_probe(rec(A), soon, POLICY, NOW)

    assert t is not None and t.until == NOW + 600


def test_a_configured_daily_reset_sooner_than_the_slow_schedule_is_the_recheck_time() -> None:
    late = NOW + 7 * 3600  # 22:06 UTC: midnight is 1 h 53 min away
    t = on_probe(rec(A), SPENT, CheckerPolicy(reset="daily"), late)

    assert t is not None and t.until == next_reset("daily", late)


def test_an_exhausted_key_that_shows_money_again_is_active() -> None:
    t = on_probe(rec(E, until=NOW - 1), OK_FUNDS, POLICY, NOW)

    assert moved(t) == (E, A, "balance back")
    assert t is not None and t.until == 0.0 and "balance 4 CNY" in t.detail


def test_an_exhausted_key_a_validity_probe_cannot_judge_stays_exhausted() -> None:
    assert on_probe(rec(E, until=NOW - 1), OK_VALID, POLICY, NOW) is None


def test_after_a_quota_reset_a_valid_exhausted_key_is_active_again() -> None:
    policy = CheckerPolicy(reset="daily")
    yesterday = rec(E)  # exhausted 7 h ago, at 08:06 UTC; midnight not passed yet
    assert on_probe(yesterday, OK_VALID, policy, NOW) is None

    midnight = next_reset("daily", SINCE)
    assert midnight is not None
    assert moved(on_probe(yesterday, OK_VALID, policy, midnight + 1)) == (E, A, "daily quota reset")


def test_a_still_spent_key_gets_a_new_recheck_time() -> None:
    t = on_probe(rec(E, until=NOW - 1, reason="quota exhausted"), SPENT, POLICY, NOW)

    assert moved(t) == (E, E, "usage reached the hard limit")
    assert t is not None and t.until == NOW + 6 * 3600


def test_an_exhausted_key_found_invalid_is_invalid() -> None:
    assert moved(on_probe(rec(E), EXPIRED, POLICY, NOW)) == (E, I, "expired")


@pytest.mark.parametrize("result", [OK_FUNDS, OK_VALID])
def test_an_invalid_key_is_revived_only_by_a_successful_probe(result: ProbeResult) -> None:
    t = on_probe(rec(I, until=NOW - 1), result, POLICY, NOW)

    assert moved(t) == (I, A, "revived: probe succeeded")
    assert t is not None and t.actor == "checker" and f"probe {result.probe}" in t.detail


def test_an_invalid_key_that_authenticates_but_is_spent_stays_invalid_until_later() -> None:
    t = on_probe(rec(I, reason="invalid api key"), SPENT, POLICY, NOW)

    assert moved(t) == (I, I, "invalid api key")
    assert t is not None and t.until == NOW + 86400


def test_a_still_invalid_key_gets_a_new_recheck_time_and_reason() -> None:
    t = on_probe(rec(I, reason="invalid api key"), EXPIRED, POLICY, NOW)

    assert moved(t) == (I, I, "expired")
    assert t is not None and t.until == NOW + 86400


def test_intervals_of_zero_leave_no_recheck_time() -> None:
    policy = CheckerPolicy(exhausted_interval=0, invalid_interval=0)

    assert on_probe(rec(A), SPENT, policy, NOW).until == 0.0  # type: ignore[union-attr]
    assert on_probe(rec(A), EXPIRED, policy, NOW).until == 0.0  # type: ignore[union-attr]


def test_the_transition_applies_like_any_other() -> None:
    r = rec(A)
    t = on_probe(r, EXPIRED, POLICY, NOW)
    assert t is not None

    after = t.applied_to(r)

    assert (after.state, after.reason, after.since, after.until, after.version) == (I, "expired", NOW, NOW + 86400, 8)


# -- combining probes ------------------------------------------------------------------------------


def test_invalid_beats_exhausted_beats_ok_beats_unknown() -> None:
    assert combine_probes([OK_FUNDS, SPENT, UNKNOWN]) is SPENT
    worst = combine_probes([OK_VALID, REVOKED, SPENT])
    assert (worst.kind, worst.probe, worst.reason) == (ProbeKind.INVALID, "models", "invalid api key")
    assert worst.balance == 0.0  # the balance another probe read is kept
    assert combine_probes([UNKNOWN, OK_VALID]) is OK_VALID


def test_an_ok_that_speaks_to_money_wins_and_a_balance_is_kept() -> None:
    assert combine_probes([OK_VALID, OK_FUNDS]) is OK_FUNDS
    with_balance = ProbeResult(ProbeKind.UNKNOWN, "balance", "odd", 200, balance=2.0, currency="USD")
    got = combine_probes([OK_VALID, with_balance])
    assert (got.kind, got.probe, got.balance, got.currency) == (ProbeKind.OK, "models", 2.0, "USD")


def test_all_unknown_is_unknown_with_every_probes_evidence() -> None:
    other = ProbeResult(ProbeKind.UNKNOWN, "models", "network error", message="ClientConnectorError")

    got = combine_probes([UNKNOWN, other])

    assert (got.kind, got.probe, got.reason) == (ProbeKind.UNKNOWN, "billing+models", "no probe could tell")
    assert "endpoint not found" in got.message and "ClientConnectorError" in got.message


def test_no_probe_is_unknown() -> None:
    assert combine_probes([]).kind is ProbeKind.UNKNOWN


# -- policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "after", "expected"),
    [
        ("daily", "2025-06-15T15:06:40", "2025-06-16T00:00:00"),
        ("daily", "2025-06-15T00:00:00", "2025-06-16T00:00:00"),  # strictly after
        ("weekly", "2025-06-15T15:06:40", "2025-06-16T00:00:00"),  # a Sunday: Monday is next
        ("weekly", "2025-06-16T00:00:00", "2025-06-23T00:00:00"),
        ("monthly", "2025-06-15T15:06:40", "2025-07-01T00:00:00"),
        ("monthly", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),
    ],
)
def test_next_reset_is_the_next_midnight_utc_of_the_period(period: str, after: str, expected: str) -> None:
    import datetime as dt

    ts = dt.datetime.fromisoformat(after + "+00:00").timestamp()

    assert next_reset(period, ts) == dt.datetime.fromisoformat(expected + "+00:00").timestamp()


def test_no_period_has_no_reset() -> None:
    assert next_reset("", NOW) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probes": ("psychic",)},
        {"probes": ("balance",)},
        {"balance_api": "paypal"},
        {"probes": ("completion",)},
        {"reset": "hourly"},
        {"interval": 0},
        {"timeout": 0},
        {"concurrency": 0},
        {"jitter": 1.0},
        {"correlated_share": 0},
        {"enabled": True, "probes": ()},
    ],
)
def test_a_checker_policy_that_cannot_work_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CheckerPolicy(**kwargs)  # type: ignore[arg-type]


def test_probes_given_as_a_list_are_kept_as_a_tuple_without_repeats() -> None:
    assert CheckerPolicy(probes=["billing", "models", "billing"]).probes == ("billing", "models")  # type: ignore[arg-type]
