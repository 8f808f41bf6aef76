"""The key state machine: what traffic, and people, do to a key's state."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest

from keyrelay.core.machine import effective_state, on_admin, on_outcome
from keyrelay.core.model import KeyRecord, KeyState, Outcome, Transition, Verdict
from keyrelay.core.policy import CoolingPolicy

NOW = 10_000.0
SINCE = 9_000.0
VERSION = 7
POLICY = CoolingPolicy()  # default_cooldown 30 s, max_cooldown 3600 s

A, C, E, I, D = KeyState.ACTIVE, KeyState.COOLING, KeyState.EXHAUSTED, KeyState.INVALID, KeyState.DISABLED
PAST, FUTURE = NOW - 1.0, NOW + 300.0

NOT_THE_KEYS_FAULT = (Outcome.UPSTREAM_FAULT, Outcome.NETWORK_ERROR, Outcome.CLIENT_ERROR, Outcome.CLIENT_GONE)


def record(state: KeyState, until: float = 0.0) -> KeyRecord:
    return KeyRecord(
        id="k1",
        pool="main",
        secret="sk-test-0123456789abcdefghijklmnopqrstuv",
        state=state,
        reason="earlier",
        since=SINCE,
        until=until,
        version=VERSION,
    )


@dataclass(frozen=True)
class Row:
    state: KeyState
    outcome: Outcome
    expected: KeyState | None
    until: float = 0.0  # the record's until before the answer
    stale: bool = False  # the lease was taken at an older version
    retry_after: float | None = None
    expected_until: float | None = None  # checked when given


TABLE: dict[str, Row] = {
    # invalid_key: the first occurrence retires the key, from any live or exhausted state
    "invalid key retires an active key": Row(A, Outcome.INVALID_KEY, I, expected_until=NOW + POLICY.invalid_recheck),
    "invalid key retires a cooling key": Row(C, Outcome.INVALID_KEY, I, until=FUTURE),
    "invalid key retires a key whose cooldown has passed": Row(C, Outcome.INVALID_KEY, I, until=PAST),
    "invalid key retires an exhausted key": Row(E, Outcome.INVALID_KEY, I, until=FUTURE),
    "invalid key from a late answer still retires the key": Row(A, Outcome.INVALID_KEY, I, stale=True),
    "invalid key on an invalid key changes nothing": Row(I, Outcome.INVALID_KEY, None, until=FUTURE),
    # quota
    "quota exhausts an active key": Row(A, Outcome.QUOTA_EXHAUSTED, E, expected_until=NOW + POLICY.exhausted_recheck),
    "quota exhausts a cooling key": Row(C, Outcome.QUOTA_EXHAUSTED, E, until=FUTURE),
    "quota from a late answer still exhausts the key": Row(A, Outcome.QUOTA_EXHAUSTED, E, stale=True),
    "quota does not move an invalid key": Row(I, Outcome.QUOTA_EXHAUSTED, None, until=FUTURE),
    "quota on an exhausted key changes nothing": Row(E, Outcome.QUOTA_EXHAUSTED, None, until=FUTURE),
    # rate_limited
    "rate limit cools an active key for retry_after": Row(
        A, Outcome.RATE_LIMITED, C, retry_after=12.0, expected_until=NOW + 12.0
    ),
    "rate limit without a wait cools for the default 30 s": Row(
        A, Outcome.RATE_LIMITED, C, retry_after=None, expected_until=NOW + 30.0
    ),
    "rate limit asking for a day is capped by max_cooldown": Row(
        A, Outcome.RATE_LIMITED, C, retry_after=86_400.0, expected_until=NOW + POLICY.max_cooldown
    ),
    "rate limit asking for zero still cools for min_cooldown": Row(
        A, Outcome.RATE_LIMITED, C, retry_after=0.0, expected_until=NOW + POLICY.min_cooldown
    ),
    "a later longer cooldown extends the current one": Row(
        C, Outcome.RATE_LIMITED, C, until=NOW + 10.0, retry_after=60.0, expected_until=NOW + 60.0
    ),
    "a shorter cooldown never shortens the current one": Row(
        C, Outcome.RATE_LIMITED, None, until=NOW + 600.0, retry_after=5.0
    ),
    "an equal cooldown changes nothing": Row(C, Outcome.RATE_LIMITED, None, until=NOW + 30.0, retry_after=30.0),
    "rate limit on a key whose cooldown has passed cools it again": Row(
        C, Outcome.RATE_LIMITED, C, until=PAST, retry_after=5.0, expected_until=NOW + 5.0
    ),
    "rate limit does not revive an exhausted key": Row(E, Outcome.RATE_LIMITED, None, until=FUTURE, retry_after=1.0),
    "rate limit does not revive an invalid key": Row(I, Outcome.RATE_LIMITED, None, until=FUTURE, retry_after=1.0),
    # ok
    "ok after the cooldown has passed makes the key active": Row(C, Outcome.OK, A, until=PAST, expected_until=0.0),
    "ok exactly at the end of the cooldown makes the key active": Row(C, Outcome.OK, A, until=NOW),
    "a late ok (stale lease) does not revive a cooled key": Row(C, Outcome.OK, None, until=PAST, stale=True),
    "ok during the cooldown changes nothing": Row(C, Outcome.OK, None, until=FUTURE),
    "ok on an active key changes nothing": Row(A, Outcome.OK, None),
    "ok does not revive an invalid key": Row(I, Outcome.OK, None, until=PAST),
    "ok does not revive an exhausted key": Row(E, Outcome.OK, None, until=PAST),
}

# Outcomes that say nothing about the key leave every state alone.
for _state, _until, _outcome in itertools.product(list(KeyState), (PAST, FUTURE), NOT_THE_KEYS_FAULT):
    TABLE[f"{_outcome.value} leaves a {_state.value} key alone (until {'past' if _until == PAST else 'future'})"] = Row(
        _state, _outcome, None, until=_until
    )

# A disabled key is a person's decision: no traffic answer changes it.
for _outcome, _stale in itertools.product(list(Outcome), (False, True)):
    TABLE[f"{_outcome.value} never changes a disabled key (stale={_stale})"] = Row(
        D, _outcome, None, until=PAST, stale=_stale, retry_after=5.0
    )


@pytest.mark.parametrize("row", TABLE.values(), ids=TABLE.keys())
def test_traffic_outcome_moves_the_key_as_the_table_says(row: Row) -> None:
    rec = record(row.state, row.until)
    lease_version = VERSION - 1 if row.stale else VERSION
    verdict = Verdict(row.outcome, status=429, retry_after=row.retry_after)

    t = on_outcome(rec, verdict, lease_version, POLICY, NOW)

    if row.expected is None:
        assert t is None
        return
    assert t is not None
    assert (t.from_state, t.to_state) == (row.state, row.expected)
    assert t.expected_version == VERSION  # written only if nobody moved the key meanwhile
    assert t.at == NOW
    assert t.actor == "traffic"
    assert (t.key_id, t.pool) == ("k1", "main")
    if row.expected_until is not None:
        assert t.until == pytest.approx(row.expected_until)


def test_transition_reason_prefers_the_verdicts_reason_and_detail_carries_the_evidence() -> None:
    verdict = Verdict(Outcome.QUOTA_EXHAUSTED, status=429, code="insufficient_quota", reason="billing quota spent")

    t = on_outcome(record(A), verdict, VERSION, POLICY, NOW, actor="probe")

    assert t is not None
    assert t.reason == "billing quota spent"
    assert "http 429" in t.detail and "insufficient_quota" in t.detail
    assert t.actor == "probe"


def test_transition_without_a_verdict_reason_names_the_outcome() -> None:
    t = on_outcome(record(A), Verdict(Outcome.RATE_LIMITED), VERSION, POLICY, NOW)
    assert t is not None and t.reason == "rate limited"


def test_a_custom_policy_sets_the_default_and_the_cap() -> None:
    policy = CoolingPolicy(default_cooldown=5.0, max_cooldown=20.0)

    default = on_outcome(record(A), Verdict(Outcome.RATE_LIMITED), VERSION, policy, NOW)
    capped = on_outcome(record(A), Verdict(Outcome.RATE_LIMITED, retry_after=60.0), VERSION, policy, NOW)

    assert default is not None and default.until == NOW + 5.0
    assert capped is not None and capped.until == NOW + 20.0


def test_a_late_success_cannot_revive_a_key_cooled_after_its_request_started() -> None:
    key = record(A)
    lease_version = key.version  # request A starts
    cooled = on_outcome(key, Verdict(Outcome.RATE_LIMITED, retry_after=10.0), key.version, POLICY, NOW)
    assert cooled is not None
    key = cooled.applied_to(key)  # request B's 429 cooled the key

    later = NOW + 60.0
    assert on_outcome(key, Verdict(Outcome.OK), lease_version, POLICY, later) is None
    # A fresh request taken after the cooldown may bring it back.
    fresh = on_outcome(key, Verdict(Outcome.OK), key.version, POLICY, later)
    assert fresh is not None and fresh.to_state is A


# -- Transition.applied_to ---------------------------------------------------------------


def test_applied_transition_bumps_the_version_and_stamps_since_when_the_state_changes() -> None:
    before = record(A)
    t = on_outcome(before, Verdict(Outcome.RATE_LIMITED, retry_after=15.0), VERSION, POLICY, NOW)
    assert t is not None

    after = t.applied_to(before)

    assert after.version == VERSION + 1
    assert after.state is C
    assert after.since == NOW
    assert after.until == NOW + 15.0
    assert after.reason == t.reason
    assert (after.id, after.secret, after.weight) == (before.id, before.secret, before.weight)


def test_applied_transition_keeps_since_when_the_state_does_not_change() -> None:
    before = record(C, until=NOW + 10.0)
    t = on_outcome(before, Verdict(Outcome.RATE_LIMITED, retry_after=120.0), VERSION, POLICY, NOW)
    assert t is not None

    after = t.applied_to(before)

    assert after.state is C
    assert after.since == SINCE  # still the same cooling spell
    assert after.until == NOW + 120.0
    assert after.version == VERSION + 1


def test_applying_transitions_in_sequence_grows_the_version_by_one_each_time() -> None:
    key = record(A)
    steps = [Verdict(Outcome.RATE_LIMITED, retry_after=1.0), Verdict(Outcome.OK), Verdict(Outcome.INVALID_KEY)]
    now = NOW
    for v in steps:
        t = on_outcome(key, v, key.version, POLICY, now)
        assert t is not None
        key = t.applied_to(key)
        now += 5.0
    assert key.version == VERSION + 3
    assert key.state is I


# -- on_admin ----------------------------------------------------------------------------

ADMIN: dict[str, tuple[KeyState, str, KeyState | None]] = {
    **{f"disable a {s.value} key": (s, "disable", D) for s in (A, C, E, I)},
    "disable a disabled key changes nothing": (D, "disable", None),
    **{f"enable a {s.value} key": (s, "enable", A) for s in (C, E, I, D)},
    "enable an active key changes nothing": (A, "enable", None),
}


@pytest.mark.parametrize(("state", "action", "expected"), ADMIN.values(), ids=ADMIN.keys())
def test_a_person_disables_and_enables_keys(state: KeyState, action: str, expected: KeyState | None) -> None:
    rec = record(state, until=FUTURE)

    t = on_admin(rec, action, NOW)

    if expected is None:
        assert t is None
        return
    assert t is not None
    assert (t.from_state, t.to_state) == (state, expected)
    assert t.actor == "admin"
    assert t.expected_version == VERSION
    after = t.applied_to(rec)
    assert after.until == 0.0  # an enabled key owes no wait and no recheck
    assert after.since == NOW
    assert after.version == VERSION + 1


def test_admin_actor_is_recorded() -> None:
    t = on_admin(record(A), "disable", NOW, actor="alice")
    assert t is not None and t.actor == "alice"


def test_unknown_admin_action_is_refused() -> None:
    with pytest.raises(ValueError, match="delete"):
        on_admin(record(A), "delete", NOW)


# -- effective_state ---------------------------------------------------------------------

EFFECTIVE: dict[str, tuple[KeyState, float, KeyState]] = {
    "active stays active": (A, 0.0, A),
    "cooling before its time is cooling": (C, FUTURE, C),
    "cooling at its time is active": (C, NOW, A),
    "cooling after its time is active": (C, PAST, A),
    "exhausted past its recheck is still exhausted": (E, PAST, E),
    "invalid past its recheck is still invalid": (I, PAST, I),
    "disabled is disabled": (D, PAST, D),
}


@pytest.mark.parametrize(("state", "until", "expected"), EFFECTIVE.values(), ids=EFFECTIVE.keys())
def test_effective_state_shows_a_rested_key_as_active(state: KeyState, until: float, expected: KeyState) -> None:
    assert effective_state(record(state, until), NOW) is expected


def test_effective_state_agrees_with_eligibility() -> None:
    for state, until in itertools.product(list(KeyState), (0.0, PAST, NOW, FUTURE)):
        rec = replace(record(state), until=until)
        assert rec.eligible(NOW) == (effective_state(rec, NOW) is A), (state, until)


def test_transition_is_frozen() -> None:
    t = Transition("k", "p", 1, A, C, "r", NOW)
    with pytest.raises(AttributeError):
        t.to_state = I  # type: ignore[misc]
