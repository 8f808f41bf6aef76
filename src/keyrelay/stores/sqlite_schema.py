"""The SQLite layout of :class:`keyrelay.stores.sqlite.SQLiteStore`: its tables, the schema
version, how the schema is created or checked on open, and how rows map to records.

Tables::

    meta      name → value: ``schema_version``, and ``cursor`` (the ``changes()`` cursor)
    keys      one row per key: the record's fields (counters apart), and ``seq``, the
              cursor value of its last add, import or transition
    events    every event, numbered by ``seq`` (AUTOINCREMENT)
    removed   removed key id → pool, and ``seq`` of its removal
    tokens    client tokens; ``pools`` is a JSON list, ``revoked_at`` 0 while live, ``admin`` 1
              for an admin token
    usage     (step, t, scope) → counters: usage over time in minute and hour buckets
    counters  key id → its counters (version 4; a key without a row has counted nothing yet)
    locks     name → owner, expires_at (the writer's clock)
    cipher    one row: the fingerprint of the secret the keys are encrypted with (version 2)

Since version 2 ``keys.secret`` holds the key encrypted (:mod:`keyrelay.stores.crypto`) and
``keys.lookup`` its keyed hash (unique: how duplicates are found).

On open, a file written by a newer keyrelay (a ``schema_version`` above :data:`SCHEMA_VERSION`)
is refused. Otherwise the version-1 tables are created if missing (``CREATE … IF NOT EXISTS``)
and every step of :data:`UPGRADES` above the file's version runs, in order, inside the same
write transaction as the version bump: a file is either wholly upgraded or left as it was. A
new file starts at version 1 and takes the same steps, so there is one path to every layout.

Versions: 1 the first layout; 2 adds ``keys.base_url`` (a key's own upstream URL) and encrypts
the keys (``keys.lookup``, table ``cipher``; events are redacted with their key's secret);
3 adds ``tokens.admin`` (admin tokens), the ``usage`` table (scope, step, bucket start →
counters; see :mod:`keyrelay.stores.usage`) and an index of events by pool; 4 moves the counters
out of ``keys`` into the narrow table ``counters``, read with ``keys`` through :data:`KEYS`: a
flush adding to 20,000 of 100,000 keys rewrote nearly every page of the wide ``keys`` rows
(docs/design.md, "100,000 keys"); 5 keys the usage buckets by time first, so that a flush
writes its rows side by side (:func:`_to_5`).
To add version N: write ``_to_N(conn, upgrade)`` and add ``N: _to_N`` to :data:`UPGRADES`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keyrelay.core.masking import redact
from keyrelay.core.model import COUNTER_FIELDS, Counters, KeyRecord, KeyState
from keyrelay.stores.base import TokenRecord
from keyrelay.stores.crypto import KeyCipher, KeyRing

__all__ = [
    "ADD_COUNTERS",
    "EVENT_COLUMNS",
    "HOUR_OF",
    "INSERT_COLUMNS",
    "KEYS",
    "KEYS_FROM",
    "KEYS_TO",
    "KEY_COLUMNS",
    "SCHEMA_VERSION",
    "TOKEN_COLUMNS",
    "UPGRADES",
    "ZERO",
    "Upgrade",
    "create_schema",
    "record_of",
    "reencrypt",
    "row_of",
    "token_of",
]

_RECORD_COLUMNS = "id, pool, secret, state, reason, since, until, version, weight, label, added_at"
_TAIL_COLUMNS = "balance, currency, base_url"
_COUNTER_COLUMNS = ", ".join(COUNTER_FIELDS)
#: a record's columns, read from :data:`KEYS`
KEY_COLUMNS = f"{_RECORD_COLUMNS}, {', '.join(f'ifnull(counters.{c}, 0)' for c in COUNTER_FIELDS)}, {_TAIL_COLUMNS}"
#: the keys with their counters (version 4)
KEYS = "keys LEFT JOIN counters USING (id)"
#: the columns :func:`row_of` gives values for (the counters go to ``counters``)
INSERT_COLUMNS = f"{_RECORD_COLUMNS}, {_TAIL_COLUMNS}, lookup"
#: adds to a key's counters (its id, then the values in ``COUNTER_FIELDS`` order) if the key exists
ADD_COUNTERS = (
    f"INSERT INTO counters(id, {_COUNTER_COLUMNS}) SELECT ?1, {', '.join(f'?{i + 2}' for i in range(len(COUNTER_FIELDS)))} "
    "WHERE EXISTS (SELECT 1 FROM keys WHERE id = ?1) "
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in COUNTER_FIELDS)}"
)
EVENT_COLUMNS = "key_id, pool, at, actor, from_state, to_state, reason, detail"
TOKEN_COLUMNS = "id, name, pools, token_hash, created_at, revoked_at, admin"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, pool TEXT NOT NULL, secret TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    since REAL NOT NULL DEFAULT 0, until REAL NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1, weight REAL NOT NULL DEFAULT 1,
    label TEXT NOT NULL DEFAULT '', added_at REAL NOT NULL DEFAULT 0,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTER_FIELDS)},
    balance REAL NULL, currency TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_seq ON keys(seq);
CREATE INDEX IF NOT EXISTS keys_pool ON keys(pool);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, pool TEXT NOT NULL,
    at REAL NOT NULL, actor TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_key_seq ON events(key_id, seq);
CREATE TABLE IF NOT EXISTS removed (key_id TEXT PRIMARY KEY, pool TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_seq ON removed(seq);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, pools TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL, revoked_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
INSERT OR IGNORE INTO meta(name, value) VALUES ('schema_version', 1), ('cursor', 0);
"""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What an upgrade step may need besides the connection."""

    path: str
    cipher: KeyCipher


def _to_2(conn: sqlite3.Connection, upgrade: Upgrade) -> None:
    """Version 2: a key may carry its own upstream base URL (NULL: its pool's); keys are
    encrypted and found by their keyed hash; events lose the plaintext keys v1 let in."""
    cipher = upgrade.cipher
    conn.execute("ALTER TABLE keys ADD COLUMN base_url TEXT NULL")
    conn.execute("ALTER TABLE keys ADD COLUMN lookup TEXT NULL")
    conn.execute("CREATE TABLE cipher (fingerprint TEXT NOT NULL)")
    conn.execute("INSERT INTO cipher(fingerprint) VALUES (?)", (cipher.fingerprint,))
    plain = dict(conn.execute("SELECT id, secret FROM keys").fetchall())
    conn.executemany(
        "UPDATE keys SET secret = ?, lookup = ? WHERE id = ?",
        [(cipher.seal(kid, s), cipher.lookup(pool, s), kid) for kid, pool, s in
         ((kid, pool, plain[kid]) for kid, pool in conn.execute("SELECT id, pool FROM keys").fetchall())],
    )
    conn.execute("CREATE UNIQUE INDEX keys_lookup ON keys(lookup)")
    fixed = []
    for seq, key_id, reason, detail in conn.execute("SELECT seq, key_id, reason, detail FROM events").fetchall():
        own = [plain[key_id]] if key_id in plain else []
        new_reason, new_detail = redact(reason, own), redact(detail, own)
        if (new_reason, new_detail) != (reason, detail):
            fixed.append((new_reason, new_detail, seq))
    conn.executemany("UPDATE events SET reason = ?, detail = ? WHERE seq = ?", fixed)


def _to_3(conn: sqlite3.Connection, upgrade: Upgrade) -> None:
    """Version 3: admin tokens, usage buckets (stores/usage.py), events found by pool."""
    conn.execute("ALTER TABLE tokens ADD COLUMN admin INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "CREATE TABLE usage (scope TEXT NOT NULL, step INTEGER NOT NULL, t REAL NOT NULL, "
        + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTER_FIELDS)
        + ", PRIMARY KEY (scope, step, t)) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX usage_age ON usage(step, t)")
    conn.execute("CREATE INDEX events_pool_seq ON events(pool, seq)")


def _to_4(conn: sqlite3.Connection, upgrade: Upgrade) -> None:
    """Version 4: counters in a narrow table of their own (a flush rewrites those rows only)."""
    conn.execute(
        f"CREATE TABLE counters (id TEXT PRIMARY KEY, {', '.join(f'{c} INTEGER NOT NULL DEFAULT 0' for c in COUNTER_FIELDS)})"
        " WITHOUT ROWID"
    )
    conn.execute(
        f"INSERT INTO counters(id, {_COUNTER_COLUMNS}) SELECT id, {_COUNTER_COLUMNS} FROM keys "
        f"WHERE {' OR '.join(f'{c} != 0' for c in COUNTER_FIELDS)}"
    )
    for c in COUNTER_FIELDS:
        conn.execute(f"ALTER TABLE keys DROP COLUMN {c}")


def _to_5(conn: sqlite3.Connection, upgrade: Upgrade) -> None:
    """Version 5: usage buckets keyed by (step, t, scope). Keyed by scope first, a flush's rows
    for one minute were scattered over every key's history (with 100,000 keys and an hour of
    buckets, ~26 µs a row against ~3 µs when they land side by side: docs/design.md, "Usage
    buckets"); the old buckets are the front of the key, so no second index is needed to prune."""
    cols = ", ".join(COUNTER_FIELDS)
    conn.execute(
        "CREATE TABLE usage_by_time (step INTEGER NOT NULL, t REAL NOT NULL, scope TEXT NOT NULL, "
        + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTER_FIELDS)
        + ", PRIMARY KEY (step, t, scope)) WITHOUT ROWID"
    )
    conn.execute(f"INSERT INTO usage_by_time(step, t, scope, {cols}) SELECT step, t, scope, {cols} FROM usage ORDER BY step, t, scope")
    conn.execute("DROP TABLE usage")  # and its index usage_age
    conn.execute("ALTER TABLE usage_by_time RENAME TO usage")
    # a key's hour buckets were written with every flush, so they already hold its minutes; from
    # now on a key's minutes are summed into its hours when folded (sqlite_usage.write_usage)
    minutes = (
        f"SELECT scope, {HOUR_OF} AS h, {', '.join(f'sum({c}) AS {c}' for c in COUNTER_FIELDS)} FROM usage "
        f"WHERE step = 60 AND scope >= '{KEYS_FROM}' AND scope < '{KEYS_TO}' GROUP BY scope, h"
    )
    conn.execute(
        f"UPDATE usage SET {', '.join(f'{c} = max(0, usage.{c} - m.{c})' for c in COUNTER_FIELDS)} FROM ({minutes}) AS m "
        "WHERE usage.step = 3600 AND usage.t = m.h AND usage.scope = m.scope"
    )


