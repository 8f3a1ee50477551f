"""Presence for the Redis layer: entries per group, user counts, process leases.

Keys (native layout, format 1); the group's keys share a hash tag::

    P:1:pres:{<group>}    HASH  channel -> msgpack [user key, user, info, since]
    P:1:presu:{<group>}   HASH  user key -> entries of that user in the group
    P:1:plive             ZSET  process -> lease deadline, ms (first shard)
    P:1:pout:{<group>}    HASH  seq -> msgpack [owner process, kind, channel, entry]
    P:1:ptracked:<process> SET  groups the process tracked entries in (first shard);
                                not the layer's ``pgroups`` (groups its channels
                                joined): each reaper deletes its own set, and one
                                shared set made whichever reaper ran second find
                                nothing to clean

Each change of a group is one Lua script on the group's shard, which also
says whether the user's count went from 0 to 1 (join) or 1 to 0 (leave):
whichever processes race, each change is reported exactly once. In a group
with events on, the same script writes the event into the group's outbox,
owned by the process that will send it, which deletes it once sent. Every
live process renews its lease every ``presence_lease / 3`` seconds and
reaps the processes whose lease ran out: their entries go, their unsent
events are claimed (one script per group, so two reapers cannot both
report one leave or both claim one event) and the events are sent. A
process killed between a change and its event therefore loses nothing:
its reaper sends the event late, with its ``seq``. Only a process killed
between sending an event and deleting it from the outbox makes its reaper
send that event again; the consumer drops a ``seq`` it has already seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

from ...exceptions import LayerUnavailable
from ..presence import PresenceEntry, join_event, leave_event, user_key
from .lease import LeaseTable

if TYPE_CHECKING:
    from .layout import LayoutContext
    from .shard import Shard

#: ``on_event(group, event, counter)``: send a join or leave event to the group.
EventSink = Callable[[str, dict[str, Any], str], None]

#: Events kept for a retry after the layer was unreachable; past it the oldest
#: wait in the outbox for this process's close (or its reaper).
MAX_UNSENT = 10_000

__all__ = ["RedisPresence"]

logger = logging.getLogger("wsbridge.layers.redis")

# The users hash also holds '#seq' (user keys start with 'u:' or 'c:'): the
# group's event sequence number, one up per join or leave. ARGV[owner] is the
# process that will send the event ('' when the group's events are off: no outbox).
# KEYS: entries, users, outbox; ARGV: channel, packed entry, user key, owner
#   -> seq if joined | 0
TRACK = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[3], 1) == 1 then
  local seq = redis.call('HINCRBY', KEYS[2], '#seq', 1)
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[3], seq, cmsgpack.pack({ARGV[4], 'join', ARGV[1], ARGV[2]}))
  end
  return seq
end
return 0
"""

# KEYS: entries, users, outbox; ARGV: channel, owner
#   -> {packed entry, seq} if its user left, else false
UNTRACK = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
local key = cmsgpack.unpack(e)[1]
if redis.call('HINCRBY', KEYS[2], key, -1) <= 0 then
  redis.call('HDEL', KEYS[2], key)
  local seq = redis.call('HINCRBY', KEYS[2], '#seq', 1)
  if ARGV[2] ~= '' then
    redis.call('HSET', KEYS[3], seq, cmsgpack.pack({ARGV[2], 'leave', ARGV[1], e}))
  end
  return {e, seq}
