"""The key checker's schedule: which keys of a pool are due for a probe and when each is due
next, and what a sweep already wrote about a key. Pure: no I/O, no clock (``now`` is a
parameter), no randomness (the caller draws the jitter); :mod:`keyrelay.runtime.checker` runs the
sweeps and does the writing.

What is due, per pool (``[pools.checker]``, :class:`~keyrelay.core.policy.CheckerPolicy`):

- active keys every ``active_interval`` (0 = never), from the last probe in this process;
- exhausted keys at their recheck time (``record.until``, set by whoever retired them; the
  checker sets it to the sooner of ``now + exhausted_interval``, the provider's announced reset
  such as OpenRouter's ``limit_reset``, and the configured ``reset`` period), invalid keys at
  theirs (``invalid_interval``, default 24 h);
- cooling keys never (time heals them), disabled keys never (a person decides).

A pool is swept again once (nine tenths of) its ``interval`` has passed since its last sweep.
Next-probe times live in the process that keeps the schedule, the pool's leading gateway: after
a restart or a change of leader, keys may be probed once sooner than their schedule.

The schedule also remembers what was written about keys a probe did not change, so that it is
not written again: a key's last *unknown* answer noted (until the answer changes) and the last
balance stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from keyrelay.core.machine import ProbeResult
from keyrelay.core.model import KeyRecord, KeyState
from keyrelay.core.policy import CheckerPolicy

__all__ = ["Schedule"]

_INF = float("inf")


@dataclass(slots=True)
class Schedule:
    """What the checker remembers of one pool between sweeps (this process only)."""

    next_due: dict[str, tuple[float, int]] = field(default_factory=dict)  # id → (when, version then)
    noted: dict[str, str] = field(default_factory=dict)  # id → signature of the last unknown noted
    balances: dict[str, tuple[float | None, str]] = field(default_factory=dict)  # id → last stored
    last_sweep: float = -_INF

    # -- what is due ------------------------------------------------------------------------
    def sweep_due(self, policy: CheckerPolicy, now: float) -> bool:
        """Whether the pool is due for a sweep at ``now`` (its ``interval``, less a tenth, passed)."""
        return not now < self.last_sweep + policy.interval * 0.9

    def due(self, records: Iterable[KeyRecord], policy: CheckerPolicy, now: float, force: bool) -> list[KeyRecord]:
        """The keys to probe at ``now``, soonest due first (``force``: every key a probe may touch)."""
        due = sorted(
            ((when, r) for r in records if (when := self.due_at(r, policy, now, force)) is not None and when <= now),
            key=lambda x: x[0],
        )
        return [r for _, r in due]

    def due_at(self, rec: KeyRecord, policy: CheckerPolicy, now: float, force: bool) -> float | None:
        """When to probe ``rec``; with ``force``, now — unless it is disabled or cooling."""
        if force and rec.state is not KeyState.DISABLED and not (rec.state is KeyState.COOLING and rec.until > now):
            return now
        return None if force else policy.due_at(rec, self.next_due.get(rec.id), now)

    def probed(
        self, key_id: str, after: KeyRecord, moved: bool, result: ProbeResult, policy: CheckerPolicy, now: float,
        jitter: float,
    ) -> None:
        """Note when to probe again a key probed at ``now``, which is now at ``after`` (``moved``:
        by a transition); intervals are scaled by ``jitter`` (about 1)."""
        self.next_due[key_id] = (policy.next_probe(after, moved, result.reset_at, now, jitter), after.version)

    def forget_gone(self, records: Iterable[KeyRecord]) -> None:
        """Forget the keys that are no longer in the pool."""
        ids = {r.id for r in records}
        for d in (self.next_due, self.noted, self.balances):
            for kid in [k for k in d if k not in ids]:
                del d[kid]

    # -- what was already written -------------------------------------------------------------
    def balance_changed(self, rec: KeyRecord, result: ProbeResult) -> bool:
        """Whether ``result`` read a balance other than the one last stored for ``rec``."""
        if result.balance is None:
            return False
        return self.balances.get(rec.id, (rec.balance, rec.currency)) != (result.balance, result.currency)

    def balance_stored(self, key_id: str, result: ProbeResult) -> None:
        self.balances[key_id] = (result.balance, result.currency)

    def note_unknown(self, key_id: str, result: ProbeResult) -> bool:
        """Note an *unknown* answer; whether it is news (other evidence than the last one noted)."""
        sig = f"{result.probe}|{result.reason}|{result.status}|{result.code}"
        if self.noted.get(key_id) == sig:
            return False
        self.noted[key_id] = sig
        return True

    def answered(self, key_id: str) -> None:
        """A known answer ends the key's run of unknowns: the next unknown is news again."""
        self.noted.pop(key_id, None)
