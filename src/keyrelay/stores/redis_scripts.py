"""Every server-side (Lua) script of :class:`keyrelay.stores.redis.RedisStore`, and ``LUA``, the
registry the store loads them from by name at ``open()``.

Each script's contract is the comment above it: what it expects in KEYS and ARGV and what it
returns. Every Redis key a script touches is passed in KEYS, named by
:class:`keyrelay.stores.redis_keys.Names` (the layout and the encodings are described there).
Scripts run through redis-py's ``register_script`` (EVALSHA, reloaded on NOSCRIPT). They never
return nil/false (whose reply type depends on RESP2/RESP3): 0 / -1 mean "refused", 1 or a table
means done. Only plain strings, hashes, sorted sets, lists, ``PUBLISH`` and ``cjson`` are used:
Redis ≥ 6 and Valkey, no modules.
"""

from __future__ import annotations

__all__ = ["GUARDED", "LOST", "LUA"]

#: What a guarded script answers, writing nothing, when the store's schema marker is gone (the
#: server was flushed or restarted empty): the marker's name is always the script's last ARGV.
LOST = "LOST"
_GUARD = "if redis.call('EXISTS', ARGV[#ARGV]) == 0 then return 'LOST' end\n"

_PUSH_EVENT = """
local function push_event(all, counter, mine, ev, cap_all, cap_key)
  local n = redis.call('INCR', counter)
  local line = '[' .. n .. ',' .. string.sub(ev, 2)
  redis.call('RPUSH', all, line)
  redis.call('LTRIM', all, -tonumber(cap_all), -1)
  redis.call('RPUSH', mine, line)
  redis.call('LTRIM', mine, -tonumber(cap_key), -1)
end
"""

