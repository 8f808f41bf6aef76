"""What only the Redis store promises: shared by processes, atomic under races, scripts that
survive a SCRIPT FLUSH, prefixes that isolate, instant change notices, clear unavailability."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import redis.asyncio as aioredis

from keyrelay.config import PoolSettings, ServerSettings, Settings
from keyrelay.core.machine import on_admin, on_outcome
from keyrelay.core.model import Counters, Event, KeyRecord, KeyState, Outcome, Transition, Verdict
from keyrelay.core.policy import CoolingPolicy
from keyrelay.exceptions import StoreUnavailable
from keyrelay.runtime.process import Runtime
from keyrelay.stores import open_store
from keyrelay.stores.base import Changes, hash_token
from keyrelay.stores.crypto import SecretSource, new_secret
from keyrelay.stores.redis import RedisStore
from keyrelay.stores.redis_scripts import LUA

from .conftest import REDIS_URL

NOW = 1_700_000_000.0
UrlFactory = Callable[[], str]


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def cool(rec: KeyRecord, at: float, until: float) -> Transition:
    return Transition(rec.id, rec.pool, rec.version, rec.state, KeyState.COOLING, "rate limited", at, until)


# -- scripts ----------------------------------------------------------------------------------


async def test_scripts_are_loaded_again_after_a_script_flush(new_redis_url: UrlFactory) -> None:
    raw = aioredis.from_url(REDIS_URL)
    sha = hashlib.sha1(LUA["apply"].encode()).hexdigest()
    try:
        async with opened(new_redis_url()) as store:
            (rec,) = (await store.add_keys("openai", ["sk-flush"], NOW)).added
            first = await store.apply(cool(rec, NOW + 1, NOW + 60))
            assert first is not None and await raw.script_exists(sha) == [True]

            await raw.script_flush()
            assert await raw.script_exists(sha) == [False]

            second = await store.apply(cool(first, NOW + 2, NOW + 120))  # EVALSHA → NOSCRIPT → load → run
            assert second is not None and (second.version, second.until) == (3, NOW + 120)
            assert await raw.script_exists(sha) == [True]

            await raw.script_flush()  # scripts sent in a pipeline are loaded before it runs
            added = await store.add_keys("openai", ["sk-flush-2"], NOW)
            await store.add_counters({rec.id: Counters(requests=2)})
            got = await store.get(rec.id)
            assert len(added.added) == 1 and got is not None and got.counters.requests == 2
    finally:
        await raw.aclose()


# -- prefixes and URLs ------------------------------------------------------------------------


async def test_two_prefixes_on_one_database_do_not_see_each_other(new_redis_url: UrlFactory) -> None:
    url_a, url_b = new_redis_url(), new_redis_url()
    async with opened(url_a) as a, opened(url_b) as b:
        (rec,) = (await a.add_keys("openai", ["sk-same"], NOW)).added
        await a.apply(cool(rec, NOW + 1, NOW + 60))
        await a.record_event(Event(rec.id, "openai", NOW + 2, "probe", "cooling", "cooling", "probe"))
        await a.create_token("ci", ["openai"], hash_token("kr-1"), NOW)

        assert await b.load() == [] and await b.get(rec.id) is None
        assert await b.events() == [] and await b.events(rec.id) == []
        assert await b.list_tokens() == [] and await b.find_token(hash_token("kr-1")) is None
        assert await b.changes(0) == Changes(0)
        assert [r.id for r in (await b.add_keys("openai", ["sk-same"], NOW)).added] == [rec.id]
        await b.create_token("ci", ["openai"], hash_token("kr-2"), NOW)  # the name is free there

        again = await a.get(rec.id)
        assert again is not None and again.state is KeyState.COOLING and again.version == 2
        raw = aioredis.from_url(REDIS_URL, decode_responses=True)
        try:
            mine = [k async for k in raw.scan_iter(match=f"{a.names.prefix}:*")]
        finally:
            await raw.aclose()
        assert mine and all(k.startswith(a.names.prefix + ":") for k in mine)
        assert not any(k.startswith(b.names.prefix) for k in mine)


def test_the_prefix_comes_out_of_the_url_and_the_password_never_shows() -> None:
    store = RedisStore("redis://user:hunter2@cache.internal:6380/2?prefix=team-a:kr&socket_timeout=3")
    assert store.names.prefix == "team-a:kr" and store.names.key("k1") == "team-a:kr:key:k1"
    assert store.where == "cache.internal:6380"
    assert RedisStore("redis://localhost").names.prefix == "keyrelay"
    assert RedisStore("unix:///run/redis.sock?db=1").where == "/run/redis.sock"
    assert isinstance(open_store("rediss://example.com:6380/0?prefix=x"), RedisStore)
    for bad in ("redis://h/0?prefix=", "redis://h/0?prefix=a b", "redis://h/0?prefix=a*"):
        with pytest.raises(ValueError, match="prefix"):
            RedisStore(bad)


async def test_a_closed_port_is_store_unavailable_quickly_without_credentials() -> None:
    store = RedisStore("redis://user:hunter2@127.0.0.1:1/0")
    started = time.perf_counter()

    with pytest.raises(StoreUnavailable) as info:
        await store.open()

    assert time.perf_counter() - started < 1.5
    assert str(info.value) == "redis unreachable at 127.0.0.1:1"
    assert "hunter2" not in str(info.value) and "hunter2" not in str(info.value.__cause__)
    with pytest.raises(RuntimeError, match="not open"):
        await store.load()


async def test_the_event_lists_are_capped(new_redis_url: UrlFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keyrelay.stores.redis.MAX_KEY_EVENTS", 5)
    monkeypatch.setattr("keyrelay.stores.redis.MAX_EVENTS", 8)
    async with opened(new_redis_url()) as store:
        (rec,) = (await store.add_keys("openai", ["sk-cap"], NOW)).added
        for i in range(10):
            await store.record_event(Event(rec.id, "openai", NOW + i, "probe", "active", "active", f"probe {i}"))

        assert [e.reason for e in await store.events(rec.id, limit=0)] == [f"probe {i}" for i in range(5, 10)]
        assert [e.seq for e in await store.events(limit=0)] == list(range(4, 12))


async def test_a_hundred_thousand_keys_import_in_one_call(new_redis_url: UrlFactory) -> None:
    secrets = [f"sk-bulk-{i:06d}" for i in range(100_000)]
    async with opened(new_redis_url()) as store:
        started = time.perf_counter()
        result = await store.add_keys("bulk", secrets, NOW)
        added_in = time.perf_counter() - started
        loaded = await store.load("bulk")
        loaded_in = time.perf_counter() - started - added_in

        assert added_in < 8 and loaded_in < 8, (added_in, loaded_in)
        assert len(result.added) == 100_000 and result.duplicates == ()
        assert [r.secret for r in loaded] == secrets  # in the order added
        assert len(await store.events(limit=0)) == 100_000
        again = await store.add_keys("bulk", [*secrets[:1000], "sk-bulk-new"], NOW)
        assert len(again.duplicates) == 1000 and [r.secret for r in again.added] == ["sk-bulk-new"]


# -- races ------------------------------------------------------------------------------------

_OUTCOMES = [Outcome.OK, Outcome.RATE_LIMITED, Outcome.RATE_LIMITED, Outcome.QUOTA_EXHAUSTED, Outcome.INVALID_KEY]


def decide(rec: KeyRecord, rng: random.Random, now: float) -> Transition:
    """What a gateway would write after a random answer; a person steps in when traffic can't."""
    outcome = rng.choice(_OUTCOMES)
    verdict = Verdict(outcome, 429, retry_after=rng.uniform(0.0, 3.0) if outcome is Outcome.RATE_LIMITED else None)
    t = on_outcome(rec, verdict, rec.version, CoolingPolicy(), now)
    if t is None:
        t = on_admin(rec, "disable" if rec.state is KeyState.ACTIVE else "enable", now)
    assert t is not None
    return t


