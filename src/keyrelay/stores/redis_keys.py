"""The Redis layout of :class:`keyrelay.stores.redis.RedisStore`: every key name (built here and
nowhere else, like arq's ``constants.py``) and how records and events are encoded in them. The
Lua scripts that change them atomically are in :mod:`keyrelay.stores.redis_scripts`.

With the default prefix ``keyrelay``::

    keyrelay:schema            string  layout version (see redis_schema.py)
    keyrelay:cipher            string  fingerprint of the secret the keys are encrypted with (v2)
    keyrelay:key:{id}          hash    one key: id pool secret state reason since until version
                                       weight label added_at balance currency base_url ('' for
                                       none; version 2) lookup + one field per counter; since
                                       version 2 ``secret`` is encrypted and ``lookup`` its keyed
                                       hash (see keyrelay.stores.crypto)
    keyrelay:lookup            hash    keyed hash of a key → its id (how duplicates are found)
    keyrelay:keys              zset    every key id → the change seq it was added at (load order)
    keyrelay:pool:{pool}       zset    the key ids of one pool → the same score
    keyrelay:seq               string  the global change sequence (the ``changes()`` cursor)
    keyrelay:changes           zset    live key id → seq of its last add/transition
    keyrelay:removed           zset    removed key id → seq of its removal
    keyrelay:event_seq         string  the last event number
    keyrelay:events            list    every event, oldest first, capped (MAX_EVENTS)
    keyrelay:events:{id}       list    one key's events, capped (MAX_KEY_EVENTS); kept after removal
    keyrelay:tokens            hash    token id → JSON [n, id, name, pools, token_hash, created_at]
    keyrelay:token_names       hash    name → id, live tokens only (name uniqueness)
    keyrelay:token_revoked     hash    token id → revoked_at, revoked tokens only
    keyrelay:token_seq         string  creation counter (orders tokens created in the same second)
    keyrelay:lock:{name}       hash    owner, expires (the writer's clock); expires in Redis a
                                       minute after that, only to clear out forgotten locks
    keyrelay:changed           channel PUBLISHed "<origin> <seq>" after every change
    keyrelay:usage:{step}:{t}:{scope}  hash  one usage bucket (counter → n); expires after its
                                       retention (stores/usage.py)

Layout version 3 added admin tokens (a 7th element, ``admin``, in a token's JSON; absent = a
client token) and the usage buckets: nothing to rewrite (see redis_schema._to_3).

Events are stored as JSON arrays ``[seq, key_id, pool, at, actor, from, to, reason, detail]``;
the scripts only prepend the number, so floats keep the exact text Python wrote (Lua's own
number formatting keeps 14 digits: it never formats a time). Only plain strings, hashes, sorted
sets, lists, ``PUBLISH`` and ``cjson.decode`` are used: Redis ≥ 6 and Valkey, no modules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyrelay.core.model import COUNTER_FIELDS, Counters, Event, KeyRecord, KeyState
from keyrelay.stores.crypto import KeyCipher

__all__ = [
    "FIELDS",
    "MAX_EVENTS",
    "MAX_KEY_EVENTS",
    "Names",
    "event_json",
    "event_of",
    "hash_of",
    "num",
    "pairs_of",
    "record_of_hash",
    "record_of_values",
    "split_url",
]

#: The global event list keeps the last 100,000 events; each key's own list its last 1,000.
MAX_EVENTS = 100_000
MAX_KEY_EVENTS = 1_000

_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)*")


def split_url(url: str) -> tuple[str, str, str]:
    """``(url for redis-py, prefix, where)``: the prefix taken out of the query; ``where`` is
    ``host:port`` or the socket path, never the credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "prefix"]
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    return urlunsplit(parts._replace(query=rest)), (prefixes[-1] if prefixes else "keyrelay"), where


