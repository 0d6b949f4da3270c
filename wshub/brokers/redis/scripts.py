"""The Lua scripts of the Redis broker: each one step that no other client can interleave with.

Key layout, for a prefix ``P`` and a channel ``C`` (the braces are Redis Cluster hash tags, so
that one channel's keys live on one shard):

- ``P:{C}:meta``   hash: ``epoch``, ``top`` (the last offset)
- ``P:{C}:hist``   list of the last N entries, oldest first
- ``P:{C}:pub``    pub/sub channel: ``m`` + entry (a message), ``e`` + event
- ``P:{C}:idem:<key>``  string ``"<offset> <epoch> <ts>"``: a publication's idempotency key,
  for the idempotency TTL
- ``P:{C}:conns:<node>``  hash: session -> user, one field per connection a node has joined
- ``P:{C}:users``  hash: user -> number of joined connections
- ``P:{C}:umeta``  hash: user -> presence meta of the user's latest join
- ``P:channels``   hash: channel -> joined connections, cluster-wide
- ``P:nodes``      sorted set: node -> time of its last heartbeat (ms)
- ``P:nodes:clock`` time of the last heartbeat of any node (ms), to see a stall of Redis itself
- ``P:nodes:evicted``   sorted set: evicted node -> when (tombstones, so it knows to come back)
- ``P:nodes:evicting``  sorted set: evicted node -> when its cleanup was handed out
- ``P:node:<id>:chans``  set of the channels where a node has presence entries
- ``P:user:{U}``   pub/sub channel: ``d`` + frame (direct message), ``k`` (kick: close the
  user's connections), ``s`` / ``u`` + channel (join to / take out of that channel:
  server-side subscriptions)
- ``P:stats``      set of the nodes that shared their dashboard figures; ``P:stats:<node>``
  the figures (JSON), expiring unless shared again

That is the layout on one Redis; on a cluster the keys that are no channel's have other names,
each group in one slot (``wshub.brokers.redis.keys``).

An entry is ``"<offset> <ts> <epoch> <from>\\n<data>"``, ``from`` being ``~`` for none (user
ids never contain ``~``). Times come from Redis' clock, so every node agrees on them.
"""

from __future__ import annotations

from typing import Final

# KEYS: meta, hist, and the idempotency key if any. ARGV: data, from, epoch if new, history
# size, history ttl ms, position keep ms, pub/sub channel, idempotency ttl ms, and the publish
# command: PUBLISH, or SPUBLISH on a cluster (its pub/sub channel is in the same slot).
# Returns {offset, epoch, ts}: a key already used answers its publication, publishing nothing.
PUBLISH: Final = """
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local o, e, s = string.match(seen, '^(%d+) (%S+) (%d+)$')
    return {tonumber(o), e, s}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local t = redis.call('TIME')
local ts = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local entry = string.format('%d', top) .. ' ' .. ts .. ' ' .. epoch .. ' ' .. ARGV[2] .. '\\n'
  .. ARGV[1]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(ARGV[9], ARGV[7], 'm' .. entry)
if KEYS[3] then
  redis.call('SET', KEYS[3], string.format('%d', top) .. ' ' .. epoch .. ' ' .. ts, 'PX', ARGV[8])
end
return {top, epoch, ts}
"""

# KEYS: meta, hist. ARGV: epoch if new, position keep ms, "1" to return the entries.
# Returns {epoch, top, now ms, entries...}. Creates the position if the channel has none, so
# that the epoch a joiner is told is the one the next publication will carry.
READ: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local top = 0
if epoch then
  top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
else
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {epoch, string.format('%d', top), now}
if ARGV[3] == '1' then
  local entries = redis.call('LRANGE', KEYS[2], 0, -1)
  for i = 1, #entries do out[#out + 1] = entries[i] end