end
return false
"""

# KEYS: entries, users, outbox; ARGV: dead process, reaper, outbox on ('1' | '')
#   -> {kind, channel, entry, seq, ...}: the events the dead process had not sent
#      ('claimed join' | 'claimed leave'), now the reaper's to send (claimed first, so
#      reaping oneself returns each once), then the leaves of its users ('leave')
REAP = """
local out = {}
local box = redis.call('HGETALL', KEYS[3])
for i = 1, #box, 2 do
  local ev = cmsgpack.unpack(box[i + 1])
  if ev[1] == ARGV[1] then
    ev[1] = ARGV[2]
    redis.call('HSET', KEYS[3], box[i], cmsgpack.pack(ev))
    out[#out + 1] = 'claimed ' .. ev[2]
    out[#out + 1] = ev[3]
    out[#out + 1] = ev[4]
    out[#out + 1] = tonumber(box[i])
  end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ch = all[i]
  local bang = string.find(ch, '!', 1, true)
  if bang and string.match(string.sub(ch, 1, bang - 1), '([^.]*)$') == ARGV[1] then
    redis.call('HDEL', KEYS[1], ch)
    local key = cmsgpack.unpack(all[i + 1])[1]
    if redis.call('HINCRBY', KEYS[2], key, -1) <= 0 then
      redis.call('HDEL', KEYS[2], key)
      local seq = redis.call('HINCRBY', KEYS[2], '#seq', 1)
      if ARGV[3] ~= '' then
        redis.call('HSET', KEYS[3], seq, cmsgpack.pack({ARGV[2], 'leave', ch, all[i + 1]}))
      end
      out[#out + 1] = 'leave'
      out[#out + 1] = ch
      out[#out + 1] = all[i + 1]
      out[#out + 1] = seq
    end
  end
end
return out
"""

_SOURCES = {"track": TRACK, "untrack": UNTRACK, "reap": REAP}


def _script(shard: Shard, name: str) -> Any:
    cache: dict[str, Any] = shard.__dict__.setdefault("_presence_scripts", {})
    script = cache.get(name)
    if script is None:
        script = cache[name] = shard.client.register_script(_SOURCES[name])
    return script


class RedisPresence:
    """The presence half of the Redis layer; the layer's mixin calls it.

    Args:
        ctx: the layer's shards and identity.
        group_shard: the shard holding a group's keys (the layout's placement).
        on_event: sends the join and leave events found while reaping.
        lease: seconds a dead process's entries outlive it (``presence_lease``).
        events_on: whether a group's members get join and leave events (then
            each event goes through the group's outbox).
    """

    def __init__(
        self,
        ctx: LayoutContext,
        group_shard: Callable[[str], Shard],
        on_event: EventSink,
        lease: float,
        events_on: Callable[[str], bool] = lambda group: False,
    ) -> None:
        self.ctx = ctx
        self.group_shard = group_shard
        self.on_event = on_event
        self.events_on = events_on
        base = f"{ctx.prefix}:1:"
        self.entries_prefix = base + "pres:"
        self.users_prefix = base + "presu:"
        self.outbox_prefix = base + "pout:"
        self.live_key = base + "plive"
        self.groups_prefix = base + "ptracked:"
        self.leases = LeaseTable(lambda: self.home, self.live_key, lease)
        self.closed = False
        #: (group, channel) -> entry, for this process: re-tracked if our lease was lost.
        self.local: dict[tuple[str, str], PresenceEntry] = {}
        self._announced: set[str] = set()
        self._loop: gevent.Greenlet | None = None
        self.reaped_processes = 0
        #: Events whose send found the layer unreachable: retried by the lease loop.
        self.unsent: list[tuple[str, dict[str, Any]]] = []
        #: Events of dead processes this process claimed from outboxes and sent.
        self.claimed_events = 0

    @property
    def home(self) -> Shard:
        return self.ctx.shards[0]

    def keys(self, group: str) -> list[str]:
        tag = "{" + group + "}"
        return [self.entries_prefix + tag, self.users_prefix + tag, self.outbox_prefix + tag]

    def _owner(self, group: str) -> str:
        return self.ctx.client_prefix if self.events_on(group) else ""

    # -- changes ----------------------------------------------------------------

    def track(self, group: str, entry: PresenceEntry) -> int:
        me = self.ctx.client_prefix
        if group not in self._announced:
            home = self.home
            pipe = home.client.pipeline(transaction=False)
            pipe.sadd(self.groups_prefix + me, group)
            pipe.zadd(self.live_key, {me: self.leases.deadline_ms()})
            home.call(pipe.execute)
            self._announced.add(group)
        self._ensure_loop()
        old = self.local.get((group, entry.channel))
        if old is not None:
            entry = PresenceEntry(entry.channel, old.user, entry.info, old.since)
        joined = self._run_track(group, entry)
        self.local[(group, entry.channel)] = entry
        return joined

    def _run_track(self, group: str, entry: PresenceEntry) -> int:
        shard = self.group_shard(group)
        return int(
            shard.call(
                _script(shard, "track"),
                keys=self.keys(group),
                args=[
                    entry.channel,
                    entry.pack(),
                    user_key(entry.channel, entry.user),
                    self._owner(group),
                ],
            )
        )

    def untrack(self, group: str, channel: str) -> tuple[PresenceEntry, int] | None:
        self.local.pop((group, channel), None)
        shard = self.group_shard(group)
        left = shard.call(
            _script(shard, "untrack"), keys=self.keys(group), args=[channel, self._owner(group)]
        )
        return (PresenceEntry.unpack(channel, left[0]), int(left[1])) if left else None

    # -- the outbox ---------------------------------------------------------------

    def sent(self, group: str, seq: int) -> None:
        """The event ``seq`` of ``group`` went out: take it out of the group's outbox."""
        shard = self.group_shard(group)
        try:
            shard.call(shard.client.hdel, self.keys(group)[2], str(seq))
        except LayerUnavailable:
            # Still ours in the outbox: our close (or our reaper) sends it again,
            # and consumers drop a seq they have seen.
            logger.info(
                "presence: event %d of %s left in its outbox (Redis unreachable)", seq, group
            )

    def defer(self, group: str, event: dict[str, Any]) -> None:
        """Keep an event whose send found the layer unreachable, for the lease loop."""
        if len(self.unsent) >= MAX_UNSENT:
            self.unsent.pop(0)  # still in the outbox: sent at our close or by our reaper
        self.unsent.append((group, event))
        self._ensure_loop()

    def retry_unsent(self) -> None:
        """Send again the events deferred by :meth:`defer` (the lease loop calls it)."""
        pending, self.unsent = self.unsent, []
        for group, event in pending:
            counter = "joins" if event["type"] == "presence.join" else "leaves"
            self.on_event(group, event, counter)

    def list(self, group: str) -> list[PresenceEntry]:
        shard = self.group_shard(group)
        raw: Any = shard.call(shard.client.hgetall, self.keys(group)[0])
        return [PresenceEntry.unpack(ch.decode("utf-8"), data) for ch, data in raw.items()]

    # -- leases -------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        if self._loop is None or self._loop.dead:
            self._loop = gevent.spawn(self._lease_loop)

    def _lease_loop(self) -> None:
        """Renew this process's lease and reap dead processes, every lease / 3 seconds."""
        while not self.closed:
            try:
                self.renew()
                self.reap_expired()
                if self.unsent:
                    self.retry_unsent()
            except LayerUnavailable:
                pass  # the shard logs its outage; try again next turn
            except Exception:
                logger.exception("presence lease loop failed; going on")
            gevent.sleep(self.leases.duration / 3)

    def renew(self) -> None:
        """Renew the lease; if it had lapsed (we were reaped), track our entries again."""
        me = self.ctx.client_prefix
        home = self.home
        lapsed = self.leases.renew(me) is None
        if lapsed and self.local:
            logger.warning(
                "presence: this process's lease had lapsed; tracking its %d entries again",
                len(self.local),
            )
            groups = {group for group, _ in self.local}
            home.call(home.client.sadd, self.groups_prefix + me, *groups)
            for (group, _channel), entry in list(self.local.items()):
                seq = self._run_track(group, entry)
                if seq:
                    self.on_event(group, join_event(group, entry, seq), "joins")

    def reap_expired(self) -> int:
        """Remove the entries of processes whose lease ran out; returns how many were reaped."""
        count = 0
        for process in self.leases.ended(100):
            if process == self.ctx.client_prefix:
                continue
            self.reap(process)
            count += 1
        return count

    def reap(self, process: str) -> None:
        """Remove every entry of ``process``, send its unsent events and the leaves (once)."""
        home = self.home
        me = self.ctx.client_prefix
        groups: Any = home.call(home.client.smembers, self.groups_prefix + process)
        if groups and process != me:
            # The claimed events become ours to send: if we die before, our reaper
            # must find these groups in our set.
            home.call(home.client.sadd, self.groups_prefix + me, *groups)
        for raw in sorted(groups):
            group = raw.decode("utf-8")
            shard = self.group_shard(group)
            on = "1" if self.events_on(group) else ""
            out = shard.call(_script(shard, "reap"), keys=self.keys(group), args=[process, me, on])
            for i in range(0, len(out), 4):
                kind = out[i].decode("utf-8")
                entry = PresenceEntry.unpack(out[i + 1].decode("utf-8"), out[i + 2])
                seq = int(out[i + 3])
                if kind.startswith("claimed "):
                    self.claimed_events += 1
                if kind.endswith("join"):
                    self.on_event(group, join_event(group, entry, seq), "joins")
                else:
                    self.on_event(group, leave_event(group, entry, seq), "leaves")
        pipe = home.client.pipeline(transaction=False)
        pipe.delete(self.groups_prefix + process)
        pipe.zrem(self.live_key, process)
        home.call(pipe.execute)
        self.reaped_processes += 1
        logger.info("presence: removed the entries of dead process %s", process)

    def close(self) -> None:
        """Leave cleanly: our entries go now (with their leave events), then our lease."""
        self.closed = True
        if self._loop is not None:
            self._loop.kill(block=False)
        if not self._announced:
            return
        try:
            self.reap(self.ctx.client_prefix)
        except LayerUnavailable:
            logger.info("presence: Redis unreachable at close; our entries expire with the lease")
        self.local.clear()
        self._announced.clear()

    def after_fork(self) -> None:
        self.unsent.clear()
        self.local.clear()
        self._announced.clear()
        self._loop = None
