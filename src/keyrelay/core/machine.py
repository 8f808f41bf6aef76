"""The key state machine: what an outcome, a probe or a person does to a key.

Pure functions of (record, evidence, policy, now). They return a :class:`Transition` to be
written atomically (checked against ``record.version``), or ``None`` when nothing changes.
"""

from __future__ import annotations

from keyrelay.core.model import KeyRecord, KeyState, Outcome, Transition, Verdict
from keyrelay.core.policy import CoolingPolicy

__all__ = ["on_outcome", "on_admin", "effective_state", "AdminAction"]

AdminAction = str  # "disable" | "enable"

_LIVE = (KeyState.ACTIVE, KeyState.COOLING)


def effective_state(record: KeyRecord, now: float) -> KeyState:
    """The state a person should see: a cooling key whose time has passed is active again."""
    if record.state is KeyState.COOLING and record.until <= now:
        return KeyState.ACTIVE
    return record.state


def on_outcome(
    record: KeyRecord,
    verdict: Verdict,
    lease_version: int,
    policy: CoolingPolicy,
    now: float,
    actor: str = "traffic",
) -> Transition | None:
    """Apply what live traffic learnt about a key.

    ``lease_version`` is the key's version when the request started. An answer from an older
    version may make a key worse but never better: a late success cannot revive a key that was
    retired after the request began.
    """
    state = record.state
    outcome = verdict.outcome
    detail = verdict.describe()

    def to(new: KeyState, reason: str, until: float = 0.0) -> Transition:
        return Transition(
            key_id=record.id,
            pool=record.pool,
            expected_version=record.version,
            from_state=state,
            to_state=new,
            reason=reason,
            at=now,
            until=until,
            actor=actor,
            detail=detail,
        )

    if state is KeyState.DISABLED:
        return None
    if outcome is Outcome.OK:
        if state is KeyState.COOLING and record.until <= now and lease_version == record.version:
            return to(KeyState.ACTIVE, "cooldown over")
        return None
    if outcome is Outcome.RATE_LIMITED:
        if state not in _LIVE:
            return None
        until = now + policy.cooldown_for(verdict.retry_after)
        if state is KeyState.COOLING and until <= record.until:
            return None  # a shorter cooldown never shortens a longer one
        return to(KeyState.COOLING, verdict.reason or "rate limited", until)
    if outcome is Outcome.QUOTA_EXHAUSTED:
        if state not in _LIVE:
            return None
        return to(KeyState.EXHAUSTED, verdict.reason or "quota exhausted", now + policy.exhausted_recheck)
    if outcome is Outcome.INVALID_KEY:
        if state is KeyState.INVALID:
            return None
        return to(KeyState.INVALID, verdict.reason or "invalid key", now + policy.invalid_recheck)
    return None  # upstream_fault, network_error, client_error, client_gone: not the key's doing


def on_admin(record: KeyRecord, action: AdminAction, now: float, actor: str = "admin") -> Transition | None:
    """A person disables or enables a key. Enabling also clears invalid/exhausted/cooling."""
    if action == "disable":
        target, reason = KeyState.DISABLED, "disabled by a person"
    elif action == "enable":
        target, reason = KeyState.ACTIVE, "enabled by a person"
    else:
        raise ValueError(f"unknown admin action {action!r}")
    if record.state is target:
        return None
    return Transition(
        key_id=record.id,
        pool=record.pool,
        expected_version=record.version,
        from_state=record.state,
        to_state=target,
        reason=reason,
        at=now,
        actor=actor,
    )
