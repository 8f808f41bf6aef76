"""When the upstream is down, the checker learns nothing about the keys and changes nothing."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest

from checker.billing_upstream import Account, BillingUpstream
from checker.helpers import Clock, make_pool
from checker.test_billing_sweep import SIX, six_accounts
from keyrelay.core.machine import ProbeKind
from keyrelay.core.model import KeyState
from keyrelay.runtime.checker import Checker
from keyrelay.stores.memory import MemoryStore


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("probes", [["billing"], ["models"], ["billing", "models"], ["completion"]])
async def test_a_sweep_while_every_probe_gets_a_5xx_changes_no_key(
    upstream: BillingUpstream, session: aiohttp.ClientSession, probes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    six_accounts(upstream)
    upstream.down = True
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, SIX, clock, probes=probes, completion_model="gpt-4o-mini")
    events_before = len(await store.events())

    with caplog.at_level(logging.WARNING, logger="keyrelay"):
        report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert {row.result.kind for row in report.rows} == {ProbeKind.UNKNOWN}
    assert {r.state for r in await store.load()} == {KeyState.ACTIVE}
    assert {r.version for r in await store.load()} == {1}
    assert len(await store.events()) == events_before  # no per-key notes for a pool-wide outage
    outage = [r for r in caplog.records if "upstream looks down" in r.getMessage()]
    assert len(outage) == 1


async def test_a_sweep_against_a_refused_connection_changes_no_key(session: aiohttp.ClientSession) -> None:
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, f"http://127.0.0.1:{closed_port()}/v1", SIX, clock, probes=["billing", "models"])

    report = await Checker(store, [pool], clock=clock).sweep(pool, session)

    assert [row.result.reason for row in report.rows] == ["no probe could tell"] * 6
    assert all("network error" in row.result.message for row in report.rows)
    assert {(r.state, r.version) for r in await store.load()} == {(KeyState.ACTIVE, 1)}


async def test_a_probe_that_hangs_times_out_as_unknown(session: aiohttp.ClientSession) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never answers

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, f"http://127.0.0.1:{port}/v1", ["sk-slow-0000000000000000000001"], clock,
                           probes=["models"], timeout=0.2)
    try:
        report = await Checker(store, [pool], clock=clock).sweep(pool, session)
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()

    assert report.rows[0].result.kind is ProbeKind.UNKNOWN
    assert (await store.load())[0].state is KeyState.ACTIVE


async def test_an_exhausted_key_is_not_revived_by_an_outage_nor_an_invalid_one(
    upstream: BillingUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.accounts["sk-spent-000000000000000000000001"] = Account(hard_limit_usd=1, total_usage_cents=100)
    store, clock = MemoryStore(), Clock()
    pool = await make_pool(store, upstream.base_url, ["sk-spent-000000000000000000000001",
                                                      "sk-unknown-0000000000000000000002"], clock,
                           probes=["billing", "models"])
    checker = Checker(store, [pool], clock=clock)
    await checker.sweep(pool, session)
    before = {r.id: (r.state, r.version) for r in await store.load()}
    assert {s for s, _ in before.values()} == {KeyState.EXHAUSTED, KeyState.INVALID}

    upstream.down = True
    clock.advance(2 * 86400)
    await checker.sweep(pool, session, force=True)

    assert {r.id: (r.state, r.version) for r in await store.load()} == before
