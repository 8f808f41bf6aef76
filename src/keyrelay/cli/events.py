"""``keyrelay events``: the history of key state changes."""

from __future__ import annotations

from collections.abc import Sequence

import click

from keyrelay.cli.common import config_option, echo_json, event_json, fmt_time, load, print_table, shown, with_store
from keyrelay.core.model import Event
from keyrelay.stores import Store
from keyrelay.stores.evidence import scrub_event

__all__ = ["events", "print_events", "scrubbed"]


async def scrubbed(store: Store, evs: Sequence[Event]) -> list[Event]:
    """``evs`` with their keys taken out of reason and detail, whatever an older keyrelay (or
    another writer) let in: each event is scrubbed with its own key's secret."""
    ids = {e.key_id for e in evs}
    if len(ids) > 200:
        secrets = {r.id: r.secret for r in await store.load() if r.id in ids}
    else:
        secrets = {kid: rec.secret for kid in ids if (rec := await store.get(kid)) is not None}
    return [scrub_event(e, [secrets[e.key_id]] if e.key_id in secrets else []) for e in evs]


def print_events(evs: Sequence[Event], title: str | None = None) -> None:
    rows = [
        (fmt_time(e.at), e.key_id, e.pool, e.actor, f"{e.from_state or '(new)'} → {e.to_state}", e.reason, e.detail)
        for e in evs
    ]
    print_table(("time", "key", "pool", "actor", "change", "reason", "detail"), rows, title=title)


@click.command()
@config_option
@click.option("--key", "key_id", metavar="ID", default=None, help="Only this key's history.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="The last N events (0: all)."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array (oldest first).")
def events(key_id: str | None, limit: int, as_json: bool) -> None:
    """Key state changes, oldest first: time, key, pool, actor, from → to, reason, detail."""
    settings = load()

    async def work(store: Store) -> list[Event]:
        return await scrubbed(store, await store.events(key_id, limit))

    evs = with_store(settings, work, existing=True)
    if as_json:
        echo_json([event_json(e) for e in evs])
        return
    if not evs:
        click.echo("no events" + (f" for key {shown(key_id)}" if key_id else ""))
        return
    print_events(evs)
