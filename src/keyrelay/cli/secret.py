"""``keyrelay keys rotate-secret``: re-encrypt every key of the store under a new secret.

How nothing is lost when it stops midway (a crash, a kill, a lost connection):

- the new secret is written first: to ``<key file>.new`` (0600, fsynced) when the secret comes
  from a key file, or it is already in ``KEYRELAY_NEW_SECRET_KEY``;
- the store re-encrypts every key in one transaction (SQLite: one write transaction; Redis: one
  MULTI/EXEC), together with the fingerprint of the secret: before it commits every key is
  under the old secret, after it every key is under the new one, never a mix;
- then ``<key file>.new`` replaces the key file (an atomic rename).

A store opened after a crash between the last two steps holds the new fingerprint: opening it
finds ``<key file>.new`` and finishes the rename; a ``.new`` file the store never used is removed.
"""

from __future__ import annotations

import os

import click

from keyrelay.cli.common import CliError, config_option, load, plural, with_store
from keyrelay.stores import Store
from keyrelay.stores.crypto import KeyCipher, fsync_dir, new_secret, write_key_file

__all__ = ["rotate_secret"]


@click.command("rotate-secret")
@config_option
def rotate_secret() -> None:
    """Re-encrypt every key under a new secret: a new key file, or KEYRELAY_NEW_SECRET_KEY when
    the secret comes from KEYRELAY_SECRET_KEY. Restart the gateways afterwards."""
    settings = load()
    if settings.store_url.lower().startswith("memory:"):
        raise CliError("a memory:// store keeps nothing at rest: there is no secret to rotate")
    from_env = settings.secret.value is not None
    if from_env and settings.secret.pending is None:
        raise CliError(
            "the secret comes from KEYRELAY_SECRET_KEY: put the new one in KEYRELAY_NEW_SECRET_KEY and run this again"
        )

    async def work(store: Store) -> tuple[int, str, str | None]:
        old: KeyCipher | None = getattr(store, "cipher", None)
        if old is None:
            raise CliError(f"the store {settings.store_url} does not encrypt keys: there is no secret to rotate")
        file: str | None = None
        if from_env:
            new = KeyCipher(settings.secret.pending or "")
        else:
            file = getattr(store, "key_file", None)
            if not file:
                raise CliError("cannot tell which key file this store uses")
            value = new_secret()
            if not write_key_file(f"{file}.new", value):
                raise CliError(f"{file}.new exists: another rotation is running (or remove it and try again)")
            new = KeyCipher(value)
        if new.fingerprint == old.fingerprint:
            raise CliError("the new secret is the one the store already uses")
        # On any failure the .new file stays: the next open keeps it if the store committed the
        # new secret, else removes it (KeyRing.settle).
        count = int(await store.rotate_secret(new))  # type: ignore[attr-defined]
        if file is not None:
            os.replace(f"{file}.new", file)
            fsync_dir(file)
        return count, new.fingerprint, file

    count, fingerprint, file = with_store(settings, work)
    click.echo(f"re-encrypted {plural(count, 'key')} under the new secret (fingerprint {fingerprint})")
    if file is not None:
        click.echo(f"the key file {file} now holds the new secret; the old one opens nothing any more")
    else:
        click.echo("set KEYRELAY_SECRET_KEY to the value of KEYRELAY_NEW_SECRET_KEY: the old secret opens nothing any more")
    click.echo("restart the gateways so they read the keys with the new secret")
