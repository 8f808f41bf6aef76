"""``keyrelay keys …``: add, import, list, show, disable, enable and remove upstream keys."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keyrelay.cli.common import (
    STATES,
    CliError,
    CliFailure,
    ago,
    capped,
    config_option,
    echo_json,
    event_json,
    failures,
    fmt_time,
    key_json,
    load,
    named,
    plural,
    print_table,
    read_keys,
    require_pool,
    shown,
    with_store,
)
from keyrelay.cli.events import print_events, scrubbed
from keyrelay.cli.paste import check_pasted, read_key_file
from keyrelay.core.machine import effective_state, on_admin
from keyrelay.core.masking import InvalidSecret, mask, validate_secret
from keyrelay.core.model import Event, KeyRecord, KeyState
from keyrelay.stores import AddResult, Store, key_id_for

__all__ = ["keys"]

BATCH = 5000  # keys per add_keys call (one transaction each)
_RETRIES = 5

F = TypeVar("F", bound=Callable[..., Any])


def _weight(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive number, got {value}")
    return value


def _base_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host, without credentials, query or fragment; else exit 2, nothing stored."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # e.g. a port that is not a number
        ok = False
    ok = ok and not (parts.username or parts.password or parts.query or parts.fragment)
    if not ok or not all(32 < ord(c) < 127 for c in value):
        raise CliError(
            f"--base-url: expected an http(s) URL such as https://name.openai.azure.com, got {shown(value)}; "
            "nothing added"
        )
    return value.rstrip("/")


def _pool_opts(f: F) -> F:
    f = click.option("--base-url", default=None, metavar="URL", callback=_base_url,
                     help="Send these keys to URL instead of the pool's base_url (e.g. an Azure resource).")(f)
    f = click.option("--label", default="", help="A free-form label stored with each key.")(f)
    f = click.option("--weight", type=float, default=1.0, show_default=True, callback=_weight,
                     help="Selection weight of each key (random strategy).")(f)
    return click.option("--pool", required=True, help="The pool (from the config) to add the keys to.")(f)


@click.group()
@config_option
def keys() -> None:
    """Upstream keys: add, import, list, show, disable, enable, remove."""


_FORCE = click.option(
    "--force", is_flag=True,
    help="Store values that look like no key (quotes, NAME=value, commas, under 8 characters) as given.",
)


@keys.command("add")
@config_option
@_pool_opts
@_FORCE
@click.argument("values", metavar="KEY…", nargs=-1, required=True)
def add(pool: str, weight: float, label: str, base_url: str | None, force: bool, values: tuple[str, ...]) -> None:
    """Add keys to a pool. A KEY of '-' reads keys from stdin, one per line."""
    settings = load()
    require_pool(settings, pool)
    secrets: list[str] = []
    pasted: list[tuple[str, str]] = []
    for i, v in enumerate(values):
        try:
            if v != "-":
                secrets.append(validate_secret(v))
                pasted.append((f"key {i + 1} of {len(values)} ({mask(v)!r})", v))
            elif "-" not in values[:i]:  # stdin is read once
                from_stdin = read_keys("-")
                secrets.extend(s for _, s in from_stdin)
                pasted.extend((f"stdin line {n} ({mask(s)!r})", s) for n, s in from_stdin)
        except InvalidSecret as exc:
            raise CliError(f"{exc}; nothing added") from None
    check_pasted(pasted, force)
    if not secrets:
        raise CliError("no keys given; nothing added")
    unique = list(dict.fromkeys(secrets))

    async def work(store: Store) -> AddResult:
        return await store.add_keys(pool, unique, time.time(), weight=weight, label=label, base_url=base_url)

    result = with_store(settings, work, announce=True)
    skipped = len(secrets) - len(result.added)
    note = f" ({plural(skipped, 'duplicate')} skipped)" if skipped else ""
    via = f" (sent to {base_url})" if base_url else ""
    click.echo(f"added {plural(len(result.added), 'key')} to pool {pool}{via}{note}")
    for rec in result.added:
        click.echo(f"  {rec.id}  {mask(rec.secret)}")
    dup_ids = set(result.duplicates)
    for s in unique:
        if (kid := key_id_for(pool, s)) in dup_ids:
            click.echo(f"  {kid}  {mask(s)}  (already in the pool)")


@keys.command("import")
@config_option
@_pool_opts
@_FORCE
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def import_(pool: str, weight: float, label: str, base_url: str | None, force: bool, file: str) -> None:
    """Import keys from FILE ('-': stdin): one key per line, '#' comments and blank lines ignored.
    Env-file lines (NAME=value, export NAME=value) give their value."""
    settings = load()
    require_pool(settings, pool)
    name = "stdin" if file == "-" else file
    found, taken = read_key_file(file)
    check_pasted(((f"{name} line {n} ({mask(s)!r})", s) for n, s in found), force)
    for note in taken:
        click.echo(note)
    first_line: dict[str, int] = {}
    unique: list[tuple[int, str]] = []
    notes: list[tuple[int, str]] = []
    for n, s in found:
        if s in first_line:
            notes.append((n, f"  line {n}: {mask(s)} repeats line {first_line[s]}"))
        else:
            first_line[s] = n
            unique.append((n, s))
    in_file = len(found) - len(unique)
    if not unique:
        click.echo(f"no keys in {name}; nothing added")
        return
    err = Console(stderr=True, markup=False, highlight=False)
    show_bar = err.is_terminal or len(unique) > 1000

    async def work(store: Store) -> tuple[int, list[str]]:
        added, dups = 0, list[str]()
        now = time.time()
        with Progress(
            TextColumn(f"importing into {pool}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, disable=not show_bar, auto_refresh=err.is_terminal, transient=False,
        ) as bar:
            task = bar.add_task("import", total=len(unique))
            for i in range(0, len(unique), BATCH):
                batch = [s for _, s in unique[i:i + BATCH]]
                res = await store.add_keys(pool, batch, now, weight=weight, label=label, base_url=base_url)
                added += len(res.added)
                dups.extend(res.duplicates)
                bar.update(task, advance=len(batch), refresh=True)
        return added, dups

    added, store_dups = with_store(settings, work, announce=True)
    if store_dups:
        where = {key_id_for(pool, s): (n, s) for n, s in unique}
        for kid in store_dups:
            n, s = where[kid]
            notes.append((n, f"  line {n}: {mask(s)} already in the pool"))
    skipped = in_file + len(store_dups)
    note = f" ({plural(skipped, 'duplicate')} skipped: {in_file} repeated in the file, {len(store_dups)} already in the pool)"
    click.echo(f"imported {plural(added, 'key')} into pool {pool} from {name}{note if skipped else ''}")
    if notes:
        click.echo(capped([text for _, text in sorted(notes)]))


def _state_cell(rec: KeyRecord, now: float) -> tuple[str, str]:
    """The effective state and, for a cooling or exhausted key, when that ends."""
    state = effective_state(rec, now)
    until = ago(rec.until, now) if state in (KeyState.COOLING, KeyState.EXHAUSTED) and rec.until > 0 else ""
    return state.value, until


def _balance(rec: KeyRecord) -> str:
    return "" if rec.balance is None else f"{rec.balance:g} {rec.currency}".strip()


@keys.command("list")
@config_option
@click.option("--pool", default=None, help="Only keys of this pool.")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False), default=None,
              help="Only keys in this (effective) state.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of keys (masked).")
def list_(pool: str | None, state: str | None, as_json: bool) -> None:
    """Keys with their (effective) state, counters and balance. Keys are shown masked."""
    settings = load()

    async def work(store: Store) -> list[KeyRecord]:
        return await store.load(pool)

    now = time.time()
    recs = with_store(settings, work, existing=True)
    if state is not None:
        recs = [r for r in recs if effective_state(r, now).value == state.lower()]
    if as_json:
        echo_json([key_json(r, now) for r in recs])
        return
    if not recs:
        click.echo("no keys" + (f" in pool {pool}" if pool else "") + (f" in state {state.lower()}" if state else ""))
        return
    numbers = ("requests", "successes", "failures", "tokens in", "tokens out", "balance")
    own_urls = any(r.base_url for r in recs)  # the column only when some key has its own URL
    counts: dict[str, int] = {}
    rows = []
    for r in recs:
        st, until = _state_cell(r, now)
        counts[st] = counts.get(st, 0) + 1
        c = r.counters
        rows.append((
            r.id, r.pool, mask(r.secret), st, r.reason, ago(r.since, now), until, str(c.requests),
            str(c.successes), str(failures(c)), str(c.prompt_tokens), str(c.completion_tokens), _balance(r),
            *((r.base_url or "-",) if own_urls else ()),
        ))
    columns = ("id", "pool", "key", "state", "reason", "since", "until", *numbers, *(("base url",) if own_urls else ()))
    print_table(columns, rows, right=numbers)
    click.echo(f"{plural(len(recs), 'key')}: " + ", ".join(f"{counts[s]} {s}" for s in STATES if s in counts))


@keys.command("show")
@config_option
@click.argument("key_id", metavar="ID")
@click.option("--events", "n_events", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of its last events to show.")
@click.option("--json", "as_json", is_flag=True, help="The key (masked) and its events as JSON.")
def show(key_id: str, n_events: int, as_json: bool) -> None:
    """One key (masked) and its last events."""
    settings = load()

    async def work(store: Store) -> tuple[KeyRecord | None, list[Event]]:
        rec = await store.get(key_id)
        if rec is None or n_events == 0:
            return rec, []
        return rec, await scrubbed(store, await store.events(key_id, n_events))

    rec, evs = with_store(settings, work, existing=True)
    if rec is None:
        raise CliError(f"no key with id {shown(key_id)}")
    now = time.time()
    if as_json:
        echo_json({**key_json(rec, now), "events": [event_json(e) for e in evs]})
        return
    st, until = _state_cell(rec, now)
    c = rec.counters
    rows = [
        ("id", rec.id), ("pool", rec.pool), ("key", mask(rec.secret)),
        ("state", st + (f" (stored: {rec.state.value})" if st != rec.state.value else "")),
        ("reason", rec.reason or "-"), ("since", f"{fmt_time(rec.since)} ({ago(rec.since, now)})"),
        ("until", f"{fmt_time(rec.until)} ({ago(rec.until, now)})" if until else "-"),
        ("version", str(rec.version)), ("weight", f"{rec.weight:g}"), ("label", rec.label or "-"),
        ("added", f"{fmt_time(rec.added_at)} ({ago(rec.added_at, now)})"),
        ("requests", f"{c.requests} ({c.successes} ok, {failures(c)} failed)"),
        ("tokens", f"{c.prompt_tokens} in, {c.completion_tokens} out"),
        ("balance", _balance(rec) or "-"),
        ("base url", rec.base_url or "- (the pool's)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    if evs:
        click.echo()
        print_events(evs, title=f"last {plural(len(evs), 'event')}")


def _admin(action: str, key_id: str) -> None:
    settings = load()

    async def work(store: Store) -> tuple[KeyRecord, KeyRecord | None]:
        for _ in range(_RETRIES):
            rec = await store.get(key_id)
            if rec is None:
                raise CliError(f"no key with id {shown(key_id)}")
            transition = on_admin(rec, action, time.time())
            if transition is None:
                return rec, None
            new = await store.apply(transition)
            if new is not None:
                return rec, new
        raise CliFailure(f"key {key_id} keeps changing under us; try again")

    old, new = with_store(settings, work, existing=True)
    click.echo(f"key {named(old)}: " + (f"{old.state.value} → {new.state.value}" if new else f"already {old.state.value}"))


@keys.command("disable")
@config_option
@click.argument("key_id", metavar="ID")
def disable(key_id: str) -> None:
    """Take a key out of rotation until it is enabled again."""
    _admin("disable", key_id)


@keys.command("enable")
@config_option
@click.argument("key_id", metavar="ID")
def enable(key_id: str) -> None:
    """Put a key back into rotation (also clears cooling, exhausted and invalid)."""
    _admin("enable", key_id)


@keys.command("remove")
@config_option
@click.argument("key_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(key_id: str, yes: bool) -> None:
    """Delete a key from the store for good (its history stays)."""
    settings = load()

    async def work(store: Store) -> KeyRecord:
        rec = await store.get(key_id)
        if rec is None:
            raise CliError(f"no key with id {shown(key_id)}")
        if not yes:
            try:
                ok = click.confirm(f"remove key {named(rec)} for good?", default=False)
            except click.Abort:  # end of input
                ok = False
            if not ok:
                raise CliFailure("aborted; nothing removed")
        if not await store.remove(key_id, time.time()):
            raise CliError(f"no key with id {shown(key_id)}")
        return rec

    rec = with_store(settings, work, existing=True)
    click.echo(f"removed key {named(rec)}")

