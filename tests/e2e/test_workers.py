"""`keyrelay serve --workers 2` on the SQLite store: the workers share what they learn about keys,
SIGTERM stops them all, a dead worker is replaced and the workers die with their parent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import openai

from keyrelay.testing.fake_upstream import Behavior, KeySpec

from .conftest import ThreadedUpstream, cli, free_port, write_config

GOOD = [f"sk-proj-good{i}-{'g' * 30}{i:04d}" for i in range(6)]
BAD = "sk-proj-goesbad-" + "b" * 30 + "B001"


class Load:
    """The official SDK sending chat completions from a thread until stopped, spread over
    ``urls`` (each coroutine keeps to one), ``concurrency`` at a time."""

    def __init__(self, urls: list[str], token: str, concurrency: int = 16) -> None:
        self.urls, self.token, self.concurrency = urls, token, concurrency
        self.ok = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        clients = [openai.AsyncOpenAI(base_url=f"{u}/v1", api_key=self.token, max_retries=0) for u in self.urls]

        async def worker(i: int) -> None:
            client = clients[i % len(clients)]
            while not self._stop.is_set():
                try:
                    r = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                    )
                    assert r.choices[0].message.content
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001 - every error is a failure of the test
                    self.errors.append(exc)
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(i) for i in range(self.concurrency)))
        for c in clients:
            await c.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def flip(up: ThreadedUpstream, key: str, spec: Behavior | KeySpec) -> float:
    """Change a key's behaviour in the upstream's own loop; the monotonic time it took effect
    (every call the upstream records at or after it got the new behaviour)."""

    async def do() -> float:
        up.fake.set(key, spec)
        return time.monotonic()

    return asyncio.run_coroutine_threadsafe(do(), up.loop).result(5)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_workers(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(config), *extra],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    wait_for(lambda: "workers serving" in log.read_text() or proc.poll() is not None, 30, "workers did not start")
    assert proc.poll() is None, log.read_text()
    return proc


def test_a_key_retired_through_one_worker_is_not_used_through_the_other(
    tmp_path: Path, upstream_factory: Any, server_factory: Any
) -> None:
    up = upstream_factory({**{k: Behavior.OK for k in GOOD}, BAD: Behavior.OK})
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    config.write_text(config.read_text().replace("[store]", "workers = 2\n[store]"))  # the [server] setting
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD, BAD).returncode == 0
    token = cli(config, "tokens", "create", "w", "--pool", "openai").stdout.strip().splitlines()[-1]
    server = server_factory(config, port)
    # /healthz answers once one worker listens; the client's connections are kept alive, so
    # wait for both before making them
    wait_for(lambda: "2 workers serving" in server.log.read_text(), 30, "the workers did not start")

    with Load([server.url], token, concurrency=16) as load:
        wait_for(lambda: up.fake.count(BAD) >= 20 and load.ok >= 300, 30, "no traffic")
        flipped = flip(up, BAD, Behavior.INVALID)
        time.sleep(2.5)  # traffic goes on well beyond the workers' sync interval (0.2 s)
    assert load.errors == [], load.errors[:3]

    failed = [c.at for c in up.fake.calls if c.key == BAD and c.at >= flipped]
    assert failed, "the bad key was not tried after it went bad"
    first = min(failed)
    # the other worker learns through the SQLite change feed (0.2 s poll): calls to the key that
    # started later than that are bugs; a few in flight on both workers meanwhile are expected
    assert max(failed) - first < 1.0, [round(t - first, 3) for t in failed]
    assert len(failed) <= 2 * 16
    later = [c for c in up.fake.calls if c.at > first + 1.0]
    assert len(later) > 100, "the traffic did not go on after the retirement"

    # both workers served traffic (the access lines carry the worker's pid), before and after
    log = server.log.read_text()
    pids = {m for m in re.findall(r"logger=keyrelay\.access .*status=200 .* pid=(\d+)", log)}
    assert len(pids) == 2, pids
    assert server.proc is not None and children_of(server.proc.pid) == {int(p) for p in pids}

    # the store: the key retired (once, whichever worker got there first), counters summed
    wait_for(lambda: _listed(config)[1] == len(up.fake.calls), 5, "counters of both workers not summed")
    states, _ = _listed(config)
    assert states[BAD[-4:]] == "invalid" and all(states[k[-4:]] == "active" for k in GOOD)


def _listed(config: Path) -> tuple[dict[str, str], int]:
    out = cli(config, "keys", "list", "--json")
    assert out.returncode == 0, out.stderr
    keys = json.loads(out.stdout)
    return {k["masked"][-4:]: k["state"] for k in keys}, sum(k["counters"]["requests"] for k in keys)


def test_sigterm_stops_the_parent_and_every_worker(tmp_path: Path, upstream_factory: Any) -> None:
    up = upstream_factory({k: Behavior.OK for k in GOOD})
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD).returncode == 0
    token = cli(config, "tokens", "create", "w", "--pool", "openai").stdout.strip().splitlines()[-1]
    log = tmp_path / "gateway.log"
    proc = start_workers(config, log, "--workers", "2")
    try:
        kids = children_of(proc.pid)
        assert len(kids) == 2
        with Load([f"http://127.0.0.1:{port}"], token, concurrency=8) as load:
            wait_for(lambda: load.ok >= 200, 30, "no traffic")
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            # in-flight requests finish; none waits for a body aiohttp stopped reading (its 60 s timeout)
            assert time.monotonic() - asked < 5
        assert not any(alive(k) for k in kids), "orphaned workers"
        assert not healthy(f"http://127.0.0.1:{port}")
        text = log.read_text()
        assert text.count("stopped (exit code 0)") == 2, text
        # what the workers counted before they stopped is in the store
        assert _listed(config)[1] == len(up.fake.calls)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_dead_worker_is_replaced_and_the_workers_die_with_the_parent(tmp_path: Path, upstream_factory: Any) -> None:
    up = upstream_factory({k: Behavior.OK for k in GOOD})
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD).returncode == 0
    log = tmp_path / "gateway.log"
    proc = start_workers(config, log, "--workers", "2")
    kids: set[int] = set()
    try:
        kids = children_of(proc.pid)
        victim = min(kids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children_of(proc.pid) - {victim}) == 2, 10, "the dead worker was not replaced")
        kids = children_of(proc.pid)
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 10, "not serving after the restart")
        assert f"(pid={victim}) died unexpectedly (signal SIGKILL)" in log.read_text()

        proc.kill()  # no chance to pass anything on: the workers must notice by themselves
        proc.wait(5)
        wait_for(lambda: not any(alive(k) for k in kids), 10, "workers outlived their parent")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for k in kids:
            if alive(k):
                os.kill(k, signal.SIGKILL)
