"""End-to-end fixtures: a fake upstream in a thread, and `keyrelay serve` as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec


class ThreadedUpstream:
    """A FakeUpstream running on its own event loop in a background thread."""

    def __init__(self, keys: dict[str, Behavior | KeySpec], **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = asyncio.run_coroutine_threadsafe(self._make(keys, kw), self.loop).result(10)
        self.url = self.fake.url

    async def _make(self, keys: dict[str, Behavior | KeySpec], kw: dict[str, Any]) -> FakeUpstream:
        fake = FakeUpstream(keys, **kw)
        await fake.start()
        return fake

    def set(self, key: str, spec: Behavior | KeySpec) -> None:
        self.loop.call_soon_threadsafe(self.fake.set, key, spec)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyrelay.cli.main", *args, "--config", str(config)],
        check=False, capture_output=True, text=True, input=input, timeout=120,
    )


class Server:
    """`keyrelay serve` in a child process, its output in a file."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 -- handed to the server process, closed at stop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(self.config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()
        import urllib.request

        end = time.time() + 20
        while time.time() < end:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_config(tmp: Path, upstream: str, port: int, **pool: Any) -> Path:
    extra = "".join(f"{k} = {v!r}\n" if not isinstance(v, str) else f'{k} = "{v}"\n' for k, v in pool.items())
    conf = tmp / "keyrelay.toml"
    conf.write_text(
        f'[server]\nport = {port}\nsync_interval = 0.2\nflush_interval = 0.2\n'
        f'[store]\nurl = "sqlite:///{tmp}/keyrelay.db"\n'
        f'[[pools]]\nname = "openai"\nbase_url = "{upstream}"\n{extra}'
    )
    return conf


@pytest.fixture
def upstream_factory() -> Iterator[Any]:
    made: list[ThreadedUpstream] = []

    def make(keys: dict[str, Behavior | KeySpec], **kw: Any) -> ThreadedUpstream:
        u = ThreadedUpstream(keys, **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Server] = []

    def make(config: Path, port: int) -> Server:
        s = Server(config, port, tmp_path / "gateway.log")
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()
