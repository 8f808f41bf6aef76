"""How the workers of ``serve --workers N`` share their counts for ``/metrics``.

The parent makes one directory for the run (removed when it exits). In it, each worker keeps

- ``<pid>.json``: its cumulative counts (telemetry.py ``snapshot``), rewritten every second and
  when it stops (to a temporary name, then renamed: a reader never sees half a file). A worker
  that died leaves its file, so the sums never go back when it is replaced;
- a Unix datagram socket named after its file (Linux: in the abstract namespace, so no path
  length limit and nothing left behind; elsewhere ``<name>.sock`` in the directory). A scrape
  lands on one worker, which sends every other worker a number (the time in ns); each writes its
  file at once with that number in it, and the scraping worker waits (up to :data:`POKE_WAIT`)
  until every file it poked carries it. So one scrape sees every live worker's requests up to
  the moment it asked, not a second behind. A worker that cannot answer in time (or cannot
  have a socket) is read as last written, at most a second old; a dead one refuses the datagram
  and is read as it last wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["POKE_WAIT", "SharedCounts"]

log = logging.getLogger("keyrelay.metrics")

#: how long a scrape waits for the other workers' fresh counts (seconds)
POKE_WAIT = 0.5

Snapshot = dict[str, list[list[Any]]]


class SharedCounts:
    """This worker's side of the run's metrics directory."""

    def __init__(self, directory: str, snapshot: Callable[[], Snapshot]) -> None:
        self.dir = Path(directory)
        self.snapshot = snapshot
        me = f"{os.getpid()}-{time.time_ns()}"  # a pid may come back within a run; this name may not
        self.file = self.dir / f"{me}.json"
        self.address = self._address(self.file)
        self._listen: socket.socket | None = None
        self._send = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        self._seq = 0  # the latest poke answered

    def _address(self, file: Path) -> str:
        """The socket of the worker that writes ``file``."""
        if sys.platform.startswith("linux"):
            return f"\0{self.dir.name}/{file.stem}"
        return str(file.with_suffix(".sock"))

    def start(self) -> None:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(self.address)
        except OSError as exc:  # e.g. a path longer than AF_UNIX allows: counts shared once a second only
            log.warning("metrics: no scrape-time refresh for this worker (%s); its counts lag up to a second",
                        exc.strerror or exc)
        else:
            self._listen = sock
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_poke)
        self.write()  # the others find this worker by its file

    def close(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._listen.fileno())
            self._listen.close()
            self._listen = None
            if not self.address.startswith("\0"):
                with contextlib.suppress(OSError):
                    Path(self.address).unlink()
        self._send.close()

    def write(self) -> None:
        data = self.snapshot()
        data["seq"] = [[self._seq]]
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self.file)

    def _on_poke(self) -> None:
        assert self._listen is not None
        seq = self._seq
        while True:
            try:
                data = self._listen.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
            with contextlib.suppress(ValueError):
                seq = max(seq, int(data))
        self._seq = seq
        try:
            self.write()
        except OSError as exc:
            log.warning("metrics: cannot write this worker's counts: %s", exc.strerror or exc)

    async def others(self) -> list[Snapshot]:
        """Every other worker's counts, fresh from each live worker that answers in time."""
        seq = time.time_ns()
        message = str(seq).encode()
        poked = set()
        for path in self.dir.glob("*.json"):
            if path == self.file:
                continue
            try:
                self._send.sendto(message, self._address(path))
            except OSError:  # refused: a worker that stopped (its last counts are in its file)
                continue
            poked.add(path)
        deadline = time.monotonic() + POKE_WAIT
        while True:
            found, waiting = self._read(poked, seq)
            if not waiting or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.002)

    def _read(self, poked: set[Path], seq: int) -> tuple[list[Snapshot], bool]:
        found, waiting = [], False
        for path in self.dir.glob("*.json"):
            if path == self.file:
                continue
            try:
                snap = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # gone, or not there yet
            if path in poked and snap.get("seq", [[0]])[0][0] < seq:
                waiting = True
            found.append(snap)
        return found, waiting
