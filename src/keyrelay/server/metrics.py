"""``GET /metrics``: the Prometheus exposition of a gateway, all workers together.

Cost: nothing here runs per request. The proxy appends one tuple per request to the runtime's
:class:`~keyrelay.runtime.telemetry.Telemetry`; this module sums them every second (and at each scrape)
and builds the exposition only when scraped, through a custom ``prometheus_client`` collector
(no ``Counter.inc()`` per request, and none of the multiprocess mode's mmap writes).

Several workers (``serve --workers N``): the parent makes a directory for the run (removed when
it exits) where each worker leaves its cumulative counts; a scrape lands on one worker, which
asks the others for fresh counts and adds them to its own (server/metrics_share.py). A worker
that died leaves its last counts, so counters never go back. Gauges (keys by state, eligible
keys) are read from the scraping worker's in-memory pools: every worker holds the whole pool,
kept in sync through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from keyrelay.config import MetricsSettings
from keyrelay.core.model import KeyState
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import Runtime
from keyrelay.runtime.telemetry import BUCKETS, Telemetry
from keyrelay.server.admin.auth import Auth
from keyrelay.server.admin.routing import ApiError
from keyrelay.server.auth import Tokens
from keyrelay.server.http import error_response
from keyrelay.server.metrics_share import SharedCounts
from keyrelay.stores import hash_token
from keyrelay.version import __version__

__all__ = ["MetricsEndpoint", "merge", "token_role"]

log = logging.getLogger("keyrelay.metrics")

#: how often a worker writes its counts for the others (seconds)
WRITE_INTERVAL = 1.0

#: a process's counts (telemetry.py ``snapshot``), as read back from JSON
Snapshot = dict[str, list[list[Any]]]

#: name, help, label names of each counter (the snapshot's key → the exposition)
_COUNTERS = {
    "requests": ("keyrelay_requests", "Client requests answered, by pool, final outcome and HTTP status.",
                 ("pool", "outcome", "status")),
    "attempts": ("keyrelay_upstream_attempts", "Upstream attempts (one per key tried), by pool and outcome.",
                 ("pool", "outcome")),
    "tokens": ("keyrelay_tokens", "Tokens used, as reported by the upstream, by pool and kind (prompt, completion).",
               ("pool", "kind")),
    "transitions": ("keyrelay_key_transitions", "Key state transitions written by the gateway (traffic and checker).",
                    ("pool", "from", "to", "reason")),
    "store_errors": ("keyrelay_store_errors", "Store operations that failed (the store was unreachable).",
                     ("operation",)),
    "sweeps": ("keyrelay_checker_sweeps", "Key checker sweeps, by pool and result (done, locked_out, failed).",
               ("pool", "result")),
    "probes": ("keyrelay_checker_probes", "Key checker probe results, by pool and result (ok, exhausted, invalid, unknown).",
               ("pool", "result")),
    "guard_trips": ("keyrelay_guard_trips", "Correlated-failure guard episodes (most of a pool failing at once).",
                    ("pool",)),
    "alerts": ("keyrelay_alerts", "Alert webhooks, by event and result (delivered, failed, dropped).",
               ("event", "result")),
}
_HISTOGRAMS = {
    "duration": ("keyrelay_request_duration_seconds", "Time from a request's arrival to its whole answer (streams: to the end)."),
    "ttfb": ("keyrelay_time_to_first_byte_seconds",
             "Time from a request's arrival to its answer starting (streams: the first event sent)."),
}


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """The sum of several processes' snapshots (counters by labels, histograms bucket-wise)."""
    out: Snapshot = {}
    for name in _COUNTERS:
        sums: dict[tuple[Any, ...], int] = {}
        for snap in snapshots:
            for row in snap.get(name, []):
                key = tuple(row[:-1])
                sums[key] = sums.get(key, 0) + int(row[-1])
        out[name] = [[*k, v] for k, v in sums.items()]
    for name in _HISTOGRAMS:
        hists: dict[str, list[Any]] = {}
        for snap in snapshots:
            for pool, buckets, total, count in snap.get(name, []):
                h = hists.get(pool)
                if h is None:
                    hists[pool] = [pool, list(buckets), total, count]
                else:
                    h[1] = [a + b for a, b in zip(h[1], buckets, strict=True)]
                    h[2] += total
                    h[3] += count
        out[name] = list(hists.values())
    return out


