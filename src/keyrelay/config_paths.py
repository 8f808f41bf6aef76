"""Where the settings file and a SQLite store are: ``--config``, then ``$KEYRELAY_CONFIG``, then
``./keyrelay.toml``, then ``keyrelay.toml`` in the user's config directory (``platformdirs``:
``~/.config/keyrelay/`` on Linux); a relative ``sqlite:///`` path in a file is relative to the
file's directory. Used by :func:`keyrelay.config.load_settings` and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["CONFIG_NAME", "find_config", "next_to", "sqlite_path", "user_config_file"]

CONFIG_NAME = "keyrelay.toml"


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` store URL (relative or absolute), else ``None``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix) or "?" in url:
        return None
    path = url[len(prefix):]
    return None if path == ":memory:" else path


def next_to(url: str, directory: Path) -> str:
    """``url``, its relative SQLite path made absolute against ``directory``."""
    path = sqlite_path(url)
    if path is None or Path(path).is_absolute():
        return url
    return "sqlite:///" + str((directory / path).absolute())


def user_config_file() -> Path:
    """``keyrelay.toml`` in the user's config directory (it need not exist)."""
    import platformdirs

    return platformdirs.user_config_path("keyrelay") / CONFIG_NAME


def find_config(
    path: str | None, environ: Mapping[str, str], cwd: Path | None = None, user_file: Path | None = None
) -> str | None:
    """The settings file to read: ``path`` (``--config``), ``$KEYRELAY_CONFIG``, ``./keyrelay.toml``,
    the user's ``keyrelay.toml``; ``None`` when there is none (built-in defaults)."""
    if path:
        return path
    if environ.get("KEYRELAY_CONFIG"):
        return environ["KEYRELAY_CONFIG"]
    here = (cwd or Path.cwd()) / CONFIG_NAME
    if here.is_file():
        return CONFIG_NAME if cwd is None else str(here)
    mine = user_file if user_file is not None else user_config_file()
    return str(mine) if mine.is_file() else None
