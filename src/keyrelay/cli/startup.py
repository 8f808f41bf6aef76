"""What ``keyrelay serve`` says before it serves: which settings file and store it uses, and, for
each pool nobody could use yet (no keys, no client token), the command that fixes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keyrelay.cli.common import display_url
from keyrelay.config import Settings
from keyrelay.stores import Store

__all__ = ["empty_pool_notes", "where_from"]


def where_from(settings: Settings) -> str:
    """``config FILE; store URL`` (no password), for the start-up log."""
    config = settings.source or "none found (built-in defaults; looked for --config, $KEYRELAY_CONFIG, ./keyrelay.toml)"
    return f"config {config}; store {display_url(settings.store_url)}"


def empty_pool_notes(settings: Settings) -> Callable[[Store], Awaitable[list[str]]]:
    """``work`` for ``with_store``: one line per pool without keys, one per pool no token may use."""

    async def work(store: Store) -> list[str]:
        notes = []
        keys = await store.load()
        tokens = [t for t in await store.list_tokens() if not t.revoked]
        for p in settings.pools:
            if not any(k.pool == p.name for k in keys):
                notes.append(
                    f"pool {p.name!r} has no keys: every request to it gets 503 until you run "
                    f"'keyrelay keys add --pool {p.name} KEY' (a running gateway picks them up within a second)"
                )
            scopes = [t.pools for t in settings.tokens] + [t.pools for t in tokens]
            if not any("*" in s or p.name in s for s in scopes):
                notes.append(
                    f"pool {p.name!r} has no client token: every request to it gets 401 until you run "
                    f"'keyrelay tokens create NAME --pool {p.name}'"
                )
        return notes

    return work
