"""The key checker: the seed's background job, grown up. It probes keys and moves them between
states through the same path live traffic uses (state machine → transition → ``store.apply``
with its version check → event). This module runs the sweeps (store locks, concurrency, rate
cap, writing results; one probe over HTTP: :mod:`keyrelay.runtime.probing`); which keys are due, and when, is decided by each
pool's :class:`~keyrelay.core.schedule.Schedule` (``[pools.checker]``,
:class:`~keyrelay.core.policy.CheckerPolicy`).

Of several gateways (or worker processes) sharing a store, one leads each pool's schedule: it
holds the store lock ``checker-leader:<pool>`` (TTL 3 intervals, renewed every tick) and the
others stand by until it lapses. Each sweep also takes ``checker:<pool>`` (a TTL lock, renewed
while it runs; ``keyrelay check`` takes only this one), so only one sweep of a pool runs at a
time. A sweep runs at most ``concurrency`` probes at once and starts at most ``max_rate`` per
second, with a ``timeout`` per request. Next-probe times live in the leading process (see
:mod:`keyrelay.core.schedule`).

Events: every transition is one (actor ``checker``, the probe's evidence in ``detail``). A
probe that changes nothing writes no event, except a key's first *unknown* answer in a row (its
evidence, once, until the answer changes) — unless most of the pool answered unknown in the
same sweep, which says the upstream is down: then one pool-level warning is logged instead.
A balance a probe read is stored with ``store.set_balance`` when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import aiohttp

from keyrelay.core.machine import ProbeKind, ProbeResult, combine_probes, effective_state, on_probe
from keyrelay.core.masking import mask
from keyrelay.core.model import Event, KeyRecord, KeyState, Transition
from keyrelay.core.schedule import Schedule
from keyrelay.providers.money import money_probe
from keyrelay.providers.probes import Probe, build_probes
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.probing import CheckRow, SweepReport, run_probe
from keyrelay.stores.base import Store

__all__ = ["CheckRow", "Checker", "SweepReport", "run_probe"]

log = logging.getLogger("keyrelay.runtime.checker")

_DECISIVE = (ProbeKind.INVALID, ProbeKind.EXHAUSTED)


class Checker:
    """Probes the keys of some pools (the gateway's :class:`KeyPool` objects, or fresh ones loaded
    from the store by ``keyrelay check``)."""

    def __init__(
        self,
        store: Store,
        pools: Iterable[KeyPool],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.pools = {p.name: p for p in pools}
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._schedules: dict[str, Schedule] = {name: Schedule() for name in self.pools}
        self._leading: set[str] = set()  # pools whose schedule this process leads

    # -- the background job ----------------------------------------------------------------
    @staticmethod
    @contextlib.asynccontextmanager
    async def session(limit: int = 100) -> AsyncIterator[aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as s:
            yield s

    async def run(self) -> None:
        """Sweep every enabled pool each time its ``interval`` has passed, until cancelled."""
        enabled = [p for p in self.pools.values() if p.settings.checker.enabled]
        if not enabled:
            return
        tick = min(p.settings.checker.interval for p in enabled)
        failing: set[str] = set()
        try:
            async with self.session(limit=max(100, sum(p.settings.checker.concurrency for p in enabled))) as session:
                while True:
                    await asyncio.sleep(tick * (1 + 0.1 * self.rng.uniform(-1, 1)))
                    await self._tick(enabled, session, failing)
        finally:
            for name in list(self._leading):  # stand down, so another gateway takes over at once
                with contextlib.suppress(Exception):
                    await self.store.unlock(f"checker-leader:{name}", self.owner)
            self._leading.clear()

    async def _tick(self, enabled: list[KeyPool], session: aiohttp.ClientSession, failing: set[str]) -> None:
        now = self.clock()
        due = []
        for p in enabled:
            if not self._schedules[p.name].sweep_due(p.settings.checker, now):
                continue
            try:
                leads = await self._lead(p, now)
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable: say so once
                leads = False
                if p.name not in failing:
                    log.error("checker of pool=%s cannot reach the store: %s", p.name, type(exc).__name__)
                failing.add(p.name)
            if leads:
                due.append(p)
        results = await asyncio.gather(*(self.sweep(p, session) for p in due), return_exceptions=True)
        for pool, res in zip(due, results):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if pool.telemetry is not None:
                outcome = "failed" if isinstance(res, BaseException) else "locked_out" if res.locked_out else "done"
                pool.telemetry.sweep(pool.name, outcome)
            if isinstance(res, BaseException):
                if pool.name not in failing:
                    log.error("checker sweep of pool=%s failed: %s", pool.name, type(res).__name__)
                failing.add(pool.name)
            elif pool.name in failing:
                failing.discard(pool.name)
                log.warning("checker sweep of pool=%s recovered", pool.name)

    async def _lead(self, pool: KeyPool, now: float) -> bool:
        """Take or keep the lead of ``pool``'s schedule (see the module docstring)."""
        ttl = max(3 * pool.settings.checker.interval, 60.0)
        if await self.store.try_lock(f"checker-leader:{pool.name}", self.owner, ttl, now):
            self._leading.add(pool.name)
            return True
        self._leading.discard(pool.name)
        return False

    # -- one sweep --------------------------------------------------------------------------
    async def sweep(
        self,
        pool: KeyPool,
        session: aiohttp.ClientSession,
        *,
        force: bool = False,
        dry_run: bool = False,
        probes: Sequence[str] | None = None,
        pace: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> SweepReport:
        """Probe the pool's due keys (``force``: every key a probe may touch, due or not).

        ``dry_run`` decides but writes nothing (no transition, balance or event, no lock);
        ``probes`` overrides the configured probe list; ``pace=False`` ignores ``max_rate``;
        ``progress(done, total)`` is called after each key."""
        policy = pool.settings.checker
        schedule = self._schedules.setdefault(pool.name, Schedule())
        started = self.clock()
        report = SweepReport(pool.name, started, dry_run=dry_run)
        lock = f"checker:{pool.name}"
        ttl = max(3 * policy.interval, 6 * policy.timeout, 60.0)
        if not dry_run and not await self.store.try_lock(lock, self.owner, ttl, started):
            report.locked_out = True
            report.finished = self.clock()
            return report
        schedule.last_sweep = started
        try:
            built = build_probes(policy, pool.settings.base_url, pool.dialect, tuple(probes) if probes else None)
            # exhausted keys also get a probe that can see money (unless probes were named)
            money = None if probes else money_probe(policy, pool.settings.base_url, pool.dialect, built)
            records = pool.records()
            schedule.forget_gone(records)
            due = schedule.due(records, policy, started, force)
            report.rows = await self._probe_all(pool, due, built, session, report, ttl, pace, progress, money)
            if not dry_run:
                await self._note_unknowns(pool, schedule, report)
        finally:
            if not dry_run:
                await self.store.unlock(lock, self.owner)
        report.finished = self.clock()
        return report

    async def _probe_all(
        self,
        pool: KeyPool,
        due: list[KeyRecord],
        probes: tuple[Probe, ...],
        session: aiohttp.ClientSession,
        report: SweepReport,
        ttl: float,
        pace: bool,
        progress: Callable[[int, int], None] | None,
        money: Probe | None = None,
    ) -> list[CheckRow]:
        policy = pool.settings.checker
        loop = asyncio.get_running_loop()
        spacing = 1.0 / policy.max_rate if pace and policy.max_rate > 0 else 0.0
        # Probes start in bursts of ``concurrency`` (the average rate stays ``max_rate``): probes
        # that start together share the event loop's wake-ups, which costs less CPU per probe
        # than starting them one by one (docs/design.md, "The key checker").
        burst = spacing * policy.concurrency
        rows: list[CheckRow] = []
        it = iter(due)
        next_start = loop.time()
        renewed = self.clock()
        lost = False

        async def worker() -> None:
            nonlocal next_start, renewed, lost
            for rec in it:
                if lost:
                    return
                if spacing:
                    now = loop.time()
                    next_start = max(next_start, now - burst)  # idle slots are not saved up beyond a burst
                    start, next_start = next_start, next_start + spacing
                    wake = start - start % burst  # the burst this slot falls in
                    if wake > now:
                        await asyncio.sleep(wake - now)
                run = (money, *probes) if money is not None and rec.state is KeyState.EXHAUSTED else probes
                rows.append(await self._check_one(pool, rec, run, session, report.dry_run))
                if progress is not None:
                    progress(len(rows), len(due))
                if not report.dry_run and self.clock() - renewed > ttl / 3:
                    renewed = self.clock()
                    if pool.name in self._leading:  # a long sweep keeps the lead too
                        await self._lead(pool, renewed)
                    if not await self.store.try_lock(f"checker:{pool.name}", self.owner, ttl, renewed):
                        lost = True  # we stalled past the TTL and another gateway took over
                        log.warning("checker lost the sweep lock of pool=%s; stopping this sweep", pool.name)

        await asyncio.gather(*(worker() for _ in range(min(policy.concurrency, max(1, len(due))))))
        return rows

    async def check_key(
        self, pool: KeyPool, rec: KeyRecord, probes: tuple[Probe, ...], session: aiohttp.ClientSession
    ) -> CheckRow:
        """Probe one key now and write what the answer says (the admin API's recheck)."""
        return await self._check_one(pool, rec, probes, session, False)

    async def _check_one(
        self, pool: KeyPool, rec: KeyRecord, probes: tuple[Probe, ...], session: aiohttp.ClientSession, dry_run: bool
    ) -> CheckRow:
        policy = pool.settings.checker
        results: list[ProbeResult] = []
        for probe in probes:
            rebase = (pool.settings.base_url, rec.base_url)
            r = await run_probe(session, probe, rec.secret, self.clock(), policy.timeout, rebase)
            results.append(r)
            if r.kind in _DECISIVE:
                break
        result = combine_probes(results)
        if pool.telemetry is not None and not dry_run:
            pool.telemetry.probe(pool.name, result.kind.value)
        now = self.clock()
        with pool.lock:
            cur = pool.state.get(rec.id) or rec  # it may have changed while we probed
            t = on_probe(cur, result, policy, now)
            correlated = t is not None and not pool.admit(cur, t, now)
        if correlated:
            t = None
        after = cur
        if t is not None:
            after = t.applied_to(cur)
            if not dry_run:
                after = await self._persist(pool, t, result) or after
            self._log(pool, cur, t, dry_run)
        if not dry_run:
            await self._remember(pool, cur, after, t, result, now)
        # the states as traffic sees them (a cooling key whose time has passed is active)
        before_state, after_state = effective_state(cur, now), effective_state(after, self.clock())
        return CheckRow(rec.id, pool.name, mask(rec.secret), before_state, after_state, result, t, correlated)

    async def _persist(self, pool: KeyPool, t: Transition, result: ProbeResult) -> KeyRecord | None:
        """``store.apply`` with its version check; on a conflict, decide again on what is stored."""
        policy = pool.settings.checker
        for _ in range(5):
            new = await self.store.apply(t)
            if new is not None:
                pool.upsert(new)
                if pool.telemetry is not None:
                    pool.telemetry.transition(t, new)
                return new
            stored = await self.store.get(t.key_id)
            with pool.lock:
                if stored is None:
                    pool.state.remove(t.key_id)
                    return None
                pool.state.upsert(stored, force=True)
            again = on_probe(stored, result, policy, self.clock())
            if again is None:
                return stored
            t = again
        return None

    async def _remember(
        self, pool: KeyPool, before: KeyRecord, after: KeyRecord, t: Transition | None, result: ProbeResult, now: float
    ) -> None:
        policy = pool.settings.checker
        schedule = self._schedules[pool.name]
        jitter = 1 + policy.jitter * self.rng.uniform(-1, 1)
        schedule.probed(before.id, after, t is not None, result, policy, now, jitter)
        if schedule.balance_changed(before, result):
            await self.store.set_balance(before.id, result.balance, result.currency)
            schedule.balance_stored(before.id, result)

    # -- evidence that changed nothing ----------------------------------------------------------
    async def _note_unknowns(self, pool: KeyPool, schedule: Schedule, report: SweepReport) -> None:
        policy = pool.settings.checker
        unknown = [r for r in report.rows if r.result.kind is ProbeKind.UNKNOWN]
        for r in report.rows:
            if r.result.kind is not ProbeKind.UNKNOWN:
                schedule.answered(r.key_id)
        if not unknown:
            return
        n = len(report.rows)
        if n >= policy.correlated_min_keys and len(unknown) > policy.correlated_share * n:
            log.warning(
                "pool=%s checker: %d of %d probes could not tell (%s); the upstream looks down; no key changed",
                pool.name, len(unknown), n, unknown[0].result.describe(),
            )
            return
        for r in unknown:
            if not schedule.note_unknown(r.key_id, r.result):
                continue
            await self.store.record_event(
                Event(r.key_id, pool.name, self.clock(), "checker", r.before.value, r.after.value,
                      "probe could not tell", r.result.describe())
            )

    def _log(self, pool: KeyPool, rec: KeyRecord, t: Transition, dry_run: bool) -> None:
        level = logging.INFO if t.to_state in (KeyState.ACTIVE, t.from_state) else logging.WARNING
        log.log(
            level, "%skey state pool=%s key=%s masked=%s %s -> %s reason=%r %s",
            "(dry run) " if dry_run else "", pool.name, rec.id, mask(rec.secret), t.from_state.value,
            t.to_state.value, t.reason, t.detail,
        )