# KEYS: key, seq, changes, events, event_seq, key_events
# ARGV: expected_version, to_state, reason, at, until, event, cap_all, cap_key, channel, origin, key_id,
# coalescing window (s). A cooling -> cooling transition within the window of the key's last event,
# itself cooling -> cooling, rewrites that event (same number, in both lists) instead of adding one.
_APPLY = _PUSH_EVENT + """
local v = redis.call('HGET', KEYS[1], 'version')
if (not v) or tonumber(v) ~= tonumber(ARGV[1]) then return 0 end
local from = redis.call('HGET', KEYS[1], 'state')
if from ~= ARGV[2] then redis.call('HSET', KEYS[1], 'since', ARGV[4]) end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'reason', ARGV[3], 'until', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'version', 1)
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], seq, ARGV[11])
local merged = false
if from == 'cooling' and ARGV[2] == 'cooling' then
  local old = redis.call('LINDEX', KEYS[6], -1)
  if old then
    local e = cjson.decode(old)
    local gap = tonumber(ARGV[4]) - tonumber(e[4])
    if e[6] == 'cooling' and e[7] == 'cooling' and gap >= 0 and gap <= tonumber(ARGV[12]) then
      local line = '[' .. e[1] .. ',' .. string.sub(ARGV[6], 2)
      redis.call('LSET', KEYS[6], -1, line)
      local head = redis.call('LINDEX', KEYS[4], 0)
      if head then
        local at = e[1] - cjson.decode(head)[1]
        if at >= 0 and redis.call('LINDEX', KEYS[4], at) == old then redis.call('LSET', KEYS[4], at, line) end
      end
      merged = true
    end
  end
end
if not merged then push_event(KEYS[4], KEYS[5], KEYS[6], ARGV[6], ARGV[7], ARGV[8]) end
redis.call('PUBLISH', ARGV[9], ARGV[10] .. ' ' .. seq)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: seq, changes, removed, keys, pool, events, event_seq, lookups, then (key, key_events) per key
# ARGV: pool, now, weight, label, cap_all, cap_key, channel, origin, the event's JSON after its key
# id (`"pool", at, ...]`), JSON [[id, sealed secret, lookup], ...], base_url ('' for none).
# Returns one character per key: 1 added, 0 already there (by id or by keyed hash).
# Per batch, not per key: one INCRBY of each counter, one ZADD per zset, one RPUSH + LTRIM.
_ADD = """
local flags, ids = {}, {}
local batch = cjson.decode(ARGV[10])
for i, kv in ipairs(batch) do
  local h = KEYS[7 + 2 * i]
  if redis.call('EXISTS', h) == 1 or redis.call('HEXISTS', KEYS[8], kv[3]) == 1 then
    flags[i] = 0
  else
    flags[i] = 1
    redis.call('HSET', h, 'id', kv[1], 'pool', ARGV[1], 'secret', kv[2], 'lookup', kv[3], 'state', 'active',
      'reason', '', 'since', ARGV[2], 'until', '0', 'version', 1, 'weight', ARGV[3], 'label', ARGV[4],
      'added_at', ARGV[2], 'balance', '', 'currency', '', 'base_url', ARGV[11])
    redis.call('HSET', KEYS[8], kv[3], kv[1])
    ids[#ids + 1] = i
  end
end
if #ids == 0 then return table.concat(flags) end
local seq = redis.call('INCRBY', KEYS[1], #ids) - #ids
local ev = redis.call('INCRBY', KEYS[7], #ids) - #ids
local scored, members, lines = {}, {}, {}
for j, i in ipairs(ids) do
  local id = batch[i][1]
  scored[2 * j - 1], scored[2 * j], members[j] = seq + j, id, id
  lines[j] = '[' .. (ev + j) .. ',' .. cjson.encode(id) .. ',' .. ARGV[9]
  if redis.call('RPUSH', KEYS[8 + 2 * i], lines[j]) > tonumber(ARGV[6]) then
    redis.call('LTRIM', KEYS[8 + 2 * i], -tonumber(ARGV[6]), -1)
  end
end
redis.call('ZADD', KEYS[2], unpack(scored))
redis.call('ZREM', KEYS[3], unpack(members))
redis.call('ZADD', KEYS[4], unpack(scored))
redis.call('ZADD', KEYS[5], unpack(scored))
redis.call('RPUSH', KEYS[6], unpack(lines))
redis.call('LTRIM', KEYS[6], -tonumber(ARGV[5]), -1)
redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. (seq + #ids))
return table.concat(flags)
"""

# KEYS: key, seq, changes, removed, keys, pool, events, event_seq, key_events, lookups
# ARGV: expected_version, pool, key_id, event, cap_all, cap_key, channel, origin
# Returns 1 removed, 0 no such key, -1 changed since read (the caller reads again).
_REMOVE = _PUSH_EVENT + """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return 0 end
if tonumber(v) ~= tonumber(ARGV[1]) or redis.call('HGET', KEYS[1], 'pool') ~= ARGV[2] then return -1 end
local lookup = redis.call('HGET', KEYS[1], 'lookup')
if lookup and redis.call('HGET', KEYS[10], lookup) == ARGV[3] then redis.call('HDEL', KEYS[10], lookup) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('ZREM', KEYS[6], ARGV[3])
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[4], seq, ARGV[3])
push_event(KEYS[7], KEYS[8], KEYS[9], ARGV[4], ARGV[5], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. seq)
return 1
"""

# KEYS: one key hash per delta. ARGV per key: n, then n (field, increment) pairs.
_COUNTERS = """
local a = 1
for _, h in ipairs(KEYS) do
  local n = tonumber(ARGV[a])
  if redis.call('EXISTS', h) == 1 then
    for j = 1, n do redis.call('HINCRBY', h, ARGV[a + 2 * j - 1], ARGV[a + 2 * j]) end
  end
  a = a + 1 + 2 * n
end
return 1
"""

# KEYS: one usage bucket hash per row. ARGV per bucket: expire-at (epoch seconds), n, then n
# (field, increment) pairs. Buckets are created as needed and expire after their retention.
_USAGE = """
local a = 1
for _, h in ipairs(KEYS) do
  local n = tonumber(ARGV[a + 1])
  for j = 1, n do redis.call('HINCRBY', h, ARGV[a + 2 * j], ARGV[a + 2 * j + 1]) end
  redis.call('EXPIREAT', h, ARGV[a])
  a = a + 2 + 2 * n
end
return 1
"""

# KEYS: key. ARGV: balance ('' for none), currency.
_BALANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'currency', ARGV[2])
return 1
"""

# KEYS: events, event_seq, key_events. ARGV: event, cap_all, cap_key.
_EVENT = _PUSH_EVENT + """
push_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
return 1
"""

# KEYS: tokens, token_names, token_revoked, token_seq
# ARGV: id, name, JSON [id, name, pools, token_hash, created_at], revoked_at ('' when live)
# Returns 0 when a live token already has the name. A token with the same id is replaced.
_TOKEN = """
local live = ARGV[4] == ''
if live and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local oname = cjson.decode(old)[3]
  if redis.call('HGET', KEYS[2], oname) == ARGV[1] then redis.call('HDEL', KEYS[2], oname) end
end
local n = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[1], '[' .. n .. ',' .. string.sub(ARGV[3], 2))
if live then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
end
return 1
"""

# KEYS: tokens, token_names, token_revoked. ARGV: name_or_id, now. Returns 1 revoked, 0 none live.
_REVOKE = """
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 or redis.call('HEXISTS', KEYS[3], id) == 1 then
  id = redis.call('HGET', KEYS[2], ARGV[1])
  if not id then return 0 end
end
redis.call('HSET', KEYS[3], id, ARGV[2])
local name = cjson.decode(redis.call('HGET', KEYS[1], id))[3]
if redis.call('HGET', KEYS[2], name) == id then redis.call('HDEL', KEYS[2], name) end
return 1
"""

# KEYS: lock. ARGV: owner, now, expires, Redis expiry (ms). Returns 1 taken or extended, 0 held by another.
_LOCK = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and tonumber(redis.call('HGET', KEYS[1], 'expires')) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: lock. ARGV: owner.
_UNLOCK = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: seq, changes, removed, keys, lookups, then (key, pool) per record
# ARGV: channel, origin, then per record: id, n, then n (field, value) pairs, the 4th pair being
# (lookup, keyed hash). Refuses (returns the ids already there, writing nothing) when any key
# exists; else returns an empty table.
_IMPORT = """
local taken = {}
local a = 3
for i = 6, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then taken[#taken + 1] = ARGV[a] end
  a = a + 2 + 2 * tonumber(ARGV[a + 1])
end
if #taken > 0 then return taken end
a = 3
local seq = 0
for i = 6, #KEYS, 2 do
  local id, n = ARGV[a], tonumber(ARGV[a + 1])
  for j = 1, n do redis.call('HSET', KEYS[i], ARGV[a + 2 * j], ARGV[a + 2 * j + 1]) end
  redis.call('HSET', KEYS[5], ARGV[a + 9], id)
  seq = redis.call('INCR', KEYS[1])
  redis.call('ZADD', KEYS[2], seq, id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], seq, id)
  redis.call('ZADD', KEYS[i + 1], seq, id)
  a = a + 2 + 2 * n
end
if seq > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. seq) end
return taken
"""

# Reads that return one string instead of thousands of replies (parsing each reply costs the
# client far more than the server's encoding): JSON, or lines for events (JSON never holds a
# raw newline). cjson only encodes strings here, and an empty table as "{}".

# KEYS: key hashes. ARGV: the field names. Returns JSON: per key, its values (false if absent).
_FETCH = """
local out = {}
for i, h in ipairs(KEYS) do out[i] = redis.call('HMGET', h, unpack(ARGV)) end
return cjson.encode(out)
"""

# KEYS: a zset. Returns JSON: its members, by score.
_MEMBERS = """
return cjson.encode(redis.call('ZRANGE', KEYS[1], 0, -1))
"""

# KEYS: seq, changes, removed. ARGV: the exclusive lower bound, e.g. "(42".
# Returns JSON [cursor, changed ids by seq, removed ids by seq], one snapshot.
_CHANGES = """
return cjson.encode({redis.call('GET', KEYS[1]) or '0',
  redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf'), redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf')})
"""

# KEYS: a list. ARGV: start, stop. Returns its items joined by newlines.
_LINES = """
return table.concat(redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2]), '\\n')
"""

#: The scripts that refuse (answer :data:`LOST`) on a store without its schema marker: every
#: write, and the change feed (how a gateway notices).
GUARDED = frozenset(
    {"changes", "apply", "add", "remove", "counters", "balance", "event", "token", "revoke", "import", "lock", "unlock",
     "usage"}
)

_SCRIPTS: dict[str, str] = {
    "fetch": _FETCH,
    "members": _MEMBERS,
    "changes": _CHANGES,
    "lines": _LINES,
    "apply": _APPLY,
    "add": _ADD,
    "remove": _REMOVE,
    "counters": _COUNTERS,
    "balance": _BALANCE,
    "event": _EVENT,
    "token": _TOKEN,
    "usage": _USAGE,
    "revoke": _REVOKE,
    "import": _IMPORT,
    "lock": _LOCK,
    "unlock": _UNLOCK,
}

LUA: dict[str, str] = {name: (_GUARD + src if name in GUARDED else src) for name, src in _SCRIPTS.items()}