async def test_two_instances_racing_a_thousand_transitions_on_one_key_stay_consistent(
    new_redis_url: UrlFactory,
) -> None:
    url = new_redis_url()
    rng, ticks = random.Random(7), itertools.count()
    applied: list[KeyRecord] = []
    conflicts = 0

    async def gateway(store: RedisStore, key_id: str, n: int) -> None:
        nonlocal conflicts
        for _ in range(n):
            while True:  # read, decide, write; on a conflict read again and decide again
                current = await store.get(key_id)
                assert current is not None
                new = await store.apply(decide(current, rng, NOW + next(ticks) * 0.05))
                if new is not None:
                    applied.append(new)
                    break
                conflicts += 1

    async with opened(url) as a, opened(url) as b:
        (rec,) = (await a.add_keys("openai", ["sk-race"], NOW)).added
        await asyncio.gather(gateway(a, rec.id, 500), gateway(b, rec.id, 500))
        final = await b.get(rec.id)
        events = [e for e in await a.events(limit=0) if e.key_id == rec.id]

    assert final is not None and conflicts > 0
    history = sorted(applied, key=lambda r: r.version)
    assert [r.version for r in history] == list(range(2, 1002))  # every version written once
    assert final == history[-1]
    transitions = events[1:]
    # one event per transition, except that re-coolings within COALESCE_WINDOW share one
    assert events[0].reason == "added" and len(transitions) <= final.version - 1
    state = "active"
    for ev in transitions:  # Redis order is version order: the chain of states holds
        assert ev.from_state == state
        state = ev.to_state
    assert state == final.state.value
    chain = [(a.state.value, b.state.value) for a, b in itertools.pairwise([rec, *history])]
    recooling = ("cooling", "cooling")
    assert [c for c in chain if c != recooling] == [(e.from_state, e.to_state) for e in transitions
                                                    if (e.from_state, e.to_state) != recooling]
    for before, after in itertools.pairwise(history):
        if before.state is after.state is KeyState.COOLING:
            assert after.until >= before.until  # a cooldown is never shortened
            assert after.since == before.since


