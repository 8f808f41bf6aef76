"""Stores as keyrelay wrote them before schema version 2 (the version of git main at c625891):
the SQLite DDL and Redis layout copied literally from that code, so the upgrade tests open
exactly what a user's old store holds (plaintext secrets, no ``base_url``)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from redis import Redis

V1_DDL = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE keys (
    id TEXT PRIMARY KEY, pool TEXT NOT NULL, secret TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    since REAL NOT NULL DEFAULT 0, until REAL NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1, weight REAL NOT NULL DEFAULT 1,
    label TEXT NOT NULL DEFAULT '', added_at REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, successes INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0, quota_exhausted INTEGER NOT NULL DEFAULT 0,
    invalid_key INTEGER NOT NULL DEFAULT 0, upstream_fault INTEGER NOT NULL DEFAULT 0,
    network_error INTEGER NOT NULL DEFAULT 0, client_error INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    balance REAL NULL, currency TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL
);
CREATE INDEX keys_seq ON keys(seq);
CREATE INDEX keys_pool ON keys(pool);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, pool TEXT NOT NULL,
    at REAL NOT NULL, actor TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_key_seq ON events(key_id, seq);
CREATE TABLE removed (key_id TEXT PRIMARY KEY, pool TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX removed_seq ON removed(seq);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, pools TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL, revoked_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
INSERT INTO meta(name, value) VALUES ('schema_version', 1), ('cursor', 0);
"""


def v1_id(pool: str, secret: str) -> str:
    return "k" + hashlib.sha256(f"{pool}\0{secret}".encode()).hexdigest()[:11]


def write_v1_sqlite(path: Path, pool: str, secrets: Sequence[str], now: float, detail: str = "") -> list[str]:
    """A version-1 file in WAL mode holding ``secrets`` in plaintext, each with an ``added``
    event and a cooling event whose detail is ``detail`` (what v1 stored unredacted). Returns the ids."""
    ids = [v1_id(pool, s) for s in secrets]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(V1_DDL)
        conn.execute("BEGIN")
        for i, (kid, secret) in enumerate(zip(ids, secrets), 1):
            conn.execute(
                "INSERT INTO keys(id, pool, secret, state, since, weight, label, added_at, seq) "
                "VALUES (?, ?, ?, 'active', ?, 1, '', ?, ?)",
                (kid, pool, secret, now, now, i),
            )
            conn.execute(
                "INSERT INTO events(key_id, pool, at, actor, from_state, to_state, reason, detail) "
                "VALUES (?, ?, ?, 'admin', '', 'active', 'added', '')",
                (kid, pool, now),
            )
            conn.execute(
                "INSERT INTO events(key_id, pool, at, actor, from_state, to_state, reason, detail) "
                "VALUES (?, ?, ?, 'probe', 'active', 'active', 'probe ok', ?)",
                (kid, pool, now + 1, detail),
            )
        conn.execute("UPDATE meta SET value = ? WHERE name = 'cursor'", (len(ids),))
        conn.execute("COMMIT")
    return ids


def write_v1_redis(client: Redis, prefix: str, pool: str, secrets: Sequence[str], now: float, detail: str = "") -> list[str]:
    """The version-1 Redis layout (``{prefix}:schema`` = 1, plaintext ``secret`` fields), as
    the old add script wrote it, plus one probe event per key carrying ``detail``."""
    ids = [v1_id(pool, s) for s in secrets]
    client.set(f"{prefix}:schema", 1)
    n = 0
    for seq, (kid, secret) in enumerate(zip(ids, secrets), 1):
        client.hset(f"{prefix}:key:{kid}", mapping={
            "id": kid, "pool": pool, "secret": secret, "state": "active", "reason": "", "since": repr(now),
            "until": "0", "version": 1, "weight": "1.0", "label": "", "added_at": repr(now), "balance": "",
            "currency": "",
        })
        for z in ("changes", "keys", f"pool:{pool}"):
            client.zadd(f"{prefix}:{z}", {kid: seq})
        for ev in ([kid, pool, now, "admin", "", "active", "added", ""],
                   [kid, pool, now + 1, "probe", "active", "active", "probe ok", detail]):
            n += 1
            line = json.dumps([n, *ev])
            client.rpush(f"{prefix}:events", line)
            client.rpush(f"{prefix}:events:{kid}", line)
    client.set(f"{prefix}:seq", len(ids))
    client.set(f"{prefix}:event_seq", n)
    return ids
