"""History for the Redis layer: a stream per group, positions written with the publish.

Keys (native layout, format 1), with the group in a hash tag so that the
keys of one group share a Cluster slot::

    P:1:hist:{<group>}    STREAM  id from Redis's clock, fields o (offset), d (the item body)
    P:1:hmeta:{<group>}   HASH    e (epoch), o (last offset)

One Lua script (:data:`GROUP_SEND_HISTORY`) takes the next offset, appends
to the stream (trimmed to ``history`` entries and ``history_ttl`` seconds),
and pushes the item, now carrying its position, to the inboxes of the
processes holding members: nothing is in the history without having been
published, or the reverse. When the meta hash is gone (expired, flushed, a
fresh Redis) a new epoch is taken, so older positions are refused rather
than matched against other messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...exceptions import ChannelFull, MessageDecodeError
from ..history import GroupOptions, HistoryResult, Position, judge
from .shard import raise_restoring

if TYPE_CHECKING:
    from .native import NativeLayout
    from .shard import Shard

__all__ = ["RedisHistory", "GROUP_SEND_HISTORY", "READ_HISTORY"]

#: How long a group's epoch and offset outlive its last message, at least.
META_TTL = 86400.0

# KEYS: 1 gproc, 2 gplain, 3 group, 4 stream, 5 meta, 6 restore marker (a Redis
#       restart is being repaired: refuse, writing nothing, as a plain group send)
# ARGV: 1 min_score, 2 inbox_prefix, 3 G item, 4 inbox capacity, 5 expiry_ms,
#       6 push ('1'/'0'), 7 history size, 8 history ttl ms, 9 meta ttl ms
# -> {full, reached, {plain...}, {processes...}, position, item or ''}
# The stream is trimmed approximately (MAXLEN ~, and by age every 16th
# message): readers take the last `history` entries younger than the ttl.
# A new epoch is Redis's clock in microseconds, in hex.
GROUP_SEND_HISTORY = """
if redis.call('EXISTS', KEYS[6]) == 1 then return {-1, 0, {}, {}, '', ''} end
local epoch = redis.call('HGET', KEYS[5], 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[5], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[5], 'o', 1)
redis.call('PEXPIRE', KEYS[5], ARGV[9])
local body = string.sub(ARGV[3], 18)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'o', offset, 'd', body)
if offset % 16 == 0 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XTRIM', KEYS[4], 'MINID', '~', now_ms - tonumber(ARGV[8]))
end
redis.call('PEXPIRE', KEYS[4], ARGV[8])
local pos = epoch .. ':' .. offset
local item = string.sub(ARGV[3], 1, 3) .. 'H' .. string.sub(ARGV[3], 5, 17) .. pos .. '\\n' .. body
local min = '(' .. ARGV[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', min)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', min)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', min)
local procs = redis.call('ZRANGE', KEYS[1], 0, -1)
local plain = redis.call('ZRANGE', KEYS[2], 0, -1)
if ARGV[6] ~= '1' then return {0, 0, plain, procs, pos, item} end
if #procs == 0 then return {0, 0, plain, {}, pos, ''} end
local cap = tonumber(ARGV[4])
local full, reached = 0, 0
for _, cp in ipairs(procs) do
  local key = ARGV[2] .. cp
  if redis.call('LLEN', key) >= cap then
    full = full + 1
  else
    redis.call('RPUSH', key, item)
    redis.call('PEXPIRE', key, ARGV[5])
    reached = reached + 1
  end
end
return {full, reached, plain, {}, pos, ''}
"""

# KEYS: 1 stream, 2 meta; ARGV: 1 ttl ms -> {epoch or '', top, entries younger than the ttl}
READ_HISTORY = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then return {'', 0, {}} end
local top = redis.call('HGET', KEYS[2], 'o')
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, top, redis.call('XRANGE', KEYS[1], now_ms - tonumber(ARGV[1]), '+')}
"""


