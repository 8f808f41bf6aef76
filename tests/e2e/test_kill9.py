"""kill -9 of the gateway under load, then a restart: nothing acknowledged before the kill is lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import aiohttp

from keyrelay.testing.fake_upstream import Behavior

from .conftest import cli, free_port, write_config

GOOD = [f"sk-good-{i:03d}-{'g' * 30}" for i in range(20)]
BAD = [f"sk-bad-{i:03d}-{'b' * 30}" for i in range(8)]
SPENT = [f"sk-spent-{i:03d}-{'s' * 30}" for i in range(8)]


def snapshot(db: str) -> tuple[dict[str, tuple[str, str, int]], set[tuple[str, str, str, str]]]:
    """What a reader sees committed: key → (state, reason, version), and the events."""
    con = sqlite3.connect(db)
    try:
        keys = {r[0]: (r[1], r[2], r[3]) for r in con.execute("SELECT id, state, reason, version FROM keys")}
        events = {tuple(r) for r in con.execute("SELECT key_id, from_state, to_state, reason FROM events")}
    finally:
        con.close()
    return keys, events


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path, upstream_factory, server_factory):
    up = upstream_factory({**{k: Behavior.OK for k in GOOD}, **{k: Behavior.INVALID for k in BAD},
                           **{k: Behavior.QUOTA for k in SPENT}}, record_calls=False)
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD, *BAD, *SPENT).returncode == 0
    token = cli(config, "tokens", "create", "load", "--pool", "openai").stdout.strip().splitlines()[-1]
    server = server_factory(config, port)
    db = str(tmp_path / "keyrelay.db")

    stop = threading.Event()
    answered = [0]

    async def load() -> None:
        async with aiohttp.ClientSession() as s:
            async def worker() -> None:
                while not stop.is_set():
                    try:
                        async with s.post(f"{server.url}/v1/chat/completions",
                                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                          headers={"Authorization": f"Bearer {token}"}) as r:
                            await r.read()
                            answered[0] += 1
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.01)
            await asyncio.gather(*(worker() for _ in range(16)))

    t = threading.Thread(target=lambda: asyncio.run(load()))
    t.start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            keys, _events = snapshot(db)
            retired = sum(1 for s, _, _ in keys.values() if s != "active")
            if retired >= 6 and answered[0] > 200:
                break
            time.sleep(0.05)
        acked_keys, acked_events = snapshot(db)  # acknowledged: committed and visible to others
        server.kill()
    finally:
        stop.set()
        t.join(30)

    assert len(acked_keys) == len(GOOD) + len(BAD) + len(SPENT)
    server.start()  # restart on the same file
    after_keys, after_events = snapshot(db)
    assert set(after_keys) == set(acked_keys)
    for kid, (state, reason, version) in acked_keys.items():
        now_state, now_reason, now_version = after_keys[kid]
        assert now_version >= version
        if now_version == version:
            assert (now_state, now_reason) == (state, reason)
    assert acked_events <= after_events
    listed = cli(config, "keys", "list", "--json")
    assert listed.returncode == 0
    assert sum(1 for k in json.loads(listed.stdout) if k["state"] in ("invalid", "exhausted")) >= 6
