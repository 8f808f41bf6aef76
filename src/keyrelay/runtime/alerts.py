"""``[[alerts]]``: webhooks told when a key is retired, a pool runs low, or the
correlated-failure guard trips.

Nothing here runs on the request path. Traffic and the checker leave :class:`AlertEvent` s in
the runtime's :class:`~keyrelay.runtime.telemetry.Telemetry` (a bounded deque: appending never waits);
:class:`Alerts`, one background task per runtime, picks them up four times a second, looks at
each pool's eligible keys for ``pool_low``, and hands each event to the webhooks that want it.
Each webhook has its own bounded queue and its own delivery task, so a webhook that hangs or
fails holds up neither traffic nor the other webhooks: it is tried with a ``timeout`` per
attempt, ``retries`` more times after 1, 2, 4 … seconds (at most 60), then given up with one log
line; when its queue is full, new events for it are dropped (``keyrelay_alerts_total{result=
"dropped"}``).

A body holds the key's id and masked form (``sk-…AbCd``), never the key, and a log line names
the webhook by scheme and host only (a Slack webhook's path is its secret).

Several gateways or workers: a key is retired by one store write, so one process sends its
``key_retired``. ``pool_low`` and ``guard_tripped`` are seen by every process; the first to take
a store lock (``alert:<event>:<pool>``, held for a minute) sends it, the others stay quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import aiohttp
import orjson

from keyrelay.config import AlertSettings, Settings
from keyrelay.config_ops import safe_url
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.telemetry import AlertEvent, Telemetry
from keyrelay.stores.base import Store
from keyrelay.version import __version__

__all__ = ["Alerts", "body_of"]

log = logging.getLogger("keyrelay.runtime.alerts")

TICK = 0.25  # seconds between looks at new events and at the pools
QUEUE = 100  # events waiting per webhook, at most
BACKOFF = (1.0, 60.0)  # first and longest wait between delivery attempts
QUIET = 60.0  # seconds: one pool_low / guard_tripped per pool (and webhook) at most this often
_RETRY_STATUS = frozenset({408, 425, 429})


def body_of(settings: AlertSettings, event: AlertEvent, host: str = "") -> bytes:
    """What a webhook receives: Slack's ``{"text": …}`` or the generic JSON object."""
    if settings.kind == "slack":
        return orjson.dumps({"text": event.text})
    at = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return orjson.dumps({
        "source": "keyrelay", "version": __version__, "host": host,
        "event": event.kind, "pool": event.pool, "at": at, "text": event.text, **event.fields,
    })


class _Webhook:
    """One ``[[alerts]]`` table: its queue and its delivery task."""

    def __init__(self, settings: AlertSettings, telemetry: Telemetry, host: str) -> None:
        self.settings, self.telemetry, self.host = settings, telemetry, host
        self.queue: asyncio.Queue[AlertEvent] = asyncio.Queue(QUEUE)
        self.where = safe_url(settings.url)
        self.low: dict[str, bool] = {}  # pool → below the threshold at the last look
        self.quiet_until: dict[tuple[str, str], float] = {}

    def wants(self, event: AlertEvent) -> bool:
        return event.kind in self.settings.on and (not self.settings.pools or event.pool in self.settings.pools)

    def offer(self, event: AlertEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.telemetry.alert(event.kind, "dropped")

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            event = await self.queue.get()
            ok = await self.deliver(session, event)
            self.telemetry.alert(event.kind, "delivered" if ok else "failed")

    async def deliver(self, session: aiohttp.ClientSession, event: AlertEvent) -> bool:
        s = self.settings
        body = body_of(s, event, self.host)
        timeout = aiohttp.ClientTimeout(total=s.timeout)
        delay = BACKOFF[0]
        why = ""
        for attempt in range(s.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
            try:
                async with session.post(
                    s.url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    why = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in _RETRY_STATUS:
                        break  # the webhook refuses this body: sending it again will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = type(exc).__name__
        log.warning("alert %s for pool=%s not delivered to %s (%s, %d attempts); dropped",
                    event.kind, event.pool, self.where, why, attempt + 1)
        return False


class Alerts:
    """The alert dispatcher of one runtime (started by :meth:`Runtime.start` when there are
    ``[[alerts]]``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        pools: Mapping[str, KeyPool],
        telemetry: Telemetry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.pools, self.telemetry, self.clock = store, pools, telemetry, clock
        host = socket.gethostname()
        self.hooks = [_Webhook(a, telemetry, host) for a in settings.alerts]
        self.owner = f"{host}:{os.getpid()}:{id(self):x}"

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=max(10, 2 * len(self.hooks)))
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
            tasks = [asyncio.create_task(h.run(session), name="keyrelay-alert-webhook") for h in self.hooks]
            try:
                while True:
                    await asyncio.sleep(TICK)
                    await self.tick()
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    async def tick(self) -> None:
        """Hand new events to the webhooks; look for pools running low."""
        events = self.telemetry.events
        while events:
            event = events.popleft()
            hooks = [h for h in self.hooks if h.wants(event)]
            if hooks and (event.kind != "guard_tripped" or await self._first(event, hooks)):
                for h in hooks:
                    h.offer(event)
        now = self.clock()
        for h in self.hooks:
            if "pool_low" not in h.settings.on:
                continue
            for name, pool in self.pools.items():
                if h.settings.pools and name not in h.settings.pools:
                    continue
                eligible = pool.eligible_count()
                low = eligible < h.settings.threshold
                was = h.low.get(name, False)
                h.low[name] = low
                if low and not was:
                    event = AlertEvent(
                        "pool_low", name, now,
                        f"keyrelay: pool {name} has {eligible} eligible key(s), fewer than {h.settings.threshold}",
                        {"eligible": eligible, "threshold": h.settings.threshold},
                    )
                    if await self._first(event, [h]):
                        h.offer(event)

    async def _first(self, event: AlertEvent, hooks: list[_Webhook]) -> bool:
        """Should this process send ``event`` (a pool-level one every gateway may see)? Not again
        within :data:`QUIET` seconds, and only if no other process already did (a store lock)."""
        now = time.monotonic()
        key = (event.kind, event.pool)
        if all(h.quiet_until.get(key, 0.0) > now for h in hooks):
            return False
        for h in hooks:
            h.quiet_until[key] = now + QUIET
        try:
            return await self.store.try_lock(f"alert:{event.kind}:{event.pool}", self.owner, QUIET, self.clock())
        except Exception:  # noqa: BLE001 - the store is down: better twice than never
            return True
