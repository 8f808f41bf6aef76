"""What every command shares: settings, the store, errors and output helpers.

A key's secret never reaches any output: commands show keys through :func:`key_json`,
:func:`named` or :func:`keyrelay.core.masking.mask` only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from rich.console import Console
from rich.table import Table

from keyrelay.config import ConfigError, Settings, load_settings, sqlite_path
from keyrelay.core.machine import effective_state
from keyrelay.core.masking import InvalidSecret, mask, redact, validate_secret
from keyrelay.core.model import Counters, Event, KeyRecord, KeyState
from keyrelay.exceptions import KeyrelayError, StoreError
from keyrelay.stores import SecretSource, Store, open_store

__all__ = [
    "RICH_ROWS", "SHOWN", "STATES", "CliError", "CliFailure", "ago", "capped", "config_option", "console",
    "display_url", "echo_json", "event_json", "failures", "fmt_time", "iso", "key_json", "load", "named",
    "open_cli_store", "parse_key_lines", "plural", "print_table", "read_keys", "require_existing", "require_pool",
    "shown", "with_store",
]

T = TypeVar("T")

STATES = tuple(s.value for s in KeyState)
SHOWN = 20  # at most this many duplicates / invalid lines are listed one by one
_CONFIG = "keyrelay.config"
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
_KEY_ID = re.compile(r"k[0-9a-f]{11}")


class CliError(KeyrelayError, click.ClickException):
    """An expected failure (bad input, unknown pool or id, no store): one ``keyrelay: …``
    line on stderr, no traceback, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"keyrelay: {self.format_message()}", file=file, err=file is None)


class CliFailure(CliError):
    """The work could not be done (aborted, a store failure mid-way): exit code 1."""

    exit_code = 1


# -- settings ------------------------------------------------------------------------------


def _remember_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.meta[_CONFIG] = value  # ``meta`` is shared by the group's and the sub-command's contexts
    return value


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE``, accepted on the group and on every sub-command (the last one given wins)."""
    return click.option(
        "--config",
        metavar="FILE",
        default=None,
        expose_value=False,
        callback=_remember_config,
        help="Settings file (TOML). Default: $KEYRELAY_CONFIG, else ./keyrelay.toml, else keyrelay.toml in "
        "the user's config directory, else built-in defaults.",
    )(f)


def load(ctx: click.Context | None = None) -> Settings:
    """The settings named by ``--config`` (or ``$KEYRELAY_CONFIG``)."""
    ctx = ctx or click.get_current_context()
    try:
        return load_settings(ctx.meta.get(_CONFIG), discover=True)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}") from None


def require_pool(settings: Settings, name: str) -> str:
    names = [p.name for p in settings.pools]
    if name not in names:
        where = f" in {settings.source}" if settings.source else ""
        raise CliError(f"no pool named {name!r}{where} (known pools: {', '.join(names)})")
    return name


# -- the store -----------------------------------------------------------------------------


def display_url(url: str) -> str:
    """A store URL fit for messages: any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


def require_existing(url: str) -> None:
    """Refuse a SQLite store that does not exist yet: a read-only command (or ``migrate --from``)
    must not create an empty store where the user expected theirs."""
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        raise CliError(f"no store at {Path(path).absolute()} (add keys with 'keyrelay keys add', or pass --config)")


