"""Helpers for the CLI tests: a config file naming a SQLite store in ``tmp_path``, a CliRunner
invocation isolated from the caller's ``KEYRELAY_*`` environment, and direct store access."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

from click.testing import CliRunner, Result

from keyrelay.cli.main import cli
from keyrelay.stores.sqlite import SQLiteStore

T = TypeVar("T")

def _keyrelay_command() -> list[str]:
    """The installed ``keyrelay`` of the Python running the tests: the console script next to the
    interpreter (or on PATH when it is this install's), else ``python -m keyrelay``."""
    here = shutil.which("keyrelay", path=os.path.dirname(sys.executable))
    return [here] if here else [sys.executable, "-m", "keyrelay"]


#: how the end-to-end CLI tests run the real command
KEYRELAY: list[str] = _keyrelay_command()


def make_config(tmp_path: Path, pools: tuple[str, ...] = ("openai", "groq"), extra: str = "") -> Path:
    """A settings file with these pools and a SQLite store at ``tmp_path/k.db``."""
    lines = [f'[store]\nurl = "sqlite:///{tmp_path / "k.db"}"\n']
    for i, name in enumerate(pools):
        lines.append(f'[[pools]]\nname = "{name}"\n' + ("default = true\n" if i == 0 else ""))
    path = tmp_path / "keyrelay.toml"
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """CliRunner ``env``: every ``KEYRELAY_*`` variable of this process unset, plus ``extra``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KEYRELAY_")}
    env.update(extra or {})
    return env


def invoke(cfg: Path | None, *args: str, input: str | bytes | None = None, env: Mapping[str, str] | None = None) -> Result:
    """``keyrelay ARGS… --config CFG`` in process. Unexpected exceptions propagate (no traceback
    may hide behind an exit code)."""
    argv = [*args, "--config", str(cfg)] if cfg is not None else list(args)
    return CliRunner().invoke(cli, argv, input=input, env=clean_env(env), catch_exceptions=False)


def new_secret(prefix: str = "sk-proj-") -> str:
    return prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


def with_db(tmp_path: Path, work: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Run ``work`` against the SQLite store the config of :func:`make_config` names."""

    async def run() -> T:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'k.db'}")
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def db_bytes(tmp_path: Path) -> bytes:
    """Everything SQLite wrote: the database file and its WAL / shared-memory files."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("k.db*")))
