"""Policies: the numbers that tune the state machine and the retry loop. Frozen values."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from keyrelay.core.model import KeyRecord, KeyState

__all__ = ["BALANCE_APIS", "PROBES", "CheckerPolicy", "CoolingPolicy", "RetryPolicy", "next_reset"]

#: the probes a pool may combine (``[pools.checker] probes``)
PROBES = ("billing", "models", "balance", "completion")
#: the provider balance endpoints the ``balance`` probe knows
BALANCE_APIS = ("deepseek", "openrouter", "siliconflow", "moonshot")
_RESETS = ("", "daily", "weekly", "monthly")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request tries: at most ``max_attempts`` keys, within ``deadline`` seconds."""

    max_attempts: int = 4
    deadline: float = 120.0
    max_body_bytes: int = 32 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.deadline <= 0:
            raise ValueError("deadline must be positive")


@dataclass(frozen=True, slots=True)
class CoolingPolicy:
    """How long keys rest.

    ``default_cooldown`` applies to a 429 rate limit that names no wait; ``max_cooldown`` caps
    any wait an upstream asks for. Exhausted and invalid keys get a recheck time for the checker.
    """

    default_cooldown: float = 30.0
    max_cooldown: float = 3600.0
    min_cooldown: float = 0.05
    exhausted_recheck: float = 6 * 3600.0
    invalid_recheck: float = 24 * 3600.0
    #: how long a key that may not use one model is skipped for that model (seconds)
    model_exclusion: float = 600.0

    def cooldown_for(self, retry_after: float | None) -> float:
        wait = self.default_cooldown if retry_after is None else retry_after
        return min(self.max_cooldown, max(self.min_cooldown, wait))


def next_reset(period: str, after: float) -> float | None:
    """The first quota reset strictly after ``after`` (epoch seconds), at midnight UTC: every day,
    every Monday (``weekly``, OpenRouter's weeks run Monday to Sunday) or the 1st of the month;
    ``None`` for no period."""
    if not period:
        return None
    t = _dt.datetime.fromtimestamp(after, _dt.UTC)
    day = _dt.datetime(t.year, t.month, t.day, tzinfo=_dt.UTC)
    if period == "daily":
        nxt = day + _dt.timedelta(days=1)
    elif period == "weekly":
        nxt = day + _dt.timedelta(days=7 - day.weekday())
    elif period == "monthly":
        nxt = _dt.datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=_dt.UTC)
    else:
        raise ValueError(f"unknown reset period {period!r} (choose from daily, weekly, monthly)")
    return nxt.timestamp()


