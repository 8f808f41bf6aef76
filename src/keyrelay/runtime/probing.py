"""What the key checker (:mod:`keyrelay.runtime.checker`) does with one probe and reports of a
sweep: :func:`run_probe` drives a probe's sans-I/O flow (:mod:`keyrelay.providers.probes`) over
aiohttp — network errors and timeouts are *unknown*, and the key is scrubbed from whatever the
upstream echoed — and :class:`SweepReport` / :class:`CheckRow` are what a sweep did, per key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import aiohttp

from keyrelay.core.machine import ProbeKind, ProbeResult
from keyrelay.core.model import KeyState, Transition
from keyrelay.providers.base import rebase_url
from keyrelay.providers.probes import Probe, ProbeRequest, ProbeResponse
from keyrelay.stores.evidence import scrub_result

__all__ = ["CheckRow", "SweepReport", "run_probe"]

_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class CheckRow:
    """What one sweep did to one key."""

    key_id: str
    pool: str
    masked: str
    before: KeyState
    after: KeyState
    result: ProbeResult
    transition: Transition | None = None  # decided (written unless a dry run)
    correlated: bool = False  # a take-out the correlated-failure guard refused

    @property
    def changed(self) -> bool:
        return self.before is not self.after


@dataclass(slots=True)
class SweepReport:
    pool: str
    started: float
    finished: float = 0.0
    rows: list[CheckRow] = field(default_factory=list)
    locked_out: bool = False  # another gateway holds the pool's sweep lock
    dry_run: bool = False

    @property
    def changed(self) -> list[CheckRow]:
        """Rows whose key changed state (or would have, in a dry run)."""
        return [r for r in self.rows if r.changed]

    @property
    def unknown(self) -> int:
        return sum(r.result.kind is ProbeKind.UNKNOWN for r in self.rows)


async def run_probe(
    session: aiohttp.ClientSession,
    probe: Probe,
    secret: str,
    now: float,
    timeout: float,
    rebase: tuple[str, str | None] = ("", None),
) -> ProbeResult:
    """Drive one probe's flow over HTTP. Network errors and timeouts are *unknown*. ``rebase``:
    (the pool's base URL, the key's own) when the key has one: its probes go there."""
    flow = probe.flow(secret, now)
    try:
        req = next(flow)
        while True:
            try:
                if rebase[1]:
                    req = replace(req, url=rebase_url(req.url, rebase[0], rebase[1]))
                resp = await _send(session, req, timeout)
            except _NETWORK_ERRORS as exc:
                flow.close()
                return ProbeResult(ProbeKind.UNKNOWN, probe.name, "network error", message=type(exc).__name__)
            req = flow.send(resp)
    except StopIteration as stop:
        result: ProbeResult = stop.value
        return scrub_result(result, [secret])  # an upstream may echo the key: events, logs and `check` never show it


async def _send(session: aiohttp.ClientSession, req: ProbeRequest, timeout: float) -> ProbeResponse:
    async with session.request(
        req.method, req.url, headers=dict(req.headers), data=req.body, timeout=aiohttp.ClientTimeout(total=timeout),
        allow_redirects=False,
    ) as resp:
        body = await resp.content.read(_MAX_BODY)
        return ProbeResponse(resp.status, body, {k.lower(): v for k, v in resp.headers.items()})