end
return out
"""

# KEYS: node's conns in the channel, users, umeta, channels, node chans (on one Redis: a cluster
# keeps that set with a command of its own, see keys.py).
# ARGV: session, user, meta, channel. Returns 1 when this is the user's first connection in the
# channel. Idempotent: adding a connection that is there changes nothing but the meta.
PRESENCE_ADD: Final = """
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
if KEYS[5] then redis.call('SADD', KEYS[5], ARGV[4]) end
if new == 1 then
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
end
return 0
"""

# KEYS: node's conns in the channel, users, umeta, channels, node chans (one Redis). ARGV:
# session, user, channel. Returns the user's meta when this was their last connection in the
# channel, else nil.
PRESENCE_REMOVE: Final = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
if KEYS[5] and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[5], ARGV[3]) end
if redis.call('HINCRBY', KEYS[4], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[4], ARGV[3]) end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  local meta = redis.call('HGET', KEYS[3], ARGV[2]) or 'null'
  redis.call('HDEL', KEYS[3], ARGV[2])
  return meta
end
return false
"""

# KEYS: nodes, clock, evicted, evicting. ARGV: this node, mode ("beat", "join" or "leave"),
# dead after ms, beat ms, keep ms, most victims.
#
# Time during which no node at all beat (Redis stalled, or was frozen) counts against no node:
# every score moves forward by it, so the first beat after a stall evicts nobody who was alive.
# "beat" records this node's heartbeat if it is registered, and returns its state: 0 registered,
# 1 evicted (its users were announced gone: it must register them again, announced), 2 unknown
# (Redis lost its data: register again, quietly). "join" registers it (after such a state, or
# at start); "leave" removes it. Then nodes silent for too long are evicted: moved to
# ``evicting`` (to be cleaned up, channel by channel, with EVICT) and ``evicted`` (their
# tombstone, kept ``keep ms`` even after a return, for operators and tests to see). A cleanup
# that nobody finished within ``dead after ms`` is handed out again. Returns {state,
# victims...}. The work is bounded by the number of nodes and ``most victims``.
HEARTBEAT: Final = """
local me, mode = ARGV[1], ARGV[2]
local dead_after, beat, keep, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or now)
local quiet = now - last - beat
if quiet > 0 then
  local scores = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #scores, 2 do
    redis.call('ZADD', KEYS[1], tonumber(scores[i + 1]) + quiet, scores[i])
  end
end
redis.call('SET', KEYS[2], now, 'PX', keep)
local state = 0
local victims = {}
if mode == 'leave' then
  redis.call('ZREM', KEYS[1], me)
  redis.call('ZADD', KEYS[4], now, me)
  victims[1] = me
elseif mode == 'join' then
  redis.call('ZADD', KEYS[1], now, me)
  redis.call('ZREM', KEYS[4], me)
elseif redis.call('ZSCORE', KEYS[1], me) then
  redis.call('ZADD', KEYS[1], now, me)
elseif redis.call('ZSCORE', KEYS[3], me) then
  state = 1
else
  state = 2
end
local cutoff = '(' .. (now - dead_after)
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, most)) do
  redis.call('ZREM', KEYS[1], node)
  redis.call('ZADD', KEYS[3], now, node)
  redis.call('ZADD', KEYS[4], now, node)
  victims[#victims + 1] = node
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff, 'LIMIT', 0, most)) do
  redis.call('ZADD', KEYS[4], now, node)
  victims[#victims + 1] = node
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - keep))
local out = {state}
for _, node in ipairs(victims) do out[#out + 1] = node end
return out
"""

# KEYS: the node's conns in the channel, users, umeta, channels, and on one Redis node chans and
# nodes (a cluster checks the node register and updates the set with commands of their own).
# ARGV: node, channel. Removes an evicted (or leaving) node's connections from one channel;
# returns {user, meta, ...} for the users who thereby left it. Idempotent, and a no-op for a
# node that registered again meanwhile, so a late or repeated cleanup cannot undo a return.
EVICT: Final = """
if KEYS[6] and redis.call('ZSCORE', KEYS[6], ARGV[1]) then return {} end
local out = {}
local conns = redis.call('HGETALL', KEYS[1])
for i = 2, #conns, 2 do
  local user = conns[i]
  if redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[4], ARGV[2]) end
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    out[#out + 1] = user
    out[#out + 1] = redis.call('HGET', KEYS[3], user) or 'null'
    redis.call('HDEL', KEYS[3], user)
  end
end
redis.call('DEL', KEYS[1])
if KEYS[5] then redis.call('SREM', KEYS[5], ARGV[2]) end
return out
"""