class _Collector(Collector):
    """Turns a merged snapshot and the pools' state into metric families (at scrape time)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.snapshot: Snapshot = {}
        self.workers = 1

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        for key, (name, doc, labels) in _COUNTERS.items():
            fam = CounterMetricFamily(name, doc, labels=labels)
            for row in snap.get(key, []):
                fam.add_metric([str(v) for v in row[:-1]], float(row[-1]))
            yield fam
        bounds = [_le(b) for b in BUCKETS] + ["+Inf"]
        for key, (name, doc) in _HISTOGRAMS.items():
            hist = HistogramMetricFamily(name, doc, labels=("pool",))
            for pool, buckets, total, _count in snap.get(key, []):
                running, cumulative = 0, []
                for le, n in zip(bounds, buckets, strict=True):
                    running += n
                    cumulative.append((le, float(running)))
                hist.add_metric([str(pool)], cumulative, float(total))
            yield hist
        keys = GaugeMetricFamily("keyrelay_keys", "Keys by pool and state (this gateway's view of the store).",
                                 labels=("pool", "state"))
        eligible = GaugeMetricFamily("keyrelay_keys_eligible", "Keys that may take a request now, by pool.",
                                     labels=("pool",))
        for pool in self.runtime.pools.values():
            counts = Counter(map(_STATE, pool.records()))  # counted at C speed: big pools are scraped too
            for state in KeyState:
                keys.add_metric([pool.name, state.value], counts.get(state, 0))
            eligible.add_metric([pool.name], pool.eligible_count())
        yield keys
        yield eligible
        info = GaugeMetricFamily("keyrelay_build_info", "The keyrelay version serving (always 1).", labels=("version",))
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("keyrelay_metrics_workers", "Gateway processes whose counts this scrape adds up.",
                                value=self.workers)


_STATE = attrgetter("state")


def _le(bound: float) -> str:
    return repr(float(bound))


class MetricsEndpoint:
    """The ``/metrics`` route of one gateway process, and its background writer."""

    def __init__(
        self, runtime: Runtime, settings: MetricsSettings, shared_dir: str | None = None, admin_auth: Auth | None = None
    ) -> None:
        assert runtime.telemetry is not None, "[metrics] enabled makes the runtime keep a Telemetry"
        self.runtime = runtime
        self.tokens = Tokens(runtime.store, runtime.settings.tokens)
        runtime.on_sync.append(self.tokens.expire)
        self.telemetry: Telemetry = runtime.telemetry
        self.settings = settings
        #: the admin API's sign-in check (server/admin/auth.py): a bearer admin token or its session
        self.admin_auth = admin_auth
        self.shared_dir = Path(shared_dir) if shared_dir else None
        self._collector = _Collector(runtime)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self._task: asyncio.Task[None] | None = None
        self._shared = SharedCounts(shared_dir, self.telemetry.snapshot) if shared_dir else None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyrelay-metrics")
        if self._shared is not None:
            self._shared.start()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            self.write()  # the last counts of a worker that stops stay in the sums
        except OSError as exc:
            log.warning("metrics: cannot write this worker's last counts: %s", exc.strerror or exc)
        if self._shared is not None:
            self._shared.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WRITE_INTERVAL)
            try:
                self.write()
            except OSError as exc:  # e.g. the directory went away: the scrape of this worker still works
                log.warning("metrics: cannot write this worker's counts: %s", exc.strerror or exc)

    def write(self) -> None:
        """Sum the requests of the last second; with several workers, write them for the others."""
        self.telemetry.fold()
        if self._shared is not None:
            self._shared.write()

    # -- the route --------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "use GET /metrics", code="method_not_allowed", headers={"Allow": "GET, HEAD"})
        if self.settings.require_admin:
            refused = await self._authorize(request)
            if refused is not None:
                return refused
        return web.Response(body=await self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def render(self) -> bytes:
        """The exposition: this process's counts plus, with several workers, the others'."""
        others = await self._shared.others() if self._shared is not None else []
        self._collector.snapshot = merge([self.telemetry.snapshot(), *others])
        self._collector.workers = 1 + len(others)
        return generate_latest(self._registry)

    async def _authorize(self, request: web.BaseRequest) -> web.Response | None:
        if self.admin_auth is not None:  # the admin API's own check, when the gateway serves it
            try:
                await self.admin_auth.caller(request, write=False)
            except ApiError as exc:
                kind = "permission_error" if exc.status == 403 else "invalid_request_error"
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return error_response(exc.status, f"/metrics needs an admin token: {exc.message}", kind, exc.code,
                                      headers=headers)
            except StoreUnavailable:
                return error_response(503, "the key store is unreachable; retry shortly", "server_error",
                                      "store_unavailable", retry_after=1.0)
            return None
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            role = await token_role(self.runtime, token, self.tokens)
        except StoreUnavailable:
            return error_response(503, "the key store is unreachable; retry shortly", "server_error",
                                  "store_unavailable", retry_after=1.0)
        if role == "admin":
            return None
        if role == "client":
            return error_response(403, "/metrics needs an admin token; this is a client token", "permission_error",
                                  "admin_required")
        return error_response(401, "/metrics needs an admin token: send 'Authorization: Bearer <admin token>'",
                              code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def token_role(runtime: Runtime, token: str, tokens: Tokens | None = None) -> str:
    """``admin``, ``client`` or ``unknown``: who sent ``token``.

    An admin token is a token the store holds and marks admin (its record's ``admin`` flag, from
    ``keyrelay tokens create --admin``). Used when the gateway runs without the admin API;
    with it, /metrics asks the admin API's own check (a bearer admin token or its session)."""
    if not token:
        return "unknown"
    h = hash_token(token)
    rec = await runtime.store.find_token(h)
    if rec is not None and not rec.revoked and getattr(rec, "admin", False) and hmac.compare_digest(rec.token_hash, h):
        return "admin"
    tokens = tokens or Tokens(runtime.store, runtime.settings.tokens)
    client = tokens.recognise(token) or await tokens.authenticate(token)
    return "client" if client is not None else "unknown"
