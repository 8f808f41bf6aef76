"""The files of a :class:`keyrelay.stores.sqlite.SQLiteStore`: where its URL points, their
mode (0600), and wiping old pages out of them (after an upgrade from plaintext or a rotation)."""

from __future__ import annotations

import logging
import os
import sqlite3

__all__ = ["path_of", "private", "scrub"]

log = logging.getLogger("keyrelay.store")

_PREFIX = "sqlite:///"


def path_of(url: str) -> str:
    """What follows ``sqlite:///``, as SQLAlchemy reads it: relative, or absolute with a 4th slash."""
    if not url.startswith(_PREFIX) or len(url) == len(_PREFIX):
        raise ValueError(f"expected sqlite:///relative/path.db or sqlite:////absolute/path.db, got {url!r}")
    path = url[len(_PREFIX):]
    if "?" in path:
        raise ValueError(f"query parameters are not supported in a sqlite store URL: {url!r}")
    return path


def private(path: str) -> None:
    """Create ``path`` with mode 0600 if it does not exist (SQLite gives its WAL and shm files
    the mode of the database file); make the files of an existing store 0600 too."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:  # someone else's file: say so, do not fail
            log.warning("cannot make %s private (mode 0600): it belongs to another user", name)


def scrub(conn: sqlite3.Connection) -> None:
    """Leave no old page in the files: fold the WAL into the database and truncate it, rebuild
    the database (VACUUM), and truncate the WAL again."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy and busy[0]:
        log.warning("another process holds the SQLite store open: its WAL is truncated when that process ends")
