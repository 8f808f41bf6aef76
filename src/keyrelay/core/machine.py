"""The key state machine: what an outcome, a probe or a person does to a key.

Pure functions of (record, evidence, policy, now). They return a :class:`Transition` to be
written atomically (checked against ``record.version``), or ``None`` when nothing changes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from keyrelay.core.model import KeyRecord, KeyState, Outcome, Transition, Verdict
from keyrelay.core.policy import CheckerPolicy, CoolingPolicy, next_reset

__all__ = [
    "ENABLED_BY_A_PERSON",
    "AdminAction",
    "ProbeKind",
    "ProbeResult",
    "combine_probes",
    "effective_state",
    "on_admin",
    "on_outcome",
    "on_probe",
    "on_verify",
]

AdminAction = str  # "disable" | "enable"
#: the reason of a key a person put back into rotation (``keyrelay keys enable``)
ENABLED_BY_A_PERSON = "enabled by a person"

_LIVE = (KeyState.ACTIVE, KeyState.COOLING)

#: the reason of a short hold on a key whose auth refusal (a bare 403, a 401 with an unknown
#: body) no classification rule recognised: a probe decides whether it goes back or is retired
UNVERIFIED = "unverified_auth_failure"


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
    if outcome is Outcome.OK and state is KeyState.ACTIVE:
        return None  # the hot path: nothing to decide

    def to(new: KeyState, reason: str, until: float = 0.0) -> Transition:
        return _transition(record, new, reason, now, until, actor, verdict.describe())

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
        target, reason = KeyState.ACTIVE, ENABLED_BY_A_PERSON
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


# -- probes (the key checker) -----------------------------------------------------------------


class ProbeKind(str, enum.Enum):
    """What a probe found out about a key."""

    OK = "ok"
    EXHAUSTED = "exhausted"
    INVALID = "invalid"
    UNKNOWN = "unknown"  # no answer, 5xx, or an answer that cannot be read: changes nothing


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's answer about one key, with its evidence.

    ``funds`` says whether the probe speaks to money: an ``ok`` from a balance, billing or
    completion probe shows the key can pay, an ``ok`` from ``models`` only that it is valid.
    ``reset_at`` is when the provider says a spent limit resets (epoch seconds; 0 = unknown).
    """

    kind: ProbeKind
    probe: str
    reason: str = ""
    status: int = 0
    code: str | None = None
    balance: float | None = None
    currency: str = ""
    funds: bool = False
    reset_at: float = 0.0
    message: str = ""

    def describe(self) -> str:
        """``probe billing: expired, http 200, balance 3.5 USD`` — the evidence for an event."""
        parts = [f"probe {self.probe}: {self.reason or self.kind.value}"]
        if self.status:
            parts.append(f"http {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        if self.balance is not None:
            parts.append(f"balance {self.balance:g} {self.currency}".rstrip())
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)


_SEVERITY = {ProbeKind.INVALID: 0, ProbeKind.EXHAUSTED: 1, ProbeKind.OK: 2, ProbeKind.UNKNOWN: 3}


def combine_probes(results: Sequence[ProbeResult]) -> ProbeResult:
    """One verdict from several probes of one key: invalid beats exhausted beats ok beats
    unknown; among oks, one that speaks to money wins, and a balance read by any probe is kept."""
    if not results:
        return ProbeResult(ProbeKind.UNKNOWN, "none", "no probe ran")
    best = min(results, key=lambda r: (_SEVERITY[r.kind], not r.funds))
    if best.kind is ProbeKind.UNKNOWN and len(results) > 1:
        return replace(best, probe="+".join(r.probe for r in results), reason="no probe could tell",
                       message="; ".join(r.describe() for r in results))
    if best.balance is None:
        for r in results:
            if r.balance is not None:
                return replace(best, balance=r.balance, currency=r.currency)
    return best


