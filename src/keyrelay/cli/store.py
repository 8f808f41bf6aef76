"""``keyrelay store init``: create the store named by the settings, or stamp a Redis store that
lost its data (flushed, or restarted without persistence) as a new, empty one.

Read-only commands never create a store, and a gateway whose Redis store lost its schema marker
writes nothing to it (it keeps serving from memory): this command is how a person says "start
afresh here". To bring the data back instead: ``keyrelay migrate --from BACKUP --to URL``.
"""

from __future__ import annotations

import asyncio
import os

import click

from keyrelay.cli.common import CliError, config_option, display_url, load, open_cli_store, plural
from keyrelay.config import Settings, sqlite_path

__all__ = ["store"]


@click.group()
@config_option
def store() -> None:
    """The store itself: init."""


async def _init(settings: Settings) -> int | None:
    """How many keys the store already held, or None when this call created (stamped) it."""
    url = settings.store_url
    path = sqlite_path(url)
    existed = os.path.exists(path) if path is not None else True
    if existed:
        try:
            held = await open_cli_store(url, settings.secret, create=False)
        except CliError:
            if path is not None:
                raise  # a SQLite file that cannot be opened: say why
        else:
            try:
                return len(await held.load())
            finally:
                await held.close()
    fresh = await open_cli_store(url, settings.secret, announce=True)
    await fresh.close()
    return None


@store.command("init")
@config_option
def init() -> None:
    """Create the store, or re-initialise a Redis store that lost its data; a store that holds
    its data is left as it is."""
    settings = load()
    if settings.store_url.lower().startswith("memory:"):
        raise CliError("a memory:// store lives in one process: there is nothing to initialise")
    keys = asyncio.run(_init(settings))
    shown = display_url(settings.store_url)
    if keys is None:
        click.echo(f"store {shown}: initialised (empty); gateways that saw it lose its data write to it again")
    else:
        click.echo(f"store {shown}: already initialised ({plural(keys, 'key')}); nothing changed")