@dataclass(frozen=True, slots=True)
class CheckerPolicy:
    """The key checker of one pool (``[pools.checker]``): which probes, how often, how hard.

    Intervals are seconds; ``active_interval = 0`` stops probing active keys (only exhausted and
    invalid ones are rechecked), and ``exhausted_interval`` / ``invalid_interval = 0`` stop
    rechecking those. ``jitter`` is a fraction of an interval by which each key's next probe
    moves at random, so keys spread out instead of coming due together. ``max_rate`` caps the
    probes started per second in the background (0 = no cap): a sweep spreads out rather than
    competing with live traffic. ``reset`` is the provider's quota period (``daily``,
    ``weekly``, ``monthly`` at midnight UTC): exhausted keys are rechecked at it.

    The correlated-failure guard (traffic and probes alike): when more than
    ``correlated_share`` of a pool's live keys would be taken out (retired or cooled) within
    ``correlated_window`` seconds, the rest are treated as ``upstream_fault``. Pools with fewer
    than ``correlated_min_keys`` keys never trip it; ``correlated_share = 1`` turns it off.
    """

    enabled: bool = False
    probes: tuple[str, ...] = ("models",)
    interval: float = 60.0
    active_interval: float = 60.0
    exhausted_interval: float = 6 * 3600.0
    invalid_interval: float = 24 * 3600.0
    concurrency: int = 8
    timeout: float = 10.0
    jitter: float = 0.1
    max_rate: float = 50.0
    balance_api: str = ""
    balance_base_url: str = ""
    balance_threshold: float = 0.0
    completion_model: str = ""
    #: the probe that can tell an exhausted key has money again (``providers/money.py``):
    #: ``auto`` (balance where the provider has one, else a 1-token completion), ``off``, or a probe name
    exhausted_probe: str = "auto"
    reset: str = ""
    correlated_share: float = 0.5
    correlated_window: float = 60.0
    correlated_min_keys: int = 4

    def __post_init__(self) -> None:
        probes = self.probes
        if isinstance(probes, str) or not all(isinstance(p, str) for p in probes):
            raise ValueError("probes must be a list of probe names")
        object.__setattr__(self, "probes", tuple(dict.fromkeys(probes)))
        for p in self.probes:
            if p not in PROBES:
                raise ValueError(f"unknown probe {p!r} (choose from {', '.join(PROBES)})")
        if self.enabled and not self.probes:
            raise ValueError("an enabled checker needs at least one probe")
        if "balance" in self.probes and self.balance_api not in BALANCE_APIS:
            raise ValueError(f"the balance probe needs balance_api, one of {', '.join(BALANCE_APIS)}")
        if self.balance_api and self.balance_api not in BALANCE_APIS:
            raise ValueError(f"unknown balance_api {self.balance_api!r} (choose from {', '.join(BALANCE_APIS)})")
        if "completion" in self.probes and not self.completion_model:
            raise ValueError("the completion probe needs completion_model")
        if self.exhausted_probe not in ("auto", "off", *PROBES):
            raise ValueError(
                f"unknown exhausted_probe {self.exhausted_probe!r} (choose from auto, off, {', '.join(PROBES)})"
            )
        if self.reset not in _RESETS:
            raise ValueError(f"unknown reset {self.reset!r} (choose from daily, weekly, monthly)")
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction of an interval, from 0 up to (not including) 1")
        if not 0 < self.correlated_share <= 1:
            raise ValueError("correlated_share must be above 0 and at most 1")

    def recheck(self, state_interval: float, now: float, provider_reset: float = 0.0) -> float:
        """When to look again at a key found exhausted at ``now``: the slow schedule, or the
        provider's reset (``provider_reset`` from the probe, else the configured period) when
        that comes first."""
        due = now + state_interval if state_interval > 0 else float("inf")
        for reset in (provider_reset if provider_reset > now else None, next_reset(self.reset, now)):
            if reset is not None:
                due = min(due, reset)
        return due if due != float("inf") else 0.0

    def due_at(self, record: KeyRecord, seen: tuple[float, int] | None, now: float) -> float | None:
        """When the checker should probe ``record`` (``None``: not by schedule). ``seen`` is what
        the checker noted after its last probe of the key: (next due, the key's version then).

        Disabled and cooling keys never; active keys ``active_interval`` after the last probe
        (now if never probed here); exhausted and invalid keys at their recheck time — the one
        noted if nobody changed the key since, else ``record.until`` (whoever retired it set
        it), or for an exhausted key the configured reset, when that comes first."""
        state = record.state
        if state is KeyState.DISABLED or (state is KeyState.COOLING and record.until > now):
            return None
        if state in (KeyState.ACTIVE, KeyState.COOLING):
            if self.active_interval <= 0:
                return None
            return now if seen is None else seen[0]
        if seen is not None and seen[1] == record.version:
            return seen[0] if seen[0] != float("inf") else None
        interval = self.exhausted_interval if state is KeyState.EXHAUSTED else self.invalid_interval
        due = record.until if record.until > 0 else (record.since + interval if interval > 0 else float("inf"))
        if state is KeyState.EXHAUSTED:
            reset = next_reset(self.reset, record.since)
            if reset is not None:
                due = min(due, reset)
        return None if due == float("inf") else due

    def next_probe(self, after: KeyRecord, moved: bool, provider_reset: float, now: float, jitter: float) -> float:
        """When to probe again a key just probed at ``now`` and now at ``after`` (``moved``: by a
        transition, which set its recheck time); intervals are scaled by ``jitter`` (about 1).
        ``inf`` when never."""
        inf = float("inf")
        if after.state in (KeyState.EXHAUSTED, KeyState.INVALID) and moved and after.until > 0:
            return after.until
        if after.state is KeyState.EXHAUSTED:
            return self.recheck(self.exhausted_interval * jitter, now, provider_reset) or inf
        if after.state is KeyState.INVALID:
            return now + self.invalid_interval * jitter if self.invalid_interval > 0 else inf
        return now + self.active_interval * jitter if self.active_interval > 0 else inf
