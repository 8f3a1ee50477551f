"""The Lua scripts: each is one atomic round trip on one shard.

Items in the native lists start with a fixed header (see ``codec.py``):
``WB1`` + kind + 13 ASCII digits of the expiry time in ms. The scripts read
only that header, never the (possibly encrypted) body.
"""

from __future__ import annotations

__all__ = [
    "PUSH_LIST",
    "GROUP_SEND_NATIVE",
    "MOVE_DUE",
    "PUSH_ZSET",
    "GROUP_SEND_CHANNELS_REDIS",
    "GROUP_MEMBERS",
    "RESERVE",
]

# Push one item onto a list unless it is at capacity. Expired items at the
# head do not count: they are dropped first.
# KEYS[1] list; ARGV: item, capacity, now_ms, expiry_ms -> 1 pushed | 0 full
PUSH_LIST = """
local key = KEYS[1]
local cap = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local n = redis.call('LLEN', key)
while n >= cap do
  local head = redis.call('LINDEX', key, 0)
  local exp = head and tonumber(string.sub(head, 5, 17))
  if exp and exp < now then
    redis.call('LPOP', key)
    n = n - 1
  else
    break
  end
end
if n >= cap then return 0 end
redis.call('RPUSH', key, ARGV[1])
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""

# Members of a group, expired ones removed first.
# KEYS[1] group zset; ARGV: min_score -> list of members
GROUP_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Native group send: ONE item per process holding members. The item (the
# group name and the message, serialized once) is the same for every process;
# each process resolves its own members of the group locally. Redis work is
# proportional to the number of processes, not of members. Plain named
# channels in the group are returned to the caller (they may live on
# another shard).
# KEYS[1] processes zset (process -> last join), KEYS[2] plain members zset,
# KEYS[3] all members zset (pruned here, listed by group_channels),
# KEYS[4] the restore marker (set for a while after a restart: refuse, {-1})
# ARGV: min_score, inbox_key_prefix, item, inbox_capacity, expiry_ms,
#       push ('1': push here; '0': several shards, each process's inbox
#       lives on its home shard: return the processes for the caller to push)
# -> {full_inboxes, processes_reached, {plain members...}, {processes...}}
GROUP_SEND_NATIVE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0, {}, {}} end
local min = '(' .. ARGV[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', min)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', min)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', min)
local procs = redis.call('ZRANGE', KEYS[1], 0, -1)
local plain = redis.call('ZRANGE', KEYS[2], 0, -1)
if ARGV[6] ~= '1' then return {0, 0, plain, procs} end
local cap = tonumber(ARGV[4])
local full, reached = 0, 0
for _, cp in ipairs(procs) do
  local key = ARGV[2] .. cp
  if redis.call('LLEN', key) >= cap then
    full = full + 1
  else
    redis.call('RPUSH', key, ARGV[3])
    redis.call('PEXPIRE', key, ARGV[5])
    reached = reached + 1
  end
end
return {full, reached, plain, {}}
"""

# Move due delayed messages to their destination. A delayed member is
#   nonce '|' kind '|' capacity '|' key '|' payload
# kind 'l': RPUSH payload on list key; kind 'z': ZADD payload (channels_redis
# layout, score = now in seconds).
# KEYS[1] delayed zset; ARGV: now_ms, limit, expiry_ms
# -> {moved, dropped_full, next_due_ms or -1}
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, dropped = 0, 0
local expiry_ms = tonumber(ARGV[3])
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local p1 = string.find(m, '|', 1, true)
  local p2 = p1 and string.find(m, '|', p1 + 1, true)
  local p3 = p2 and string.find(m, '|', p2 + 1, true)
  local p4 = p3 and string.find(m, '|', p3 + 1, true)
  if p4 then
    local kind = string.sub(m, p1 + 1, p2 - 1)
    local cap = tonumber(string.sub(m, p2 + 1, p3 - 1))
    local key = string.sub(m, p3 + 1, p4 - 1)
    local payload = string.sub(m, p4 + 1)
    if kind == 'l' then
      if redis.call('LLEN', key) < cap then
        redis.call('RPUSH', key, payload)
        redis.call('PEXPIRE', key, expiry_ms)
        moved = moved + 1
      else
        dropped = dropped + 1
      end
    else
      local now_s = tonumber(ARGV[1]) / 1000
      redis.call('ZREMRANGEBYSCORE', key, 0, now_s - expiry_ms / 1000)
      if redis.call('ZCARD', key) < cap then
        redis.call('ZADD', key, now_s, payload)
        redis.call('PEXPIRE', key, expiry_ms)
        moved = moved + 1
      else
        dropped = dropped + 1
      end
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = nxt[2] end
return {moved, dropped, next_due}
"""

# channels_redis 4.x send: expire old, check capacity, ZADD with score now.
# The score is the send time, nudged by the sender to grow strictly so that
# one sender's messages keep their order (a ZSET orders ties by bytes).
# KEYS[1] channel zset; ARGV: member, capacity, now_s, expiry_s, score -> 1 | 0 full
PUSH_ZSET = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[3]) - tonumber(ARGV[4]))
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
redis.call('EXPIRE', KEYS[1], math.max(1, math.ceil(tonumber(ARGV[4]))))
return 1
"""

