"""Client tokens and migration imports of :class:`keyrelay.stores.sqlite.SQLiteStore` (a mixin,
to keep that module short). Tables: :mod:`keyrelay.stores.sqlite_schema`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keyrelay.core.model import Event, KeyRecord
from keyrelay.stores.base import TokenRecord, refuse_import
from keyrelay.stores.evidence import scrub_event
from keyrelay.stores.sqlite_base import CHUNK, SQLiteParts, bump, insert_events
from keyrelay.stores.sqlite_schema import ADD_COUNTERS, INSERT_COLUMNS, TOKEN_COLUMNS, row_of, token_of

__all__ = ["SQLiteTokens"]


class SQLiteTokens(SQLiteParts):
    # -- client tokens ---------------------------------------------------------------------
    async def create_token(
        self, name: str, pools: Sequence[str], token_hash: str, now: float, *, admin: bool = False
    ) -> TokenRecord:
        rec = TokenRecord("t" + token_hash[:10], name, tuple(pools), token_hash, now, admin=admin)

        def write(conn: sqlite3.Connection) -> TokenRecord:
            if conn.execute("SELECT 1 FROM tokens WHERE name = ? AND revoked_at <= 0", (name,)).fetchone():
                raise ValueError(f"a live token named {name!r} already exists")
            # REPLACE, like MemoryStore: a token with the same id (hash prefix) is overwritten.
            conn.execute(
                f"INSERT OR REPLACE INTO tokens({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (rec.id, name, json.dumps(list(rec.pools)), token_hash, now, int(admin)),
            )
            return rec

        return await self._write(write)

    async def list_tokens(self) -> list[TokenRecord]:
        def read(conn: sqlite3.Connection) -> list[TokenRecord]:
            return [token_of(r) for r in conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, rowid")]

        return await self._run(read)

    async def revoke_token(self, name_or_id: str, now: float) -> bool:
        sql = (
            "UPDATE tokens SET revoked_at = ? WHERE id = (SELECT id FROM tokens "
            "WHERE (id = ? OR name = ?) AND revoked_at <= 0 ORDER BY rowid LIMIT 1)"
        )

        def write(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, (now, name_or_id, name_or_id)).rowcount > 0

        return await self._write(write)

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        sql = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ? AND token_hash = ? AND revoked_at <= 0"

        def read(conn: sqlite3.Connection) -> TokenRecord | None:
            row = conn.execute(sql, ("t" + token_hash[:10], token_hash)).fetchone()
            return None if row is None else token_of(row)

        return await self._run(read)

    # -- migration -------------------------------------------------------------------------
    async def import_records(
        self, records: Sequence[KeyRecord], events: Sequence[Event], tokens: Sequence[TokenRecord]
    ) -> None:
        cipher = self.cipher

        def write(conn: sqlite3.Connection) -> None:
            ids = [r.id for r in records]
            taken = [
                row[0]
                for i in range(0, len(ids), CHUNK)
                for row in conn.execute(
                    f"SELECT id FROM keys WHERE id IN ({', '.join('?' * len(ids[i:i + CHUNK]))})", ids[i:i + CHUNK]
                )
            ]
            held = {r[0]: r[1] for r in conn.execute("SELECT id, revoked_at FROM tokens")}
            live = {r[0] for r in conn.execute("SELECT name FROM tokens WHERE revoked_at <= 0")}
            taken += [t.id for t in tokens if t.id in held]
            taken += [f"live token {t.name!r}" for t in tokens if not t.revoked and t.name in live]
            refuse_import(records, tokens, taken)
            if records:
                first = bump(conn, len(records))
                conn.executemany(
                    f"INSERT INTO keys({INSERT_COLUMNS}, seq) VALUES ({', '.join('?' * 16)})",
                    (row_of(r, cipher) + (first + i,) for i, r in enumerate(records)),
                )
                conn.executemany(ADD_COUNTERS, ((r.id, *r.counters.values()) for r in records if any(r.counters.values())))
                conn.execute("DELETE FROM removed WHERE EXISTS (SELECT 1 FROM keys WHERE keys.id = removed.key_id)")
            secrets = {r.id: r.secret for r in records}
            scrubbed = (scrub_event(e, [secrets[e.key_id]] if e.key_id in secrets else []) for e in events)
            insert_events(
                conn, [(e.key_id, e.pool, e.at, e.actor, e.from_state, e.to_state, e.reason, e.detail) for e in scrubbed]
            )
            conn.executemany(
                f"INSERT INTO tokens({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (t.id, t.name, json.dumps(list(t.pools)), t.token_hash, t.created_at, t.revoked_at, int(t.admin))
                    for t in sorted(tokens, key=lambda t: t.created_at)
                ),
            )

        await self._write(write)
