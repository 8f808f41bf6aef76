"""Policies: the numbers that tune the state machine and the retry loop. Frozen values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy", "CoolingPolicy"]


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

    def cooldown_for(self, retry_after: float | None) -> float:
        wait = self.default_cooldown if retry_after is None else retry_after
        return min(self.max_cooldown, max(self.min_cooldown, wait))
