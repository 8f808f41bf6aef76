"""``on_verify``: what a probe's answer does to a key held on an auth refusal nobody recognised."""

from __future__ import annotations

import pytest

from keyrelay.core.machine import UNVERIFIED, ProbeKind, ProbeResult, on_verify
from keyrelay.core.model import KeyRecord, KeyState
from keyrelay.core.policy import CoolingPolicy

NOW = 1_750_000_000.0
POLICY = CoolingPolicy()


def _held(state: KeyState = KeyState.COOLING, reason: str = UNVERIFIED) -> KeyRecord:
    return KeyRecord("k1", "p", "sk-secret-000000000001", state=state, reason=reason, until=NOW + 30, version=2)


@pytest.mark.parametrize(
    ("result", "to", "until"),
    [
        (ProbeResult(ProbeKind.OK, "models", "key valid", 200), KeyState.ACTIVE, 0.0),
        (ProbeResult(ProbeKind.INVALID, "models", "invalid api key", 401), KeyState.INVALID, NOW + POLICY.invalid_recheck),
        (ProbeResult(ProbeKind.UNKNOWN, "models", "unexpected answer", 403), KeyState.INVALID,
         NOW + POLICY.invalid_recheck),
        (ProbeResult(ProbeKind.EXHAUSTED, "balance", "balance at or below 0", 200), KeyState.EXHAUSTED,
         NOW + POLICY.exhausted_recheck),
    ],
)
def test_a_probe_settles_a_hold(result: ProbeResult, to: KeyState, until: float) -> None:
    t = on_verify(_held(), result, POLICY, NOW)
    assert t is not None
    assert (t.from_state, t.to_state, t.until, t.expected_version) == (KeyState.COOLING, to, until, 2)
    assert t.actor == "checker" and t.detail.startswith("probe ")


def test_a_valid_key_comes_back_with_a_reason_saying_so() -> None:
    t = on_verify(_held(), ProbeResult(ProbeKind.OK, "models", "key valid", 200), POLICY, NOW)
    assert t is not None and t.reason == "verified: the upstream accepts the key"


@pytest.mark.parametrize("status", [0, 404, 500, 503])
def test_a_probe_that_cannot_tell_leaves_the_hold_to_lapse(status: int) -> None:
    assert on_verify(_held(), ProbeResult(ProbeKind.UNKNOWN, "models", "x", status), POLICY, NOW) is None


@pytest.mark.parametrize(
    "record",
    [
        _held(reason="rate limited"),  # an ordinary cooldown is not a hold
        _held(state=KeyState.ACTIVE, reason="enabled by a person"),
        _held(state=KeyState.DISABLED, reason="disabled by a person"),
        _held(state=KeyState.INVALID, reason="invalid api key"),
    ],
)
def test_only_a_key_still_held_is_touched(record: KeyRecord) -> None:
    assert on_verify(record, ProbeResult(ProbeKind.OK, "models", "key valid", 200), POLICY, NOW) is None
    assert on_verify(record, ProbeResult(ProbeKind.INVALID, "models", "bad", 401), POLICY, NOW) is None
