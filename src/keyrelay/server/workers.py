"""``keyrelay serve --workers N``: a pre-fork parent and N gateway processes on one port.

The parent binds the address (so a taken port fails at once, with exit code 1), forks N children
and supervises them; it serves no request itself. Each child is a whole gateway
(:func:`keyrelay.server.app.run_server`): its own event loop, runtime, in-memory pools and
upstream connections, all sharing the one store.

- **Sockets.** By default every child listens on its own ``SO_REUSEPORT`` socket and the kernel
  spreads new connections over them (by a hash of the client's address and port). With
  ``reuse_port=False`` the parent listens on one socket that the children inherit and accept
  from in turn. ``bench/bench_redis.py`` compares them (figures: docs/design.md, "Several
  gateways"): SO_REUSEPORT spreads the requests more evenly and no new connection wakes every
  worker; what the shared socket does better: a worker that dies takes no queued, not yet
  accepted connection with it.
- **Signals.** SIGTERM or SIGINT to the parent is passed on to the children as SIGTERM: each
  finishes its in-flight requests and writes its counters, then the parent exits 0. A second
  signal, or children still running after ``grace`` seconds, get SIGKILL.
- **Crashes.** A child that dies unexpectedly is started again after 0.5 s, doubling up to 30 s
  while it keeps dying soon (the delay starts over once a child lived 30 s). A child that fails
  before the first N were all ready fails the start-up: everything stops, exit code 1.
- **Orphans.** Children die with their parent: ``PR_SET_PDEATHSIG`` on Linux (SIGTERM, so they
  still shut down cleanly), elsewhere a thread watching ``os.getppid()`` every second.
- **State.** Workers learn each other's key changes through the store's change feed: within
  ``sync_interval`` on SQLite, within milliseconds on Redis (pub/sub). Counters are batched per
  process and added up in the store, so ``keyrelay keys list`` shows the sums. Log lines of a
  child end with ``pid=<its pid>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn, TextIO, cast

from keyrelay.config import Settings

__all__ = ["run_workers"]

log = logging.getLogger("keyrelay.workers")

_BACKLOG = 1024
_RESTART = (0.5, 30.0)  # first and longest wait before restarting a child that died
_STABLE = 30.0  # a child that lived this long restarts after the first wait again
_BOOT_TIMEOUT = 60.0  # the first N children must be serving by then
_PR_SET_PDEATHSIG = 1


@dataclass
class _Slot:
    index: int
    pid: int = 0  # 0: not running
    started: float = 0.0
    ready_fd: int = -1  # read end of the child's "serving now" pipe, until it answered
    ready: bool = False
    delay: float = _RESTART[0]
    restart_at: float = 0.0


def listen_socket(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` (the first address ``host`` resolves to)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        if listen:
            sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def run_workers(settings: Settings, workers: int, *, reuse_port: bool = True, grace: float = 65.0) -> int:
    """Serve with ``workers`` child processes until SIGTERM/SIGINT; the exit code (0, or 1 when
    the start-up failed). Raises ``OSError`` when the address cannot be bound."""
    host, port = settings.server.host, settings.server.port
    # reuse_port: bound, not listening, so it takes no connection: it only holds the port
    sock = listen_socket(host, port, reuse_port=reuse_port, listen=not reuse_port)
    # the workers' counts for /metrics meet here (server/metrics.py); gone when the run ends
    metrics_dir = tempfile.mkdtemp(prefix="keyrelay-metrics-") if settings.metrics.enabled else None
    try:
        return _Parent(settings, workers, sock, reuse_port, grace, metrics_dir).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class _Parent:
    def __init__(
        self, settings: Settings, n: int, sock: socket.socket, reuse_port: bool, grace: float, metrics_dir: str | None
    ) -> None:
        self.settings, self.sock, self.reuse_port, self.grace = settings, sock, reuse_port, grace
        self.metrics_dir = metrics_dir
        self.slots = [_Slot(i) for i in range(n)]
        self.signals: list[int] = []
        self.stopping_at = 0.0  # when the children were told to stop (0: not yet)
        self.booting = True
        self.failed = False
        self._wake_r, self._wake_w = socket.socketpair()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        where = f"http://{self.settings.server.host}:{self.settings.server.port}"
        mode = "SO_REUSEPORT sockets" if self.reuse_port else "one shared socket"
        log.info("keyrelay starting %d workers on %s (%s; parent pid=%d)", len(self.slots), where, mode, os.getpid())
        boot_deadline = time.monotonic() + _BOOT_TIMEOUT
        try:
            for slot in self.slots:
                self._spawn(slot)
            while True:
                self._wait(self._timeout())
                self._handle_signals()
                self._read_ready()
                self._reap()
                now = time.monotonic()
                if self.booting and all(s.ready for s in self.slots):
                    self.booting = False
                    log.info("keyrelay: %d workers serving on %s", len(self.slots), where)
                elif self.booting and now > boot_deadline and not self.stopping_at:
                    log.error("keyrelay workers not serving after %gs; stopping", _BOOT_TIMEOUT)
                    self._stop(failed=True)
                if self.stopping_at:
                    if not any(s.pid for s in self.slots):
                        return 1 if self.failed else 0
                    if now - self.stopping_at > self.grace:
                        self._kill_all(signal.SIGKILL)
                    continue
                for slot in self.slots:
                    if not slot.pid and now >= slot.restart_at:
                        self._spawn(slot)
        finally:
            self._kill_all(signal.SIGKILL)  # only if we got here by an exception: nothing is left otherwise
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(old_wakeup)
            for slot in self.slots:
                self._close_ready(slot)
            self._wake_r.close()
            self._wake_w.close()
            self.sock.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [1.0]
        if not self.stopping_at:
            waits += [s.restart_at - now for s in self.slots if not s.pid]
        return max(0.0, min(waits))

    def _wait(self, timeout: float) -> None:
        fds = [self._wake_r.fileno(), *(s.ready_fd for s in self.slots if s.ready_fd >= 0)]
        with contextlib.suppress(InterruptedError):
            select.select(fds, [], [], timeout)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        got, self.signals = self.signals, []
        for signum in got:
            if signum == signal.SIGCHLD:
                continue  # _reap() looks at every child anyway
            if self.stopping_at:
                log.warning("keyrelay: second %s: killing the workers", signal.Signals(signum).name)
                self._kill_all(signal.SIGKILL)
            else:
                log.info("keyrelay: %s: stopping the workers", signal.Signals(signum).name)
                self._stop()

    def _stop(self, failed: bool = False) -> None:
        self.failed = self.failed or failed
        self.stopping_at = time.monotonic()
        self._kill_all(signal.SIGTERM)

    def _kill_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    # -- children --------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        for handler in logging.getLogger().handlers:  # or the child inherits (and repeats) buffered lines
            handler.flush()
        parent = os.getpid()
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: try again later
            os.close(ready_r)
            os.close(ready_w)
            slot.restart_at = time.monotonic() + slot.delay
            log.error("keyrelay cannot start worker %d (%s); trying again in %.1fs", slot.index, exc, slot.delay)
            slot.delay = min(slot.delay * 2, _RESTART[1])
            return
        if pid == 0:  # the child: never returns
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.close(ready_r)
            for other in self.slots:
                if other.ready_fd >= 0:
                    os.close(other.ready_fd)
            self._wake_r.close()
            self._wake_w.close()
            _child(self.settings, None if self.reuse_port else self.sock, ready_w, parent, self.sock, self.metrics_dir)
        os.close(ready_w)
        slot.pid, slot.started, slot.ready_fd, slot.ready = pid, time.monotonic(), ready_r, False
        log.info("keyrelay worker %d started (pid=%d)", slot.index, pid)

    def _read_ready(self) -> None:
        for slot in self.slots:
            if slot.ready_fd < 0:
                continue
            r, _, _ = select.select([slot.ready_fd], [], [], 0)
            if r:
                slot.ready = os.read(slot.ready_fd, 1) == b"1"
                self._close_ready(slot)  # answered, or closed without answering (it failed)

    @staticmethod
    def _close_ready(slot: _Slot) -> None:
        if slot.ready_fd >= 0:
            os.close(slot.ready_fd)
            slot.ready_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            self._exited(slot, os.waitstatus_to_exitcode(status))

    def _exited(self, slot: _Slot, code: int) -> None:
        pid, lived, was_ready = slot.pid, time.monotonic() - slot.started, slot.ready
        slot.pid, slot.ready = 0, False
        self._close_ready(slot)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.stopping_at:
            log.info("keyrelay worker %d (pid=%d) stopped (%s)", slot.index, pid, how)
            return
        if self.booting and not was_ready:
            log.error("keyrelay worker %d (pid=%d) failed to start (%s); stopping", slot.index, pid, how)
            self._stop(failed=True)
            return
        if lived >= _STABLE:
            slot.delay = _RESTART[0]
        slot.restart_at = time.monotonic() + slot.delay
        log.warning(
            "keyrelay worker %d (pid=%d) died unexpectedly (%s) after %.1fs; restarting in %.1fs",
            slot.index, pid, how, lived, slot.delay,
        )
        slot.delay = min(slot.delay * 2, _RESTART[1])


# -- in the child ---------------------------------------------------------------------------


def _child(
    settings: Settings,
    sock: socket.socket | None,
    ready_w: int,
    parent: int,
    inherited: socket.socket,
    metrics_dir: str | None = None,
) -> NoReturn:
    code = 1
    try:
        _die_with_parent(parent)
        _child_logs(f" pid={os.getpid()}")
        if sock is None:  # SO_REUSEPORT: a listening socket of our own on the same port
            inherited.close()
            sock = listen_socket(settings.server.host, settings.server.port, reuse_port=True)
        try:
            from uvloop import run
        except ImportError:  # pragma: no cover - non-Linux
            from asyncio import run  # type: ignore[assignment]
        run(_serve(settings, sock, ready_w, metrics_dir))
        code = 0
    except KeyboardInterrupt:
        code = 0
    except BaseException as exc:  # noqa: BLE001 - the child reports and exits, whatever it was
        log.error("keyrelay worker failed: %s: %s", type(exc).__name__, exc)
    finally:
        logging.shutdown()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


async def _serve(settings: Settings, sock: socket.socket, ready_w: int, metrics_dir: str | None = None) -> None:
    from keyrelay.server.app import run_server

    ready = asyncio.Event()
    server = asyncio.create_task(run_server(settings, sock=sock, ready=ready, metrics_dir=metrics_dir))
    waiter = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            os.write(ready_w, b"1")
    finally:
        waiter.cancel()
        os.close(ready_w)
    await server


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the parent dies."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent:  # it died before prctl took effect
                os._exit(0)
            return
    threading.Thread(target=_watch_parent, args=(parent,), name="keyrelay-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


class _Tagged(logging.Formatter):
    """Another formatter's line plus a suffix (the worker's pid)."""

    def __init__(self, inner: logging.Formatter, suffix: str) -> None:
        super().__init__()
        self.inner, self.suffix = inner, suffix

    def format(self, record: logging.LogRecord) -> str:
        return self.inner.format(record) + self.suffix


class _TaggedStream:
    """A text stream that ends every line written to it with a suffix (the worker's pid)."""

    def __init__(self, stream: TextIO, suffix: str) -> None:
        self.stream, self.suffix = stream, suffix

    def write(self, text: str) -> int:
        return self.stream.write(text.replace("\n", self.suffix + "\n"))

    def flush(self) -> None:
        self.stream.flush()


def _child_logs(suffix: str) -> None:
    """Logging made right for this process, every line ending with ``suffix``. keyrelay's own
    set-up (:func:`keyrelay.logs.setup_logging`) writes from a thread, which did not survive the
    fork: it is set up again, on the same stream. Other handlers get their formatter tagged."""
    from keyrelay.logs import BufferedStreamHandler, setup_logging

    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, BufferedStreamHandler)]
    if ours:
        level = logging.getLevelName(root.level)
        setup_logging(level, stream=cast(TextIO, _TaggedStream(ours[0].stream, suffix)))
        return
    for handler in root.handlers:
        inner = handler.formatter or logging.Formatter()
        handler.setFormatter(_Tagged(inner.inner if isinstance(inner, _Tagged) else inner, suffix))