# -- change notices ---------------------------------------------------------------------------


class Notices:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


async def test_a_change_through_one_instance_is_noticed_by_the_watch_of_another(new_redis_url: UrlFactory) -> None:
    url = new_redis_url()
    async with opened(url) as a, opened(url) as b:
        (rec,) = (await a.add_keys("openai", ["sk-watch"], NOW)).added
        notices = Notices()
        watching = asyncio.create_task(b.watch(notices))
        try:
            await notices.next()  # called once subscribed (anything may have happened before)

            await a.apply(cool(rec, NOW + 1, NOW + 60))
            await notices.next(timeout=2.0)

            await b.remove(rec.id, NOW + 2)  # b's own change: no notice to itself
            await a.add_keys("openai", ["sk-other"], NOW)
            await notices.next(timeout=2.0)
            assert notices.count == 3  # subscribed, apply, add: not b's own removal
        finally:
            watching.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watching


async def test_a_runtime_on_another_instance_sees_a_retired_key_within_milliseconds(
    new_redis_url: UrlFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = new_redis_url()
    settings = Settings(ServerSettings(sync_interval=60.0), url, (PoolSettings("openai", default=True),))
    async with opened(url) as a:
        (rec,) = (await a.add_keys("openai", ["sk-latency"], NOW)).added
        runtime = Runtime(settings, RedisStore(url))
        await runtime.start()
        latencies: list[float] = []
        try:
            await asyncio.sleep(0.2)  # the watch task subscribes
            for _ in range(60):
                current = await a.get(rec.id)
                assert current is not None
                action = "disable" if current.state is KeyState.ACTIVE else "enable"
                t = on_admin(current, action, time.time())
                assert t is not None
                started = time.perf_counter()
                new = await a.apply(t)
                assert new is not None
                while (seen := runtime.pools["openai"].state.get(rec.id)) is None or seen.version < new.version:
                    assert time.perf_counter() - started < 5, "not propagated"
                    await asyncio.sleep(0.0005)
                latencies.append(time.perf_counter() - started)
                assert seen.state is new.state
        finally:
            await runtime.stop()
    median, worst = statistics.median(latencies), max(latencies)
    with capsys.disabled():
        print(f"\nredis propagation store A → runtime on store B: median {median * 1000:.2f} ms, "
              f"max {worst * 1000:.2f} ms over {len(latencies)} transitions")
    assert median < 0.1


# -- a private server, to lose it ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    server = shutil.which("redis-server") or shutil.which("valkey-server")
    if server is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but redis-server is not installed (this test starts and stops its own)")
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_lost_server_is_unavailable_and_the_watch_reconnects_logging_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="keyrelay.store")
    port = _free_port()
    notices = Notices()
    with private_redis(port):
        store = RedisStore(f"redis://127.0.0.1:{port}/0", SecretSource(new_secret()))  # no key file: no log line
        await store.open()
        (rec,) = (await store.add_keys("openai", ["sk-lost"], NOW)).added
        watching = asyncio.create_task(store.watch(notices))
        await notices.next()
    try:
        with pytest.raises(StoreUnavailable, match=f"redis unreachable at 127.0.0.1:{port}"):
            await store.get(rec.id)
        await asyncio.sleep(1.0)  # several reconnect attempts fail meanwhile
        with private_redis(port):
            await notices.next(timeout=10)  # re-subscribed: told to sync, as notices may be lost
            assert await store.get(rec.id) is None  # a fresh, empty server
            lines = [r.getMessage() for r in caplog.records if r.name == "keyrelay.store"]
            assert len(lines) == 2, lines
            assert "lost" in lines[0] and "is back" in lines[1]
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
        await store.close()
