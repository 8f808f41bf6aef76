"""``keyrelay tokens …``: client tokens for the gateway, and admin tokens for its admin API
(``--admin``). Only their sha256 is ever stored."""

from __future__ import annotations

import secrets
import time

import click

from keyrelay.cli.common import (
    CliError,
    config_option,
    echo_json,
    fmt_time,
    iso,
    load,
    print_table,
    require_pool,
    shown,
    with_store,
)
from keyrelay.stores import Store, TokenRecord, hash_token

__all__ = ["new_token", "tokens"]


def new_token() -> str:
    return "kr-" + secrets.token_urlsafe(32)


def _token_json(t: TokenRecord) -> dict[str, object]:
    return {
        "name": t.name,
        "id": t.id,
        "pools": list(t.pools),
        "created_at": t.created_at,
        "created": iso(t.created_at),
        "revoked": t.revoked,
        "revoked_at": t.revoked_at if t.revoked else None,
        "admin": t.admin,
    }


@click.group()
@config_option
def tokens() -> None:
    """Client tokens: create, list, revoke."""


@tokens.command("create")
@config_option
@click.argument("name")
@click.option("--pool", "pools", multiple=True, metavar="POOL", help="A pool the token may use (repeatable).")
@click.option("--all-pools", is_flag=True, help="The token may use every pool, present and future.")
@click.option("--admin", is_flag=True,
              help="An admin token: for the admin API and dashboard (/admin/), never for proxy routes.")
def create(name: str, pools: tuple[str, ...], all_pools: bool, admin: bool) -> None:
    """Create a token named NAME. It is printed once, alone on the last line; only its hash is kept."""
    if admin and (pools or all_pools):
        raise click.UsageError("an --admin token uses no pool: give --admin alone")
    if all_pools and pools:
        raise click.UsageError("give --pool or --all-pools, not both")
    if not admin and not all_pools and not pools:
        raise click.UsageError("give at least one --pool, or --all-pools (or --admin for an admin token)")
    if not name.strip() or any(not c.isprintable() for c in name):
        raise click.BadParameter("must be a non-empty printable name", param_hint="NAME")
    settings = load()
    chosen: list[str] = ["*"] if all_pools else list(dict.fromkeys(require_pool(settings, p) for p in pools))
    token = new_token()

    async def work(store: Store) -> TokenRecord:
        try:
            return await store.create_token(name, [] if admin else chosen, hash_token(token), time.time(), admin=admin)
        except ValueError as exc:  # a live token with this name exists
            raise CliError(str(exc)) from None

    rec = with_store(settings, work)
    scope = "the admin API" if admin else "every pool" if all_pools else "pools " + ", ".join(rec.pools)
    click.echo(f"created {'admin ' if admin else ''}token {rec.name!r} (id {rec.id}) for {scope}.")
    click.echo("Store it now: it is shown only this once (keyrelay keeps only its sha256).")
    click.echo(token)


@tokens.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array of tokens (never a hash).")
def list_(as_json: bool) -> None:
    """Tokens in the store (tokens declared in the config file are not listed)."""
    settings = load()

    async def work(store: Store) -> list[TokenRecord]:
        return await store.list_tokens()

    toks = with_store(settings, work, existing=True)
    if as_json:
        echo_json([_token_json(t) for t in toks])
        return
    if not toks:
        click.echo("no tokens")
        return
    rows = [
        (t.name, t.id, "admin" if t.admin else ", ".join(t.pools), fmt_time(t.created_at),
         fmt_time(t.revoked_at) if t.revoked else "")
        for t in toks
    ]
    print_table(("name", "id", "pools", "created", "revoked"), rows)


@tokens.command("revoke")
@config_option
@click.argument("name_or_id", metavar="NAME_OR_ID")
def revoke(name_or_id: str) -> None:
    """Revoke a live token by name or id (or given the token itself).

    Running gateways stop accepting it shortly after."""
    settings = load()

    async def work(store: Store) -> TokenRecord | None:
        live = [t for t in await store.list_tokens() if not t.revoked and name_or_id in (t.id, t.name)]
        if not live:  # the token itself, pasted (say, after a leak)?
            found = await store.find_token(hash_token(name_or_id))
            live = [found] if found is not None else []
        if not live or not await store.revoke_token(live[0].id, time.time()):
            return None
        return live[0]

    rec = with_store(settings, work, existing=True)
    if rec is None:
        raise CliError(f"no live token named or with id {shown(name_or_id)}")
    click.echo(f"revoked token {rec.name!r} (id {rec.id})")