async def open_cli_store(
    url: str, secret: SecretSource | None = None, *, announce: bool = False, create: bool = True
) -> Store:
    """Open the store at ``url``; any failure is one line (exit code 2). With ``announce``, one
    line on stderr naming a key file this created (never the secret)."""
    shown = display_url(url)
    try:
        store = open_store(url, secret, create=create)
        await store.open()
    except ImportError as exc:
        if (exc.name or "").startswith("redis"):
            raise CliError(f"cannot open store {shown}: the redis extra is not installed; "
                           "run: pip install 'keyrelay[redis]'") from None
        raise CliError(f"cannot open store {shown}: {redact(str(exc)) or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to open is reported the same way
        raise CliError(f"cannot open store {shown}: {redact(str(exc)) or type(exc).__name__}") from None
    created = getattr(store, "created_key_file", None)
    if created and announce:
        click.echo(
            f"keyrelay: created the key file {created} (mode 0600) that encrypts the keys of {shown}: "
            "keep it (and back it up): without it the keys cannot be read",
            err=True,
        )
    return store


async def _session(
    url: str, secret: SecretSource, work: Callable[[Store], Awaitable[T]], warn: bool, announce: bool, create: bool
) -> T:
    shown = display_url(url)
    store = await open_cli_store(url, secret, announce=announce, create=create)
    if warn and url.lower().startswith("memory:"):
        click.echo(f"keyrelay: warning: store {shown} lives in this process only; nothing is kept", err=True)
    try:
        return await work(store)
    except (StoreError, OSError, sqlite3.Error) as exc:
        raise CliFailure(f"store error ({shown}): {redact(str(exc))}") from None
    finally:
        await store.close()


def with_store(
    settings: Settings, work: Callable[[Store], Awaitable[T]], *, warn_memory: bool = True, existing: bool = False,
    announce: bool = False,
) -> T:
    """Open the settings' store, run ``work(store)`` to completion, close the store.

    A ``memory://`` store is new and empty in every command: say so on stderr (``warn_memory``).
    With ``existing`` (read-only commands), a SQLite store that does not exist is an error, not
    created. ``announce``: say on stderr when opening created the key file (commands that store
    keys: other commands keep their one line of output or error)."""
    if existing:
        require_existing(settings.store_url)
    return asyncio.run(_session(settings.store_url, settings.secret, work, warn_memory, announce, not existing))


# -- output --------------------------------------------------------------------------------


def console() -> Console:
    """A rich console on stdout (as it is now: CliRunner swaps it). Wide when not a terminal,
    so piped tables are not squeezed; no markup, so labels and reasons print as they are."""
    c = Console(markup=False, highlight=False, emoji=False)
    if not c.is_terminal:
        c = Console(markup=False, highlight=False, emoji=False, width=200, no_color=True)
    return c


#: Above this many rows a table is aligned by hand: rich measures every cell, too slow for big pools.
RICH_ROWS = 1000


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Iterable[str] = (),
    title: str | None = None,
) -> None:
    """Rows under headers, two spaces apart; ``right`` names right-aligned columns."""
    right_set = set(right)
    if len(rows) <= RICH_ROWS:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for col in columns:
            table.add_column(col, justify="right" if col in right_set else "left", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console().print(table)
        return
    widths = [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(columns)]
    align = [str.rjust if col in right_set else str.ljust for col in columns]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(a(c, w) for a, c, w in zip(align, cells, widths)).rstrip()

    out = [title] if title else []
    out.append(line(columns))
    out.extend(line(r) for r in rows)
    click.echo("\n".join(out))


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _span(seconds: float) -> str:
    """``42s``, ``5m12s``, ``3h4m``, ``2d7h``: two units at most."""
    s = int(abs(seconds))
    for (big, size), (small, sub) in zip(
        (("d", 86400), ("h", 3600), ("m", 60)), (("h", 3600), ("m", 60), ("s", 1))
    ):
        if s >= size:
            rest = (s % size) // sub
            return f"{s // size}{big}" + (f"{rest}{small}" if rest else "")
    return f"{s}s"


def ago(ts: float, now: float) -> str:
    """``5m ago`` / ``in 3h`` for an epoch time; ``-`` when unset."""
    if ts <= 0:
        return "-"
    d = now - ts
    if abs(d) < 1:
        return "now"
    return f"{_span(d)} ago" if d > 0 else f"in {_span(d)}"


def fmt_time(ts: float) -> str:
    """Local wall-clock time, to the second."""
    if ts <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: float) -> str | None:
    if ts <= 0:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def failures(c: Counters) -> int:
    """Requests that failed because of the key: rate limited, out of quota, invalid. A client's
    bad request (404, 400), an upstream 5xx or a network error is not the key's failure."""
    return c.rate_limited + c.quota_exhausted + c.invalid_key


def key_json(rec: KeyRecord, now: float) -> dict[str, object]:
    """A key as scripts see it: masked, with its effective state. Never the secret."""
    return {
        "id": rec.id,
        "pool": rec.pool,
        "masked": mask(rec.secret),
        "state": effective_state(rec, now).value,
        "stored_state": rec.state.value,
        "reason": rec.reason,
        "since": rec.since,
        "until": rec.until,
        "version": rec.version,
        "weight": rec.weight,
        "label": rec.label,
        "added_at": rec.added_at,
        "counters": rec.counters.as_dict(),
        "balance": rec.balance,
        "currency": rec.currency,
        "base_url": rec.base_url,
    }


def event_json(ev: Event) -> dict[str, object]:
    return {
        "seq": ev.seq,
        "at": ev.at,
        "time": iso(ev.at),
        "key_id": ev.key_id,
        "pool": ev.pool,
        "actor": ev.actor,
        "from": ev.from_state,
        "to": ev.to_state,
        "reason": ev.reason,
        "detail": ev.detail,
    }


def parse_key_lines(lines: Iterable[bytes | str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Keys from a key file: one per line; ``#`` comments (whole-line or after whitespace) and
    blank lines are skipped, whitespace around a key is stripped.

    Returns ``(keys, problems)`` as ``(line number, key)`` and ``(line number, message)``; a
    message shows at most a masked key.
    """
    keys: list[tuple[int, str]] = []
    problems: list[tuple[int, str]] = []
    for n, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append((n, "not valid UTF-8"))
                continue
        else:
            line = raw
        if n == 1:
            line = line.lstrip("\ufeff")
        line = _TRAILING_COMMENT.sub("", line).strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append((n, validate_secret(line)))
        except InvalidSecret as exc:
            problems.append((n, str(exc)))
    return keys, problems


def shown(value: str) -> str:
    """A user-typed id or name for a message, quoted; masked when it is long and not a key id,
    since people paste a key (or a token) where an id belongs."""
    return repr(value if len(value) <= 20 or _KEY_ID.fullmatch(value) else mask(value))


def named(rec: KeyRecord) -> str:
    return f"{rec.id} ({rec.pool}, {mask(rec.secret)})"


def capped(lines: list[str]) -> str:
    extra = [f"  … and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []
    return "\n".join(lines[:SHOWN] + extra)


def read_bytes(file: str) -> bytes:
    """The bytes of ``file`` (``-``: stdin); one CLI error line when it cannot be read."""
    try:
        if file == "-":
            return sys.stdin.buffer.read()
        with open(file, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {'stdin' if file == '-' else file}: {exc.strerror or exc}") from None


def read_keys(file: str) -> list[tuple[int, str]]:
    """``(line number, key)`` of a key file (``-``: stdin); any invalid line fails the command."""
    name = "stdin" if file == "-" else file
    data = read_bytes(file)
    found, problems = parse_key_lines(data.splitlines())
    if problems:
        bad = [f"  line {n}: {msg}" for n, msg in problems]
        raise CliError(f"{plural(len(problems), 'invalid line')} in {name}; nothing added:\n" + capped(bad))
    return found
