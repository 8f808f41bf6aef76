"""Verify before retiring: the runtime piece that settles a hold.

An auth refusal no classification rule recognises (a bare 403, a 401 with an unknown body) does
not retire a key on one sight: the request fails over at once, the key is held briefly (cooling,
reason ``unverified_auth_failure``) and :class:`Verifier` probes it within about a second with
the pool's ``models`` probe (the dialect's cheapest validity check). The decision is
:func:`keyrelay.core.machine.on_verify`: valid → active again, with an event saying so;
refused → invalid; can't tell → the hold lapses by itself. Held keys were counted by the
correlated-failure guard when they were held, so an upstream refusing everyone cannot empty a
pool this way either.

Runs in every process that serves traffic (gateway workers, library mode), next to the
checker; keys are taken from :attr:`KeyPool.to_verify` (filled under the pool's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import aiohttp

from keyrelay.core.machine import on_verify
from keyrelay.core.masking import mask
from keyrelay.core.model import Transition
from keyrelay.providers.probes import build_probes
from keyrelay.runtime.checker import Checker, run_probe
from keyrelay.runtime.pool import KeyPool

__all__ = ["Verifier"]

log = logging.getLogger("keyrelay.runtime.verify")


class Verifier:
    """Probes held keys of some pools, a few at a time, soon after they were held."""

    def __init__(self, pools: Iterable[KeyPool], *, clock: Callable[[], float] = time.time, tick: float = 0.25) -> None:
        self.pools = list(pools)
        self.clock = clock
        self.tick = tick
        self._running: set[asyncio.Task[Transition | None]] = set()

    async def run(self) -> None:
        """Look for held keys every ``tick`` seconds until cancelled."""
        async with Checker.session(limit=16) as session:
            try:
                while True:
                    await asyncio.sleep(self.tick)
                    for pool in self.pools:
                        if not pool.to_verify:
                            continue
                        for key_id in pool.take_to_verify():
                            task = asyncio.create_task(self.verify(pool, key_id, session))
                            self._running.add(task)
                            task.add_done_callback(self._running.discard)
            finally:
                for task in list(self._running):
                    task.cancel()
                for task in list(self._running):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def verify(self, pool: KeyPool, key_id: str, session: aiohttp.ClientSession) -> Transition | None:
        """Probe one held key and write what the probe decided (``None``: nothing changed)."""
        rec = pool.state.get(key_id)
        if rec is None:
            return None
        policy = pool.settings.checker
        with pool.lock:  # where its failed request went (library mode), else the key's or the pool's
            hint = pool.verify_base.pop(key_id, None)
        if hint == "":
            return None  # its request went to a URL with no API root to ask: the hold lapses
        base_url = hint or getattr(rec, "base_url", None) or pool.settings.base_url
        (probe,) = build_probes(policy, base_url, pool.dialect, ("models",))
        try:
            result = await run_probe(session, probe, rec.secret, self.clock(), policy.timeout)
        except Exception as exc:  # noqa: BLE001 - a probe that breaks leaves the hold to lapse
            log.warning("pool=%s key=%s verification probe failed: %s", pool.name, key_id, type(exc).__name__)
            return None
        if pool.telemetry is not None:
            pool.telemetry.probe(pool.name, result.kind.value)
        for _ in range(5):
            with pool.lock:
                cur = pool.state.get(key_id)
                t = None if cur is None else on_verify(cur, result, pool.settings.cooling, self.clock())
            if t is None or cur is None:
                return None
            try:
                new = await pool.store.apply(t)
            except Exception as exc:  # noqa: BLE001 - the store is down: the hold lapses by itself
                log.warning("pool=%s key=%s verification not written: %s", pool.name, key_id, type(exc).__name__)
                return None
            if new is not None:
                pool.upsert(new)
                if pool.telemetry is not None:
                    pool.telemetry.transition(t, new)
                log.log(
                    logging.INFO if new.state.value == "active" else logging.WARNING,
                    "key state pool=%s key=%s masked=%s %s -> %s reason=%r %s",
                    pool.name, key_id, mask(rec.secret), t.from_state.value, t.to_state.value, t.reason, t.detail,
                )
                return t
            stored = await pool.store.get(key_id)
            if stored is None:
                pool.remove(key_id)
                return None
            if stored.version < cur.version:  # the hold itself is still being written: wait for it
                await asyncio.sleep(0.2)
                continue
            with pool.lock:  # another writer moved the key: decide again on what it wrote
                pool.state.upsert(stored, force=True)
        return None
