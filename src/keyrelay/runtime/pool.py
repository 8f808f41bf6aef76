"""A pool at run time: the pure :class:`PoolState` bound to a store, a dialect and a clock.

Reading (choosing a key) is in memory and synchronous. Recording an outcome (:meth:`KeyPool.record`)
updates memory at once and persists what it decided through the pool's own writer: a task on the
gateway's loop (the gateway awaits :meth:`KeyPool.settle` before it answers), or the background
loop in library mode (``client/pool.py`` sets :attr:`KeyPool.writer`). Callers report an outcome
and are done. Counters are batched and flushed by :class:`~keyrelay.runtime.process.Runtime`.

Thread-safety: every touch of the in-memory state holds ``self.lock``, so a sync SDK client may
use a pool from several threads while the runtime's event loop keeps it in sync with the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import replace

from keyrelay.config import PoolSettings
from keyrelay.core.correlation import Admission, CorrelationGuard
from keyrelay.core.exclusions import ModelExclusions
from keyrelay.core.machine import ENABLED_BY_A_PERSON, UNVERIFIED, on_outcome
from keyrelay.core.model import Counters, KeyRecord, KeyState, Outcome, Transition, Verdict
from keyrelay.core.pool import Lease, PoolState
from keyrelay.core.tally import OUTCOME_INDEX, merge_sums
from keyrelay.core.tally import sum_tally as sum_counts
from keyrelay.exceptions import NoKeyAvailable, StoreUnavailable
from keyrelay.providers import Dialect, Usage, get_dialect
from keyrelay.runtime import redactor
from keyrelay.runtime.telemetry import Telemetry
from keyrelay.stores.base import Store

__all__ = ["KeyPool", "Lease"]

log = logging.getLogger("keyrelay.pool")

_OUT_OF_TRAFFIC = frozenset({KeyState.COOLING, KeyState.EXHAUSTED, KeyState.INVALID})


class KeyPool:
    """One pool of keys, as the relay sees it."""

    def __init__(
        self,
        settings: PoolSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        dialect: Dialect | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.dialect = dialect or get_dialect(settings.provider)
        self.clock = clock
        self.rng = rng or random.Random()
        self.state = PoolState(settings.name, settings.strategy)
        self.lock = threading.Lock()
        #: outcomes since the last flush, as (key id, counter index, prompt, completion): a
        #: request appends one tuple and touches no per-key memory (with 10,000 keys, a per-key
        #: row per request cost ~4 % of throughput); :meth:`take_counters` sums them per key.
        self._tally: list[tuple[str, int, int, int]] = []
        #: counters given back after a failed write, summed into the next batch
        self._carry: dict[str, list[int]] = {}
        c = settings.checker
        #: caps how much of the pool traffic and probes may take out at once (core/correlation.py)
        self.guard = CorrelationGuard(c.correlated_share, c.correlated_window, c.correlated_min_keys)
        #: transitions decided while the store was unreachable, written when it is back
        self.backlog: deque[tuple[Transition, Verdict, int]] = deque(maxlen=10_000)
        #: counts for /metrics and events for the alerts (set by the runtime; None: not wanted)
        self.telemetry: Telemetry | None = None
        redactor.register(self)  # its keys join the process's one redaction (redactor.py)
        #: keys just held on an auth refusal no rule recognised, for the verifier (verify.py)
        self.to_verify: set[str] = set()
        #: where to verify a held key when its request did not go to ``base_url`` (library mode;
        #: set before the hold is, so the verifier never asks the wrong host)
        self.verify_base: dict[str, str] = {}
        #: keys skipped for one model they may not use (core/exclusions.py)
        self.exclusions = ModelExclusions()
        #: how a decided transition gets written: by default queued for one writer task on the
        #: running loop (the gateway; see :meth:`settle`); library mode hands it to its background
        #: loop instead
        self.writer: Callable[[Transition, Verdict, int], None] = self._write_in_loop
        self._queue: deque[tuple[Transition, Verdict, int]] = deque()
        self._drainer: asyncio.Task[None] | None = None

    # -- choosing ------------------------------------------------------------------------
    def acquire(self, exclude: Collection[str] = ()) -> Lease | None:
        with self.lock:
            return self.state.acquire(self.clock(), self.rng, exclude)

    def has_exclusions(self) -> bool:
        """Does any key skip some model now? (``False`` on the fast path: nothing to parse.)"""
        if not self.exclusions.by_model:  # the fast path: one dict truthiness test, no lock
            return False
        with self.lock:
            return self.exclusions.active(self.clock())

    def excluded_for(self, model: str) -> list[str]:
        with self.lock:
            return self.exclusions.keys_for(model, self.clock())

    def exclude(self, key_id: str, model: str) -> None:
        """Skip ``key_id`` for ``model`` for ``cooling.model_exclusion`` seconds."""
        with self.lock:
            self.exclusions.add(key_id, model, self.clock() + self.settings.cooling.model_exclusion)
        log.info("pool=%s key=%s may not use model %r: skipped for it for %gs", self.name, key_id, model[:100],
                 self.settings.cooling.model_exclusion)

    def release(self, lease: Lease) -> None:
        with self.lock:
            self.state.release(lease)

    def retry_after(self) -> float | None:
        """Seconds until the soonest cooling key frees up, or ``None`` when none is cooling."""
        now = self.clock()
        with self.lock:
            soonest = self.state.soonest_free(now)
        return None if soonest is None else max(0.0, soonest - now)

    def no_key(self) -> NoKeyAvailable:
        """The error for a request that finds no eligible key (an error path: takes the lock)."""
        retry_after = self.retry_after()
        with self.lock:
            empty = len(self.state) == 0
        return NoKeyAvailable(self.name, retry_after, empty=empty)

    def eligible_count(self) -> int:
        with self.lock:
            return self.state.eligible_count(self.clock())

    # -- learning ------------------------------------------------------------------------
    def record(self, lease: Lease, verdict: Verdict, usage: Usage | None = None) -> None:
        """The outcome of one use of ``lease``: counted, the key released, and what it does to the
        key decided in memory and written by the pool's writer."""
        t = self.observe(lease, verdict, usage, release=True)
        if t is not None:
            self.writer(t, verdict, lease.version)

    def _write_in_loop(self, t: Transition, verdict: Verdict, version: int) -> None:
        """Queue a write for the loop's one writer of this pool: writes go out one at a time, in
        the order they were decided (two writers at once only contend for the store)."""
        self._queue.append((t, verdict, version))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                t, verdict, version = self._queue.popleft()
                await self.persist(t, verdict, version)
        finally:
            self._drainer = None

    @property
    def writing(self) -> bool:
        """Are recorded transitions still being written (on this loop)?"""
        return self._drainer is not None

    async def settle(self) -> None:
        """Wait until the transitions recorded so far are written (cheap when there are none);
        cancelling the caller does not cancel the writes."""
        while self._drainer is not None:
            await asyncio.shield(self._drainer)

    def observe(
        self, lease: Lease, verdict: Verdict, usage: Usage | None = None, *, release: bool = False
    ) -> Transition | None:
        """Count an outcome and decide what it does to the key, in memory only (so no new request
        goes to a retired key); the returned transition is not written — :meth:`record` writes it.
        With ``release``, the lease is given back too (under the same lock)."""
        if verdict.outcome is not Outcome.OK and (verdict.message or verdict.code):
            verdict = _scrubbed(verdict)  # the evidence goes into events, logs and the store
        with self.lock:
            if release:
                self.state.release(lease)
            rec = self.state.get(lease.key_id)
            now = self.clock()
            t = None if rec is None else on_outcome(rec, verdict, lease.version, self.settings.cooling, now)
            if t is not None and rec is not None and not self.admit(rec, t, now):
                t, verdict = None, replace(verdict, outcome=Outcome.UPSTREAM_FAULT)
            self._count(lease.key_id, verdict.outcome, usage)
            if rec is None:
                return None
            if t is not None:
                self.state.upsert(t.applied_to(rec))
                if t.reason == UNVERIFIED:
                    self.to_verify.add(t.key_id)
        if t is not None:
            level = logging.INFO if t.to_state.value in ("cooling", "active") else logging.WARNING
            log.log(
                level,
                "key state pool=%s key=%s masked=%s %s -> %s reason=%r %s",
                self.name, lease.key_id, lease.masked, t.from_state.value, t.to_state.value, t.reason, t.detail,
            )
        return t

    def admit(self, rec: KeyRecord, t: Transition, now: float) -> bool:
        """May ``t`` take the live key ``rec`` out of traffic, or is the pool failing as a whole
        (the correlated-failure guard)? Call with ``self.lock`` held. Logs one warning per episode."""
        if t.to_state not in _OUT_OF_TRAFFIC or not rec.eligible(now):
            return True
        admission = self.guard.admit(rec.id, self.state.eligible_count(now), now)
        if admission is Admission.TRIPPED:
            if self.telemetry is not None:
                self.telemetry.guard_tripped(self.name, self.guard.taken(now), self.guard.window, now)
            log.warning(
                "pool=%s correlated failure: %d keys taken out within %gs; further failures are treated as "
                "upstream_fault (the upstream or our egress, not the keys) until they stop for %gs",
                self.name, self.guard.taken(now), self.guard.window, self.guard.window,
            )
        return admission.allowed

    def verify_at(self, key_id: str, url: str) -> None:
        """Verify ``key_id`` against the API its failed request went to (``url``: that request's)."""
        base = api_base(url)
        with self.lock:
            if len(self.verify_base) > 10_000:
                self.verify_base.clear()
            self.verify_base[key_id] = base or ""  # "": nowhere sure to ask, the hold lapses by itself

    def take_to_verify(self) -> set[str]:
        """The keys held for verification since the last call."""
        with self.lock:
            ids, self.to_verify = self.to_verify, set()
        return ids

    def _count(self, key_id: str, outcome: Outcome, usage: Usage | None) -> None:
        if outcome is Outcome.CLIENT_GONE:
            return
        if usage is None:
            self._tally.append((key_id, OUTCOME_INDEX[outcome], 0, 0))
        else:
            self._tally.append((key_id, OUTCOME_INDEX[outcome], usage.prompt_tokens, usage.completion_tokens))

    def take_counters(self) -> dict[str, Counters]:
        """The counters gathered since the last call (for a batched store write)."""
        tally, rows = self.take_tally()
        self.sum_tally(tally, rows)
        return {kid: Counters(*row) for kid, row in rows.items()}

    def take_tally(self) -> tuple[list[tuple[str, int, int, int]], dict[str, list[int]]]:
        """The outcomes gathered since the last call, and the per-key sums given back after a
        failed write: :meth:`sum_tally` adds the first to the second, in as many slices as the
        caller likes (with many keys, one flush may sum tens of thousands)."""
        with self.lock:
            tally, self._tally = self._tally, []
            rows, self._carry = self._carry, {}
        return tally, rows

    def sum_tally(
        self, tally: list[tuple[str, int, int, int]], rows: dict[str, list[int]], total: list[int] | None = None,
    ) -> None:
        """Add outcomes (from :meth:`take_tally`) to per-key sums (counter values in
        :data:`~keyrelay.core.model.COUNTER_FIELDS` order) and to the pool's ``total``, and
        count them for /metrics."""
        if self.telemetry is not None and tally:
            self.telemetry.add_tally(self.name, tally)
        sum_counts(tally, rows, total)

    def keep_sums(self, sums: dict[str, list[int]]) -> None:
        """Per-key sums not written yet (not due, or the store was down) go back into the batch."""
        with self.lock:
            if self._carry:
                merge_sums(self._carry, sums)
            else:
                self._carry = sums

    async def drain_backlog(self) -> None:
        """Retry the transitions queued while the store was unreachable, oldest first."""
        for _ in range(len(self.backlog)):
            t, verdict, version = self.backlog.popleft()
            await self.persist(t, verdict, version)
            if self.backlog and self.backlog[-1][0] is t:
                self.backlog.appendleft(self.backlog.pop())  # still unreachable: keep the order
                return

    async def persist(self, t: Transition, verdict: Verdict, lease_version: int) -> KeyRecord | None:
        """Write a decided transition. On a version conflict (another writer got there first),
        reload the key and run the state machine again on what is stored."""
        for _ in range(5):
            try:
                new = await self.store.apply(t)
            except StoreUnavailable:
                self.backlog.append((t, verdict, lease_version))  # memory already holds the new state
                if self.telemetry is not None:
                    self.telemetry.store_error("apply")
                return None
            if new is not None:
                with self.lock:
                    self.state.upsert(new)
                if self.telemetry is not None:
                    self.telemetry.transition(t, new)
                return new
            try:
                stored = await self.store.get(t.key_id)
            except StoreUnavailable:
                self.backlog.append((t, verdict, lease_version))
                if self.telemetry is not None:
                    self.telemetry.store_error("get")
                return None
            with self.lock:
                if stored is None:
                    self.state.remove(t.key_id)
                    return None
                self.state.upsert(stored, force=True)
                again = on_outcome(stored, verdict, lease_version, self.settings.cooling, self.clock())
                if again is None:
                    return stored
                self.state.upsert(again.applied_to(stored))
            t = again
        return None

    # -- syncing -------------------------------------------------------------------------
    def upsert(self, record: KeyRecord) -> None:
        with self.lock:
            if record.reason == ENABLED_BY_A_PERSON and record.state is KeyState.ACTIVE:
                old = self.state.get(record.id)
                if old is None or old.version < record.version:  # a person's enable, seen for the first time
                    self.guard.forget(record.id)
            before = self.state.secrets_version
            self.state.upsert(record)
            if self.state.secrets_version != before:
                redactor.changed()

    def remove(self, key_id: str) -> None:
        with self.lock:
            before = self.state.secrets_version
            self.state.remove(key_id)
            if self.state.secrets_version != before:
                redactor.changed()

    def holds(self, key_id: str, secret: str) -> bool:
        """Does the pool hold this key, with this secret, already?"""
        with self.lock:
            rec = self.state.get(key_id)
        return rec is not None and rec.secret == secret

    def secrets(self) -> list[str]:
        """Every key of the pool (for the redaction only)."""
        with self.lock:
            return [r.secret for r in self.state]

    def records(self) -> list[KeyRecord]:
        with self.lock:
            return list(self.state)


def _scrubbed(verdict: Verdict) -> Verdict:
    """``verdict`` without any key (of any pool) in its message or code."""
    r = redactor.current()
    message = r.text(verdict.message)
    code = r.text(verdict.code) if verdict.code else verdict.code
    if message is verdict.message and code is verdict.code:
        return verdict
    return replace(verdict, message=message, code=code)


_VERSION_SEGMENT = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?")


def api_base(url: str) -> str | None:
    """The API root of a request URL, up to its last version segment:
    ``https://api.groq.com/openai/v1/chat/completions`` → ``https://api.groq.com/openai/v1``;
    ``None`` when the path has no ``/v1``-like segment (then nothing says where ``/models`` is)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return None
    host, _, path = rest.partition("/")
    parts = path.split("?", 1)[0].split("/")
    for i in range(len(parts) - 1, -1, -1):
        if _VERSION_SEGMENT.fullmatch(parts[i]):
            return f"{head}://{host}/" + "/".join(parts[: i + 1])
    return None

