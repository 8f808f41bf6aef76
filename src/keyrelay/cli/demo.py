"""``keyrelay demo``: the product at work in one command, no API key needed.

Starts a fake OpenAI upstream holding healthy, invalid, deactivated, exhausted, rate-limited and
flaky keys, a gateway on a temporary SQLite store in front of it, sends a burst of traffic
through the gateway (as any OpenAI client would) and shows the pool live.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import click
from aiohttp import web
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from keyrelay.config import parse_settings
from keyrelay.core.machine import effective_state
from keyrelay.core.model import KeyRecord
from keyrelay.runtime.process import Runtime
from keyrelay.server.app import GatewayRunner
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

__all__ = ["demo", "run_demo"]

TOKEN = "kr-demo-token"
DEMO_KEYS: dict[str, Behavior | KeySpec] = {
    "sk-demo-healthy-aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001": Behavior.OK,
    "sk-demo-healthy-bbbbbbbbbbbbbbbbbbbbbbbbbbbb0002": Behavior.OK,
    "sk-demo-healthy-cccccccccccccccccccccccccccc0003": Behavior.OK,
    "sk-demo-healthy-dddddddddddddddddddddddddddd0004": Behavior.OK,
    "sk-demo-healthy-eeeeeeeeeeeeeeeeeeeeeeeeeeee0005": Behavior.OK,
    "sk-demo-invalid-ffffffffffffffffffffffffffff0006": Behavior.INVALID,
    "sk-demo-banned--gggggggggggggggggggggggggggg0007": Behavior.DEACTIVATED,
    "sk-demo-spent---hhhhhhhhhhhhhhhhhhhhhhhhhhhh0008": Behavior.QUOTA,
    "sk-demo-limited-iiiiiiiiiiiiiiiiiiiiiiiiiiii0009": KeySpec(Behavior.RATE_LIMITED, retry_after=4, rate_limit_for=3),
    "sk-demo-flaky---jjjjjjjjjjjjjjjjjjjjjjjjjjjj0010": KeySpec(Behavior.FLAKY, flaky_rate=0.3),
}
ROLE = {
    Behavior.OK: "healthy",
    Behavior.INVALID: "invalid key",
    Behavior.DEACTIVATED: "deactivated account",
    Behavior.QUOTA: "quota spent",
    Behavior.RATE_LIMITED: "rate limited (4 s)",
    Behavior.FLAKY: "flaky (30 % 5xx)",
}
STYLE = {"active": "green", "cooling": "yellow", "exhausted": "magenta", "invalid": "red", "disabled": "dim"}


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def _table(records: list[KeyRecord], roles: dict[str, str], tally: Tally, seconds: float) -> Group:
    now = time.time()
    t = Table(title="keyrelay demo — the pool, live", title_justify="left")
    for col in ("key", "upstream behaves", "state", "reason", "requests", "ok", "failures"):
        t.add_column(col, justify="right" if col in ("requests", "ok", "failures") else "left")
    for r in sorted(records, key=lambda r: r.secret):
        state = effective_state(r, now).value
        c = r.counters
        label = state + (f" ({r.until - now:.0f}s)" if state == "cooling" else "")
        t.add_row(
            r.masked, roles.get(r.id, ""), Text(label, style=STYLE.get(state, "")), r.reason or "",
            str(c.requests), str(c.successes), str(c.requests - c.successes),
        )
    elapsed = time.monotonic() - tally.started
    errs = ", ".join(f"{n}× HTTP {s}" for s, n in sorted(tally.errors.items())) or "none"
    foot = Text(
        f"client side: {tally.sent} requests, {tally.ok} ok, errors: {errs}  —  {elapsed:.0f}/{seconds:.0f}s",
        style="bold",
    )
    return Group(t, foot)


async def _traffic(url: str, tally: Tally, seconds: float, concurrency: int) -> None:
    end = time.monotonic() + seconds
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:

        async def worker(i: int) -> None:
            while time.monotonic() < end:
                stream = i % 2 == 1
                tally.sent += 1
                async with s.post(f"{url}/v1/chat/completions", json={**body, "stream": stream}) as r:
                    await r.read()
                    if r.status == 200:
                        tally.ok += 1
                    else:
                        tally.errors[r.status] = tally.errors.get(r.status, 0) + 1
                await asyncio.sleep(0.15)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def _demo(seconds: float, concurrency: int, console: Console, live: bool) -> Tally:
    fake = FakeUpstream(DEMO_KEYS, latency=0.02)
    base = await fake.start()
    with tempfile.TemporaryDirectory(prefix="keyrelay-demo-") as tmp:
        settings = parse_settings(
            {
                "server": {"sync_interval": 0.25, "flush_interval": 0.25},
                "store": {"url": f"sqlite:///{Path(tmp) / 'demo.db'}"},
                "pools": [{"name": "openai", "base_url": base, "cooling": {"default_cooldown": 5}}],
                "tokens": [{"name": "demo", "pools": ["*"], "token": TOKEN}],
            },
            {},
        )
        runtime = Runtime(settings)
        await runtime.store.open()
        added = await runtime.store.add_keys("openai", list(DEMO_KEYS), time.time())
        roles = {}
        for r in added.added:
            spec = DEMO_KEYS[r.secret]
            roles[r.id] = ROLE[spec.behavior if isinstance(spec, KeySpec) else spec]
        runner = GatewayRunner(runtime)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        console.print(f"gateway on {url} (token {TOKEN}), fake upstream on {base}, store {settings.store_url}")
        tally = Tally()
        traffic = asyncio.ensure_future(_traffic(url, tally, seconds, concurrency))

        async def records() -> list[KeyRecord]:
            return await runtime.store.load("openai")

        try:
            if live:
                with Live(_table(await records(), roles, tally, seconds), console=console, refresh_per_second=4) as lv:
                    while not traffic.done():
                        await asyncio.sleep(0.25)
                        lv.update(_table(await records(), roles, tally, seconds))
            await traffic
            await runtime.flush()
            console.print(_table(await records(), roles, tally, seconds))
            events = [e for e in await runtime.store.events() if e.actor != "admin"]
            console.print(f"\n{len(events)} state changes, e.g.:")
            for e in events[:8]:
                console.print(f"  {e.key_id}  {e.from_state} → {e.to_state}  ({e.detail or e.reason})")
        finally:
            traffic.cancel()
            await runner.cleanup()
            await fake.close()
    return tally


def run_demo(seconds: float = 20.0, concurrency: int = 8, console: Console | None = None) -> Tally:
    console = console or Console()
    logging.getLogger("keyrelay").setLevel(logging.ERROR)  # the table tells the story
    return asyncio.run(_demo(seconds, concurrency, console, live=console.is_terminal))


@click.command()
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(1, 600), help="How long to send traffic.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256), help="Clients in parallel.")
def demo(seconds: float, concurrency: int) -> None:
    """See keyrelay work with no API key: bad keys retire, rate-limited keys rest and come back,
    and every client request still succeeds."""
    tally = run_demo(seconds, concurrency)
    failed = tally.sent - tally.ok
    click.echo(f"\n{tally.ok} of {tally.sent} client requests succeeded" + (f"; {failed} failed" if failed else "."))
