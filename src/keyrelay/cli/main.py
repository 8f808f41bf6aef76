"""``keyrelay``: the command group, error handling and ``keyrelay serve``.

Exit codes: 0 done; 1 aborted or a store failure during the work; 2 a usage, config or input
error (bad key, unknown pool, unknown key id, store that cannot be opened).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
from typing import Any

import click

from keyrelay.cli.check import check
from keyrelay.cli.common import CliError, CliFailure, config_option, load, with_store
from keyrelay.cli.demo import demo
from keyrelay.cli.events import events
from keyrelay.cli.keys import keys
from keyrelay.cli.migrate import migrate
from keyrelay.cli.secret import rotate_secret
from keyrelay.cli.startup import empty_pool_notes, where_from
from keyrelay.cli.store import store
from keyrelay.cli.tokens import tokens
from keyrelay.config import ConfigError, Settings
from keyrelay.coredump import disable_core_dumps
from keyrelay.version import __version__

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns the domain's expected errors into one line on stderr (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise CliError(f"config error: {exc}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="keyrelay", message="%(prog)s %(version)s")
@config_option
def cli() -> None:
    """keyrelay: one OpenAI-compatible endpoint over a pool of upstream API keys.

    Manage the keys and client tokens of the store named in the settings file, read the
    history of key states, and run the gateway.
    """


@cli.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (overrides [server] host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (overrides [server] port).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Gateway processes sharing the port and the store (overrides [server] workers; default 1).",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway in the foreground until interrupted.

    With --workers N > 1 a parent process runs N gateway processes on the port and restarts
    any that dies; SIGTERM or Ctrl-C stops them all."""
    settings = load()
    disable_core_dumps()  # the keys live decrypted in this process's memory
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if workers is not None:
        changes["workers"] = workers
    if changes:
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, **changes))
    _check_port(settings)  # a port in use: one line, before anything is opened, logged or set up
    try:
        from keyrelay.logs import setup_logging
    except ImportError:  # pragma: no cover - logging set-up not available
        pass
    else:
        setup_logging(settings.server.log_level)
    from keyrelay.server.app import serve as run

    log = logging.getLogger("keyrelay.server")
    log.info("%s", where_from(settings))
    # a store that cannot be opened fails here, with exit code 2. A key file it creates is named
    # by the store's own log line; said again on stderr only when that line is not shown
    quiet = logging.getLogger("keyrelay.store").getEffectiveLevel() > logging.INFO
    for note in with_store(settings, empty_pool_notes(settings), warn_memory=False, announce=quiet):
        log.warning("%s", note)
    try:
        if settings.server.workers > 1:
            from keyrelay.server.workers import run_workers

            if settings.store_url.startswith("memory:"):
                raise CliError("several workers need a store they share (sqlite or redis), not memory://")

            if run_workers(settings, settings.server.workers) != 0:
                raise CliFailure("the workers failed to start (see the log above)")
        else:
            run(settings)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
    except OSError as exc:  # e.g. the address was taken meanwhile: the user's to fix
        raise _cannot_serve(settings, exc) from None


def _cannot_serve(settings: Settings, exc: OSError) -> CliError:
    where = f"{settings.server.host}:{settings.server.port}"
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot serve on {where}: the address is in use (stop the other server, or pick another --port)")
    return CliError(f"cannot serve on {where}: {exc.strerror or exc}")


def _check_port(settings: Settings) -> None:
    """Can the gateway listen on its address? (Bound and released at once.)"""
    host, port = settings.server.host, settings.server.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as exc:  # socket.gaierror included: an unknown host
        raise _cannot_serve(settings, exc) from None


keys.add_command(rotate_secret)
cli.add_command(keys)
cli.add_command(store)
cli.add_command(tokens)
cli.add_command(events)
cli.add_command(check)
cli.add_command(migrate)
cli.add_command(demo)


def main() -> None:
    """The console script (click exits with the command's code; a closed pipe exits 1 quietly)."""
    cli.main(prog_name="keyrelay")


if __name__ == "__main__":  # pragma: no cover
    main()