def _script(shard: Shard, name: str, source: str) -> Any:
    # Registered once per shard, beside the shard's own scripts.
    cache: dict[str, Any] = shard.__dict__.setdefault("_history_scripts", {})
    script = cache.get(name)
    if script is None:
        script = cache[name] = shard.client.register_script(source)
    return script


class RedisHistory:
    """The history half of the Redis layer (native layout only)."""

    def __init__(self, layout: NativeLayout) -> None:
        self.layout = layout
        self.ctx = layout.ctx
        base = f"{self.ctx.prefix}:1:"
        self.stream_prefix = base + "hist:"
        self.meta_prefix = base + "hmeta:"

    def keys(self, group: str) -> list[str]:
        tag = "{" + group + "}"
        return [self.stream_prefix + tag, self.meta_prefix + tag]

    def group_send(self, group: str, message: dict[str, Any], options: GroupOptions) -> int:
        """Publish ``message`` to ``group`` and append it to its history in one script."""
        ctx, layout = self.ctx, self.layout
        data = ctx.codec.dump_message(message)
        shard = layout.group_shard(group)
        # On a Redis Cluster the inboxes are in other slots: never push in Lua.
        one_shard = len(ctx.shards) == 1 and not ctx.cluster
        ttl_ms = max(1, int(options.history_ttl * 1000))
        full, _reached, plain, processes, pos, item = shard.call(
            _script(shard, "send", GROUP_SEND_HISTORY),
            keys=[
                layout.gproc_key(group),
                layout.gplain_key(group),
                layout.group_key(group),
                *self.keys(group),
                layout.restore_key_for(group),
            ],
            args=[
                ctx.group_min_score(),
                layout.proc_prefix,
                layout.codec.group_item(group, data),
                ctx.process_capacity,
                layout.expiry_ms,
                "1" if one_shard else "0",
                options.history,
                ttl_ms,
                max(ttl_ms, int(META_TTL * 1000)),
            ],
        )
        if int(full) < 0:
            raise_restoring(shard)
        skipped = int(full)
        if processes:
            skipped += layout.push_to_homes([p.decode() for p in processes], item)
        if plain:
            skipped += self._send_plain(group, message, pos.decode(), plain)
        return skipped

    def _send_plain(self, group: str, message: dict[str, Any], pos: str, plain: list[bytes]) -> int:
        # Named channels in a history group get the position in the message itself.
        data = self.ctx.codec.dump_message({**message, "position": pos, "group": group})
        skipped = 0
        for member in plain:
            try:
                self.layout.send_data(member.decode("utf-8"), data)
            except ChannelFull:
                skipped += 1
        return skipped

    def read(
        self, group: str, since: Position | str | None, options: GroupOptions
    ) -> HistoryResult:
        """The retained history of ``group`` after ``since`` (see :func:`judge`)."""
        shard = self.layout.group_shard(group)
        epoch, top, entries = shard.call(
            _script(shard, "read", READ_HISTORY),
            keys=self.keys(group),
            args=[max(1, int(options.history_ttl * 1000))],
        )
        retained: list[tuple[int, dict[str, Any]]] = []
        epoch_text = epoch.decode() if epoch else None
        for _entry_id, fields in entries[-options.history :]:  # trimming is approximate
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            offset = int(values[b"o"])
            try:
                message = self._decode(group, values[b"d"])
            except MessageDecodeError as exc:
                self.ctx.count_bad_item(f"history of {group}", exc)
                continue
            message["position"] = f"{epoch_text}:{offset}"
            message["group"] = group
            retained.append((offset, message))
        return judge(since, epoch_text, int(top), retained)

    def _decode(self, group: str, body: bytes) -> dict[str, Any]:
        codec = self.ctx.codec
        decoded = codec.decode_item(codec.header(b"G") + body)
        if decoded is None or decoded.group != group:
            raise MessageDecodeError("history entry for another group")
        return dict(decoded.message)