#: key scopes of the usage table sort between these two (``key:<id>``; ``;`` follows ``:``)
KEYS_FROM, KEYS_TO = "key:", "key;"
#: a minute bucket's hour (``t`` is a whole number of seconds, kept as REAL)
HOUR_OF = "CAST(CAST(t AS INTEGER) / 3600 * 3600 AS REAL)"


#: target version → the step that brings a file from the version before it; run in order.
UPGRADES: dict[int, Callable[[sqlite3.Connection, Upgrade], None]] = {
    2: _to_2,
    3: _to_3,
    4: _to_4,
    5: _to_5,
}
SCHEMA_VERSION = max(UPGRADES)


def create_schema(path: str, ring: KeyRing, conn: sqlite3.Connection) -> tuple[int, KeyCipher]:
    """Create the tables of a new file, or check an existing file's version and upgrade it
    (inside the caller's write transaction). Returns the version found (0 for a new file) and
    the cipher of the file's keys."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    if row is not None and row[0] > SCHEMA_VERSION:
        raise RuntimeError(
            f"the SQLite store {path!r} has schema version {row[0]}, newer than the "
            f"{SCHEMA_VERSION} this keyrelay supports: upgrade keyrelay to use it"
        )
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    (found,) = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    if found >= 2:
        row = conn.execute("SELECT fingerprint FROM cipher").fetchone()
        empty = conn.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is None
        cipher = ring.settle(row[0] if row else None, path, empty)
        if row is None or row[0] != cipher.fingerprint:  # a file without keys takes the secret given
            conn.execute("DELETE FROM cipher")
            conn.execute("INSERT INTO cipher(fingerprint) VALUES (?)", (cipher.fingerprint,))
    else:
        cipher = ring.settle(None, path, True)
    upgrade = Upgrade(path, cipher)
    for version in sorted(v for v in UPGRADES if v > found):
        UPGRADES[version](conn, upgrade)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (version,))
    return (int(found) if row is not None else 0), cipher


def reencrypt(old: KeyCipher, new: KeyCipher, conn: sqlite3.Connection) -> int:
    """Every key decrypted with ``old`` and encrypted with ``new``, its keyed hash and the
    file's fingerprint updated (inside the caller's write transaction); how many keys."""
    updates = []
    for kid, pool, sealed in conn.execute("SELECT id, pool, secret FROM keys").fetchall():
        secret = old.open(kid, sealed)
        updates.append((new.seal(kid, secret), new.lookup(pool, secret), kid))
    conn.executemany("UPDATE keys SET secret = ?, lookup = ? WHERE id = ?", updates)
    conn.execute("UPDATE cipher SET fingerprint = ?", (new.fingerprint,))
    return len(updates)


# -- rows <-> records -------------------------------------------------------------------------

ZERO = Counters()  # frozen: one shared instance, not an allocation per key on a big load
_N = len(COUNTER_FIELDS)


def record_of(row: Sequence[Any], cipher: KeyCipher) -> KeyRecord:
    """A record from the values of ``KEY_COLUMNS``, its key decrypted."""
    counts = row[11:11 + _N]
    return KeyRecord(
        row[0], row[1], cipher.open(row[0], row[2]), KeyState(row[3]), row[4], row[5], row[6], row[7], row[8], row[9], row[10],
        Counters(*counts) if any(counts) else ZERO, row[11 + _N], row[12 + _N], row[13 + _N],
    )


def token_of(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4], row[5], bool(row[6]))


def row_of(r: KeyRecord, cipher: KeyCipher) -> tuple[object, ...]:
    """A record as the values of :data:`INSERT_COLUMNS` (its counters apart), the inverse of :func:`record_of`."""
    return (
        r.id, r.pool, cipher.seal(r.id, r.secret), r.state.value, r.reason, r.since, r.until, r.version, r.weight, r.label,
        r.added_at, r.balance, r.currency, r.base_url, cipher.lookup(r.pool, r.secret),
    )
