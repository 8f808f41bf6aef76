"""``keyrelay migrate --from URL --to URL``: copy a whole store into another (e.g. SQLite → Redis).

Exit codes: 0 copied and verified; 1 aborted, or a store failed or did not match afterwards;
2 a usage error, a store that cannot be opened, or a destination that already holds some of
the keys or tokens (then nothing is copied).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import click

from keyrelay.cli.common import CliError, CliFailure, display_url, load, open_cli_store, plural, require_existing
from keyrelay.core.masking import redact
from keyrelay.exceptions import StoreError
from keyrelay.migrate import MigrateReport
from keyrelay.migrate import migrate as copy_store
from keyrelay.stores import SecretSource

__all__ = ["migrate"]


def _pools(keys: dict[str, int]) -> str:
    return ", ".join(f"{pool} {n}" for pool, n in sorted(keys.items())) or "none"


async def _run(src_url: str, dst_url: str, yes: bool, secrets: tuple[SecretSource, SecretSource]) -> MigrateReport:
    shown_src, shown_dst = display_url(src_url), display_url(dst_url)
    require_existing(src_url)  # copying from a store that is not there must not create it
    src = await open_cli_store(src_url, secrets[0], create=False)
    try:
        dst = await open_cli_store(dst_url, secrets[1], announce=True)
        try:
            if not yes:
                pools = Counter(r.pool for r in await src.load())
                events, tokens = len(await src.events(limit=0)), len(await src.list_tokens())
                click.confirm(
                    f"copy {plural(pools.total(), 'key')} (by pool: {_pools(dict(pools))}), "
                    f"{plural(events, 'event')} and {plural(tokens, 'token')} from {shown_src} into {shown_dst}?",
                    abort=True,
                    err=True,
                )
            try:
                return await copy_store(src, dst)
            except ValueError as exc:  # the destination already holds some of it: nothing copied
                raise CliError(redact(str(exc))) from None
            except (StoreError, OSError) as exc:
                raise CliFailure(f"migration failed: {redact(str(exc)) or type(exc).__name__}") from None
        finally:
            await dst.close()
    finally:
        await src.close()


@click.command()
@click.option("--from", "src_url", required=True, metavar="URL", help="The store to copy from (only read).")
@click.option("--to", "dst_url", required=True, metavar="URL", help="The store to copy into.")
@click.option("--from-secret-file", "src_file", metavar="FILE", default=None,
              help="The key file the source's keys are encrypted with (default: KEYRELAY_SECRET_KEY, else its own).")
@click.option("--to-secret-file", "dst_file", metavar="FILE", default=None,
              help="The key file to encrypt the copied keys with (default: KEYRELAY_SECRET_KEY, else its own).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def migrate(src_url: str, dst_url: str, src_file: str | None, dst_file: str | None, yes: bool) -> None:
    """Copy every key (state, history, counters, balance, base URL) and client token from one
    store into another, then check the counts. Keys are decrypted with the source's secret and
    encrypted with the destination's. Stop the gateways first; the destination must not hold
    any of the keys or tokens yet."""
    if src_url == dst_url:
        raise click.UsageError("--from and --to name the same store")
    if any(u.lower().startswith("memory:") for u in (src_url, dst_url)):
        raise click.UsageError("a memory:// store lives in one process: there is nothing to copy from or into")
    settings = load()

    def secret(url: str, file: str | None) -> SecretSource:
        if file:
            return SecretSource(None, file)
        return settings.secret if url == settings.store_url else SecretSource(settings.secret.value)

    secrets = (secret(src_url, src_file), secret(dst_url, dst_file))
    report = asyncio.run(_run(src_url, dst_url, yes, secrets))
    click.echo(
        f"copied {plural(report.total_keys, 'key')} (by pool: {_pools(report.keys)}), "
        f"{plural(report.events, 'event')} and {plural(report.tokens, 'token')} "
        f"from {display_url(src_url)} into {display_url(dst_url)}; counts verified."
    )
