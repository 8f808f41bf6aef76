"""What a process counts for ``/metrics`` and hands to the alerts: plain in-process tallies.

Nothing here knows Prometheus. The hot path appends one tuple per request to
:attr:`Telemetry.requests` (as the key pool appends one per attempt to its own tally); the sums
are made later, off the request path: :meth:`Telemetry.fold` every second and at each scrape,
:meth:`Telemetry.add_tally` when the key pool's counters are flushed. Rare things (a state
transition, a store error, a sweep, the correlated-failure guard tripping) are counted where
they happen. ``server/metrics.py`` turns a :meth:`Telemetry.snapshot` into the exposition.

Labels are bounded: pools, outcomes, states, statuses and reasons come from the config and the
code, never from a key, a token or a client; a reason string that does not look like one of ours
is counted as ``other``, and at most :data:`MAX_SERIES` series are kept per metric.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter

from keyrelay.core.model import COUNTER_FIELDS, KeyRecord, KeyState, Transition

__all__ = ["BUCKETS", "AlertEvent", "Telemetry"]

#: request duration and time-to-first-byte buckets (seconds): LLM calls run from tens of
#: milliseconds (a cached refusal) to minutes (a long completion)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MAX_SERIES = 2000
_REQUEST_KEY = itemgetter(0, 1, 2)
_TOOK, _FIRST = itemgetter(3), itemgetter(4)
_bucket = partial(bisect_left, BUCKETS)
#: one metric's counts: label values → value
Series = dict[tuple[str, ...], int]
_RETIRED = frozenset({KeyState.EXHAUSTED, KeyState.INVALID})
_OUTCOME_OF_INDEX = {
    i: name for i, name in enumerate(COUNTER_FIELDS) if name not in ("requests", "prompt_tokens", "completion_tokens")
}
#: the keypool's counter names → the outcome they count
_OUTCOME_NAMES = {"successes": "ok"}
_PROMPT, _COMPLETION = COUNTER_FIELDS.index("prompt_tokens"), COUNTER_FIELDS.index("completion_tokens")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something an ``[[alerts]]`` webhook may be told. Holds a masked key and a key id only."""

    kind: str  # key_retired | pool_low | guard_tripped
    pool: str
    at: float
    text: str
    fields: dict[str, object] = field(default_factory=dict)


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0


def bounded_label(text: str) -> str:
    """``text`` as a label value if it looks like one of our reason strings, else ``other``."""
    if len(text) > 64 or not all(c.isalnum() or c in " _-.:()/+'," for c in text):
        return "other"
    return text