def on_probe(record: KeyRecord, result: ProbeResult, policy: CheckerPolicy, now: float) -> Transition | None:
    """Apply what the checker learnt about a key (actor ``checker``).

    - active (or cooling whose time has passed) → ``exhausted`` / ``invalid`` on those results;
    - exhausted → active when a probe shows money again (or, with a ``reset`` period configured,
      when a probe that cannot see money finds the key valid after a reset);
      still exhausted → exhausted with a new recheck time; → invalid on an invalid result;
    - invalid → active only on a clearly successful probe (revival); still invalid → invalid
      with a new recheck time (an exhausted answer does not revive it);
    - unknown, a cooling key, a disabled key → nothing.
    """
    state = record.state
    kind = result.kind
    if state is KeyState.DISABLED or kind is ProbeKind.UNKNOWN:
        return None
    if state is KeyState.COOLING and record.until > now:
        return None
    live = state in _LIVE

    def to(new: KeyState, reason: str, until: float = 0.0) -> Transition:
        return _transition(record, new, reason, now, until, "checker", result.describe())

    invalid_until = now + policy.invalid_interval if policy.invalid_interval > 0 else 0.0
    exhausted_until = policy.recheck(policy.exhausted_interval, now, result.reset_at)
    if kind is ProbeKind.INVALID:
        return to(KeyState.INVALID, result.reason or "invalid key", invalid_until)
    if kind is ProbeKind.EXHAUSTED:
        if state is KeyState.INVALID:
            return to(KeyState.INVALID, record.reason or "invalid key", invalid_until)  # recheck later
        return to(KeyState.EXHAUSTED, result.reason or "quota exhausted", exhausted_until)
    # ok
    if live:
        return None
    if state is KeyState.INVALID:
        return to(KeyState.ACTIVE, "revived: probe succeeded")
    if result.funds:
        return to(KeyState.ACTIVE, "balance back")
    reset = next_reset(policy.reset, record.since)
    if reset is not None and reset <= now:
        return to(KeyState.ACTIVE, f"{policy.reset} quota reset")
    return None  # valid, but the probe cannot see money: the checker looks again later


def on_verify(record: KeyRecord, result: ProbeResult, policy: CoolingPolicy, now: float) -> Transition | None:
    """Settle a hold (reason :data:`UNVERIFIED`) with a probe's answer (actor ``checker``):
    valid → active again; refused (invalid, or the probe itself refused with 401/403) →
    invalid; spent → exhausted. A probe that cannot tell changes nothing: the hold lapses by
    itself and the key is back in traffic. A key no longer held (a person or another answer
    moved it) is left alone."""
    if record.state is not KeyState.COOLING or record.reason != UNVERIFIED:
        return None

    def to(new: KeyState, reason: str, until: float = 0.0) -> Transition:
        return _transition(record, new, reason, now, until, "checker", result.describe())

    kind = result.kind
    if kind is ProbeKind.UNKNOWN and result.status in (401, 403):
        return to(KeyState.INVALID, f"refused by the upstream (http {result.status})", now + policy.invalid_recheck)
    if kind is ProbeKind.OK:
        return to(KeyState.ACTIVE, "verified: the upstream accepts the key")
    if kind is ProbeKind.INVALID:
        return to(KeyState.INVALID, result.reason or "invalid key", now + policy.invalid_recheck)
    if kind is ProbeKind.EXHAUSTED:
        return to(KeyState.EXHAUSTED, result.reason or "quota exhausted", now + policy.exhausted_recheck)
    return None


def _transition(
    record: KeyRecord, new: KeyState, reason: str, now: float, until: float, actor: str, detail: str
) -> Transition:
    """A transition of ``record`` to ``new``, to be written only if its version still holds."""
    return Transition(
        key_id=record.id,
        pool=record.pool,
        expected_version=record.version,
        from_state=record.state,
        to_state=new,
        reason=reason,
        at=now,
        until=until,
        actor=actor,
        detail=detail,
    )