# channels_redis 4.x group send, done the channels_redis way (one message per
# channel key, "__asgi_channel__" listing that key's member channels) but in
# one script. The message's msgpack map is passed without its header, with
# its entry count, so the script can add the "__asgi_channel__" entry
# without decoding anything.
# KEYS[1] group zset, KEYS[2] the restore marker (present: refuse, {-1})
# ARGV: min_score, key_prefix, map_body, entry_count, asgi_key_packed,
#       nonce_base (8 bytes), now_s, expiry_s, capacity, local_only ('1'/'0'),
#       score, capacity for the per-process keys (ending in '!'): channels_redis uses
#       the channel's capacity for them too
# With local_only = '0' (encryption on, or several shards) nothing is pushed:
# the grouping is returned for the caller to seal and push.
# -> {skipped_full, {key, channel, channel, ...}, ...}
GROUP_SEND_CHANNELS_REDIS = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local bykey, order = {}, {}
for _, m in ipairs(members) do
  local bang = string.find(m, '!', 1, true)
  local nonlocal = m
  if bang then nonlocal = string.sub(m, 1, bang) end
  local names = bykey[nonlocal]
  if not names then
    names = {}
    bykey[nonlocal] = names
    order[#order + 1] = nonlocal
  end
  names[#names + 1] = m
end
if ARGV[10] ~= '1' then
  local out = {0}
  for _, k in ipairs(order) do
    local row = {k}
    for _, name in ipairs(bykey[k]) do row[#row + 1] = name end
    out[#out + 1] = row
  end
  return out
end
local n = tonumber(ARGV[4]) + 1
local header
if n < 16 then
  header = string.char(128 + n)
elseif n < 65536 then
  header = string.char(0xde, math.floor(n / 256), n % 256)
else
  header = string.char(0xdf, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                       math.floor(n / 256) % 256, n % 256)
end
local now = tonumber(ARGV[7])
local expiry = tonumber(ARGV[8])
local cap = tonumber(ARGV[9])
local skipped = 0
for i, k in ipairs(order) do
  local key = ARGV[2] .. k
  redis.call('ZREMRANGEBYSCORE', key, 0, now - expiry)
  local limit = cap
  if string.sub(k, -1) == '!' then limit = tonumber(ARGV[12]) end
  if redis.call('ZCOUNT', key, '-inf', '+inf') < limit then
    local nonce = ARGV[6] .. string.char(math.floor(i / 16777216) % 256,
      math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
    local body = header .. ARGV[3] .. ARGV[5] .. cmsgpack.pack(bykey[k])
    redis.call('ZADD', key, ARGV[11], nonce .. body)
    redis.call('EXPIRE', key, math.max(1, math.ceil(expiry)))
  else
    skipped = skipped + #bykey[k]
  end
end
return {skipped}
"""

# At-least-once receive (``reliable.py``): give reservations whose visibility
# timeout passed back to the head of the list (oldest first), then take the
# first unexpired item and hold it in the in-flight zset until it is acked.
# KEYS[1] channel list, KEYS[2] its in-flight zset (same hash slot)
# ARGV: now_ms, visibility_ms, nonce (16 bytes), expiry_ms
# -> {requeued, member or nothing}; member = nonce .. item (the receipt)
RESERVE = """
local now = tonumber(ARGV[1])
local late = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for i = #late, 1, -1 do
  redis.call('ZREM', KEYS[2], late[i])
  redis.call('LPUSH', KEYS[1], string.sub(late[i], 17))
end
if #late > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
local item = redis.call('LPOP', KEYS[1])
while item do
  local exp = tonumber(string.sub(item, 5, 17))
  if not exp or exp >= now then break end
  item = redis.call('LPOP', KEYS[1])
end
if not item then return {#late} end
local member = ARGV[3] .. item
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), member)
redis.call('PEXPIRE', KEYS[2], math.max(tonumber(ARGV[4]), 2 * tonumber(ARGV[2])))
return {#late, member}
"""