class Telemetry:
    """The counts of one process (one gateway worker, or one library-mode pool set)."""

    def __init__(self) -> None:
        #: the hot path: one ``(pool, outcome, status, duration, ttfb)`` per request; a negative
        #: duration marks a request refused before any key was chosen (no latency observed)
        self.requests: list[tuple[str, str, int, float, float]] = []
        self.request_counts: Series = {}
        self.duration: dict[str, _Histogram] = {}
        self.ttfb: dict[str, _Histogram] = {}
        self.attempts: Series = {}
        self.tokens: Series = {}
        self.transitions: Series = {}
        self.store_errors: Series = {}
        self.sweeps: Series = {}
        self.probes: Series = {}
        self.guard_trips: Series = {}
        self.alerts: Series = {}
        #: events for the alert dispatcher (alerts.py); bounded: the oldest go when it lags
        self.events: deque[AlertEvent] = deque(maxlen=1000)
        self._lock = threading.Lock()  # folds may come from the loop and a scrape alike

    # -- the hot path's sums -----------------------------------------------------------------
    def fold(self) -> None:
        """Sum the requests appended since the last fold."""
        with self._lock:
            reqs = self.requests.copy()  # the same list stays: the proxy holds its append
            self.requests.clear()
            if not reqs:
                return
            # C-level counting (Counter over itemgetter/bisect maps), not a Python loop per request
            for (pool, outcome, status), n in Counter(map(_REQUEST_KEY, reqs)).items():
                key = (pool, outcome, str(status))
                if key not in self.request_counts and len(self.request_counts) >= MAX_SERIES:
                    key = (pool, "other", "0")
                self.request_counts[key] = self.request_counts.get(key, 0) + n
            timed = [r for r in reqs if r[3] >= 0]
            pools = {r[0] for r in timed} if len({reqs[0][0], reqs[-1][0]}) > 1 else {reqs[0][0]}
            for pool in pools:
                mine = timed if len(pools) == 1 else [r for r in timed if r[0] == pool]
                if not mine:
                    continue
                for hists, field_of in ((self.duration, _TOOK), (self.ttfb, _FIRST)):
                    h = hists.get(pool)
                    if h is None:
                        h = hists[pool] = _Histogram()
                    values = list(map(field_of, mine))
                    for index, n in Counter(map(_bucket, values)).items():
                        h.buckets[index] += n
                    h.sum += sum(values)
                    h.count += len(values)

    def add_tally(self, pool: str, tally: list[tuple[str, int, int, int]]) -> None:
        """A key pool's attempts since its last counter flush (keypool.py ``take_counters``)."""
        by_index: dict[int, int] = {}
        prompt = completion = 0
        for _, index, p, c in tally:
            by_index[index] = by_index.get(index, 0) + 1
            prompt += p
            completion += c
        for index, n in by_index.items():
            name = _OUTCOME_OF_INDEX.get(index, "other")
            _inc(self.attempts, (pool, _OUTCOME_NAMES.get(name, name)), n)
        if prompt:
            _inc(self.tokens, (pool, "prompt"), prompt)
        if completion:
            _inc(self.tokens, (pool, "completion"), completion)

    # -- rare things -------------------------------------------------------------------------
    def transition(self, t: Transition, record: KeyRecord | None) -> None:
        """A transition written to the store by this process (traffic or the checker)."""
        _inc(self.transitions, (t.pool, t.from_state.value, t.to_state.value, bounded_label(t.reason)))
        if t.to_state in _RETIRED and t.from_state is not t.to_state:
            masked = record.masked if record is not None else "…"
            self.events.append(AlertEvent(
                "key_retired", t.pool, t.at,
                f"keyrelay: key {masked} (id {t.key_id}) in pool {t.pool} retired: "
                f"{t.from_state.value} -> {t.to_state.value} ({bounded_label(t.reason)})",
                {"key_id": t.key_id, "masked": masked, "from": t.from_state.value, "to": t.to_state.value,
                 "reason": bounded_label(t.reason), "actor": t.actor},
            ))

    def store_error(self, operation: str) -> None:
        _inc(self.store_errors, (operation,))

    def sweep(self, pool: str, result: str) -> None:
        _inc(self.sweeps, (pool, result))

    def probe(self, pool: str, result: str) -> None:
        _inc(self.probes, (pool, result))

    def guard_tripped(self, pool: str, taken: int, window: float, now: float) -> None:
        _inc(self.guard_trips, (pool,))
        self.events.append(AlertEvent(
            "guard_tripped", pool, now,
            f"keyrelay: pool {pool}: correlated failure, {taken} keys taken out within {window:g}s; "
            "further failures are blamed on the upstream, keys stay in",
            {"taken": taken, "window": window},
        ))

    def alert(self, event: str, result: str) -> None:
        _inc(self.alerts, (event, result))

    # -- reading -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, list[list[object]]]:
        """Every count so far, as ``{metric: [[*labels, value], …]}`` (JSON-able; histograms as
        ``[pool, [bucket counts…], sum, count]``)."""
        self.fold()
        with self._lock:
            snap: dict[str, list[list[object]]] = {
                "requests": [[*k, v] for k, v in self.request_counts.items()],
                "duration": [[p, list(h.buckets), h.sum, h.count] for p, h in self.duration.items()],
                "ttfb": [[p, list(h.buckets), h.sum, h.count] for p, h in self.ttfb.items()],
            }
        for name in ("attempts", "tokens", "transitions", "store_errors", "sweeps", "probes", "guard_trips", "alerts"):
            d: Series = getattr(self, name)
            snap[name] = [[*k, v] for k, v in list(d.items())]
        snap["at"] = [[time.time()]]
        return snap


def _inc(d: Series, key: tuple[str, ...], n: int = 1) -> None:
    if key not in d and len(d) >= MAX_SERIES:
        key = (*key[:-1], "other")
    d[key] = d.get(key, 0) + n
