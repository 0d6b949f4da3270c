"""The Lua scripts of the Redis broker: each one step that no other client can interleave with.

Key layout, for a prefix ``P`` and a channel ``C`` (the braces are Redis Cluster hash tags, so
that one channel's keys live on one shard):

- ``P:{C}:meta``   hash: ``epoch``, ``top`` (the last offset)
- ``P:{C}:hist``   list of the last N entries, oldest first
- ``P:{C}:pub``    pub/sub channel: ``m`` + entry (a message), ``e`` + event
- ``P:{C}:idem:<key>``  string ``"<offset> <epoch> <ts>"``: a publication's idempotency key,
  for the idempotency TTL
- ``P:{C}:conns``  hash: ``"<node> <session>"`` -> user, one field per joined connection
- ``P:{C}:users``  hash: user -> number of joined connections
- ``P:{C}:umeta``  hash: user -> presence meta of the user's latest join
- ``P:channels``   hash: channel -> joined connections, cluster-wide
- ``P:nodes``      sorted set: node -> time of its last heartbeat (ms)
- ``P:node:<id>:chans``  set of the channels where a node has presence entries
- ``P:user:{U}``   pub/sub channel: ``d`` + frame (direct message), ``k`` (disconnect)

An entry is ``"<offset> <ts> <epoch> <from>\\n<data>"``, ``from`` being ``~`` for none (user
ids never contain ``~``). Times come from Redis' clock, so every node agrees on them.
"""

from __future__ import annotations

from typing import Final

# KEYS: meta, hist, and the idempotency key if any. ARGV: data, from, epoch if new, history
# size, history ttl ms, position keep ms, pub/sub channel, idempotency ttl ms.
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
redis.call('PUBLISH', ARGV[7], 'm' .. entry)
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

# KEYS: conns, users, umeta, channels, node chans. ARGV: field, user, meta, channel.
# Returns 1 when this is the user's first connection in the channel.
PRESENCE_ADD: Final = """
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
if new == 1 then
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
end
return 0
"""

# KEYS: conns, users, umeta, channels. ARGV: field, user, channel.
# Returns the user's meta when this was their last connection in the channel, else nil.
PRESENCE_REMOVE: Final = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('HINCRBY', KEYS[4], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[4], ARGV[3]) end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  local meta = redis.call('HGET', KEYS[3], ARGV[2]) or 'null'
  redis.call('HDEL', KEYS[3], ARGV[2])
  return meta
end
return false
"""

# KEYS: nodes. ARGV: prefix, this node, dead after ms, "1" to evict this node itself (leaving).
# Records this node's heartbeat (unless leaving), then removes the presence entries of every
# node whose heartbeat is too old. Returns {added, channel, user, meta, ...}: ``added`` is 1
# when this node was not registered (it was evicted, or Redis lost its data), followed by the
# users who thereby left a channel for good. Only one node can evict a given dead node.
HEARTBEAT: Final = """
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
local victims
if ARGV[4] == '1' then
  victims = {ARGV[2]}
else
  added = redis.call('ZADD', KEYS[1], now, ARGV[2])
  victims = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[3])))
end
local out = {added}
for _, node in ipairs(victims) do
  redis.call('ZREM', KEYS[1], node)
  local setkey = prefix .. ':node:' .. node .. ':chans'
  local mine = node .. ' '
  for _, ch in ipairs(redis.call('SMEMBERS', setkey)) do
    local base = prefix .. ':{' .. ch .. '}'
    local conns = redis.call('HGETALL', base .. ':conns')
    for i = 1, #conns, 2 do
      local field, user = conns[i], conns[i + 1]
      if string.sub(field, 1, #mine) == mine then
        redis.call('HDEL', base .. ':conns', field)
        if redis.call('HINCRBY', prefix .. ':channels', ch, -1) <= 0 then
          redis.call('HDEL', prefix .. ':channels', ch)
        end
        if redis.call('HINCRBY', base .. ':users', user, -1) <= 0 then
          redis.call('HDEL', base .. ':users', user)
          local meta = redis.call('HGET', base .. ':umeta', user) or 'null'
          redis.call('HDEL', base .. ':umeta', user)
          out[#out + 1] = ch
          out[#out + 1] = user
          out[#out + 1] = meta
        end
      end
    end
  end
  redis.call('DEL', setkey)
end
return out
"""
