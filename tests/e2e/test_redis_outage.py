"""Redis goes away under load and comes back: the gateway serves on from memory, queues the
state change and the counters it could not write, writes them when Redis is back, and says so
in one line each way."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from keyrelay.core.model import KeyRecord
from keyrelay.stores.base import key_id_for
from keyrelay.stores.redis import RedisStore
from keyrelay.testing.fake_upstream import Behavior

from .conftest import cli, free_port, write_config
from .test_workers import Load, flip, wait_for

GOOD = [f"sk-proj-steady{i}-{'s' * 30}{i:04d}" for i in range(5)]
DOOMED = "sk-proj-doomed-" + "d" * 30 + "D001"


class PrivateRedis:
    """A redis-server of our own, persisting every write (AOF, fsync always) so a restart on
    the same directory keeps everything acknowledged."""

    def __init__(self, port: int, data: Path) -> None:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("CI=true but redis-server is not installed")
            pytest.skip("redis-server is not installed")
        data.mkdir(exist_ok=True)
        self.argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always",
        ]
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_for(lambda: _pings(client), 10, "redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # a clean shutdown; with fsync always the AOF already holds everything
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _record(url: str, key_id: str) -> tuple[KeyRecord | None, list[tuple[str, str]], int]:
    """The key as Redis has it, its (to_state, reason) events, and the requests of every key."""

    async def read() -> tuple[KeyRecord | None, list[tuple[str, str]], int]:
        store = RedisStore(url)
        await store.open()
        try:
            rec = await store.get(key_id)
            events = [(e.to_state, e.reason) for e in await store.events(key_id)]
            total = sum(r.counters.requests for r in await store.load())
            return rec, events, total
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_gateway_rides_out_a_redis_restart_and_loses_nothing(
    tmp_path: Path, upstream_factory: Any, server_factory: Any
) -> None:
    port = free_port()
    server_redis = PrivateRedis(port, tmp_path / "redis")
    server_redis.start()
    try:
        _run(tmp_path, upstream_factory, server_factory, server_redis)
    finally:
        server_redis.stop()


def _run(tmp_path: Path, upstream_factory: Any, server_factory: Any, server_redis: PrivateRedis) -> None:
    up = upstream_factory({**{k: Behavior.OK for k in GOOD}, DOOMED: Behavior.OK})
    gw_port = free_port()
    url = f"redis://127.0.0.1:{server_redis.port}/0?prefix=outage"
    config = write_config(tmp_path, up.url, gw_port)
    text = config.read_text()
    config.write_text(text.replace(text.split("[store]\n")[1].splitlines()[0], f'url = "{url}"'))
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD, DOOMED).returncode == 0
    token = cli(config, "tokens", "create", "outage", "--pool", "openai").stdout.strip().splitlines()[-1]
    server = server_factory(config, gw_port)
    doomed = key_id_for("openai", DOOMED)

    with Load([server.url], token, concurrency=8) as load:
        wait_for(lambda: load.ok >= 200 and up.fake.count(DOOMED) >= 5, 30, "no traffic")
        server_redis.stop()
        down_at, ok_at_loss = time.monotonic(), load.ok
        time.sleep(1.0)
        flipped = flip(up, DOOMED, Behavior.INVALID)  # the key fails while Redis is away
        time.sleep(4.0)
        served_while_down = load.ok - ok_at_loss
        server_redis.start()
        outage = time.monotonic() - down_at
        time.sleep(2.0)  # and on, after Redis is back
    assert load.errors == [], load.errors[:3]
    assert outage < 10
    assert served_while_down > 100, served_while_down
    failed = [c.at for c in up.fake.calls if c.key == DOOMED and c.at >= flipped]
    assert failed and max(failed) - min(failed) < 0.5, "the doomed key was used on after it failed"

    # what was queued while Redis was away is there now: the state change, its event, the counters
    def written() -> bool:
        rec, _, total = _record(url, doomed)
        return rec is not None and rec.state.value == "invalid" and total == len(up.fake.calls)

    wait_for(written, 10, f"not written after the restart: {_record(url, doomed)}, calls={len(up.fake.calls)}")
    rec, events, _ = _record(url, doomed)
    assert rec is not None and rec.reason == "invalid api key"
    assert ("invalid", "invalid api key") in events

    log = server.log.read_text()
    store_lines = [line for line in log.splitlines() if "logger=keyrelay.store" in line]
    assert len(store_lines) == 2, store_lines
    assert " lost " in store_lines[0] and "is back" in store_lines[1]
    assert "Traceback" not in log and "background" not in log, log[-3000:]