class Names:
    """Every Redis key name of one store, under ``prefix``."""

    __slots__ = (
        "changes", "channel", "cipher", "event_seq", "events", "keys", "lookups", "prefix", "removed",
        "schema", "seq", "token_names", "token_revoked", "token_seq", "tokens",
    )

    def __init__(self, prefix: str = "keyrelay") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"a Redis key prefix is letters, digits, '_', '.', '-' and ':' separators; got {prefix!r}")
        p = self.prefix = prefix
        self.schema = f"{p}:schema"
        self.cipher = f"{p}:cipher"
        self.lookups = f"{p}:lookup"
        self.keys = f"{p}:keys"
        self.seq = f"{p}:seq"
        self.changes = f"{p}:changes"
        self.removed = f"{p}:removed"
        self.event_seq = f"{p}:event_seq"
        self.events = f"{p}:events"
        self.tokens = f"{p}:tokens"
        self.token_names = f"{p}:token_names"
        self.token_revoked = f"{p}:token_revoked"
        self.token_seq = f"{p}:token_seq"
        self.channel = f"{p}:changed"

    def key(self, key_id: str) -> str:
        return f"{self.prefix}:key:{key_id}"

    def pool(self, pool: str) -> str:
        return f"{self.prefix}:pool:{pool}"

    def key_events(self, key_id: str) -> str:
        return f"{self.prefix}:events:{key_id}"

    def usage(self, scope: str, step: int, t: float) -> str:
        return f"{self.prefix}:usage:{step}:{int(t)}:{scope}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"


# -- encoding -----------------------------------------------------------------------------------
# Floats are written as repr() (exact round trip), None balances as ''.

_ZERO = Counters()


def num(x: float) -> str:
    return repr(float(x))


def pairs_of(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it))


#: The hash fields of a key, in the order :func:`record_of_values` reads them.
FIELDS = (
    "id", "pool", "secret", "state", "reason", "since", "until", "version", "weight", "label", "added_at",
    *COUNTER_FIELDS, "balance", "currency", "base_url",
)
_C = 11  # where the counters start
_STATES = {s.value: s for s in KeyState}


def record_of_values(v: Sequence[str | bool | None], cipher: KeyCipher) -> KeyRecord:
    """A key from its ``FIELDS`` values (a missing field is None or false), its key decrypted."""
    counts = [int(x or 0) for x in v[_C:_C + len(COUNTER_FIELDS)]]
    balance, currency, base_url = v[_C + len(COUNTER_FIELDS):]
    return KeyRecord(
        str(v[0]), str(v[1]), cipher.open(str(v[0]), str(v[2])), _STATES[str(v[3])], str(v[4] or ""), float(v[5] or 0), float(v[6] or 0),
        int(v[7] or 1), float(v[8] or 1), str(v[9] or ""), float(v[10] or 0),
        Counters(*counts) if any(counts) else _ZERO, float(balance) if balance else None, str(currency or ""),
        str(base_url) if base_url else None,
    )


def record_of_hash(h: Mapping[str, str], cipher: KeyCipher) -> KeyRecord:
    return record_of_values([h.get(f) for f in FIELDS], cipher)


def hash_of(rec: KeyRecord, cipher: KeyCipher) -> list[str]:
    """A record as HSET field/value pairs (flat), the inverse of :func:`record_of_hash`; its
    ``lookup`` comes right after ``secret`` (the import script reads it there)."""
    values: list[tuple[str, object]] = [
        ("id", rec.id), ("pool", rec.pool), ("secret", cipher.seal(rec.id, rec.secret)),
        ("lookup", cipher.lookup(rec.pool, rec.secret)), ("state", rec.state.value),
        ("reason", rec.reason), ("since", num(rec.since)), ("until", num(rec.until)), ("version", rec.version),
        ("weight", num(rec.weight)), ("label", rec.label), ("added_at", num(rec.added_at)),
        ("balance", "" if rec.balance is None else num(rec.balance)), ("currency", rec.currency),
        ("base_url", rec.base_url or ""),
        *rec.counters.as_dict().items(),
    ]
    return [str(x) for pair in values for x in pair]


def event_json(key_id: str, pool: str, at: float, actor: str, frm: str, to: str, reason: str, detail: str) -> str:
    return json.dumps([key_id, pool, float(at), actor, frm, to, reason, detail])


def event_of(line: str) -> Event:
    seq, key_id, pool, at, actor, frm, to, reason, detail = json.loads(line)
    return Event(key_id, pool, float(at), actor, frm, to, reason, detail, int(seq))
