"""channels_redis 4.x compatibility: its key layout and message format.

With ``compat="channels_redis"`` the layer reads and writes what
``channels_redis.core.RedisChannelLayer`` 4.x does, so a wsbridge site and a
Channels 4 site configured with the same hosts and prefix share groups and
channels::

    <prefix>:group:<group>         ZSET channel -> unix time added
    <prefix><channel>              ZSET for a named channel (no separator,
                                   as channels_redis), score = time sent
    <prefix><name>.<process>!      ZSET for all specific channels of one
                                   process, messages carry __asgi_channel__
    <prefix>:wsbridge:delayed      ZSET wsbridge's delayed messages

Members are 12 random bytes + msgpack(message) (Fernet-encrypted after the
random bytes when ``symmetric_encryption_keys`` is set, with the same key
derivation). Shards are chosen with channels_redis's CRC32 placement.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import gevent
import msgpack

from ...exceptions import ChannelFull, ConfigurationError, MessageDecodeError
from ..base import Message
from .codec import Decoded
from .layout import LayoutContext, decode_items
from .native import group_members
from .ring import channels_redis_index
from .shard import raise_restoring

if TYPE_CHECKING:
    from .history import RedisHistory
    from .lease import ProcessLeases
    from .shard import Shard

__all__ = ["ChannelsRedisLayout"]

ASGI_KEY = "__asgi_channel__"
_ASGI_KEY_PACKED = msgpack.packb(ASGI_KEY)
BATCH = 256


def _non_local(channel: str) -> str:
    return channel[: channel.index("!") + 1] if "!" in channel else channel


class ChannelsRedisLayout:
    """Keys and scripts of channels_redis 4.x."""

    name = "channels_redis/4"
    #: channels_redis has no structure for presence, history or reservations.
    extensions: tuple[str, ...] = ()

    def __init__(self, ctx: LayoutContext) -> None:
        self.ctx = ctx
        self.codec = ctx.codec
        self.prefix = ctx.prefix
        self.group_prefix = f"{self.prefix}:group:"
        self.delayed_key = f"{self.prefix}:wsbridge:delayed"
        self.restore_key = f"{self.prefix}:wsbridge:restoring"
        self.flush_pattern = self.prefix + "*"
        self._channel_prefixes = {"specific"}
        self._msgpack = self.codec.serializer.name == "msgpack"
        self._last_score = 0.0

    # -- placement -------------------------------------------------------------------

    def _shard(self, value: str) -> Shard:
        return self.ctx.shards[channels_redis_index(value, len(self.ctx.shards))]

    def group_shard(self, group: str) -> Shard:
        return self._shard(group)

    def reader_shards(self) -> list[Shard]:
        # channels_redis senders place a process's messages on several shards.
        return list(self.ctx.shards)

    def note_prefix(self, prefix: str) -> None:
        self._channel_prefixes.add(prefix)

    def inbox_keys(self) -> list[str]:
        cp = self.ctx.client_prefix
        return [f"{self.prefix}{name}.{cp}!" for name in sorted(self._channel_prefixes)]

    def queue_label(self, key: str) -> str:
        return key[len(self.prefix) :]

    def untag(self, name: str) -> str:
        return name

    # -- sending -----------------------------------------------------------------------

    def check_message(self, message: Message) -> None:
        if ASGI_KEY in message:
            raise ValueError(f"{ASGI_KEY!r} is reserved by the channels_redis format")

    def send(self, channel: str, message: Message) -> None:
        if "!" in channel:
            message = {**message, ASGI_KEY: channel}
        self._push(_non_local(channel), self.codec.cr_item(message), self._capacity(channel))

    def _capacity(self, channel: str) -> int:
        # channels_redis's rule, kept exactly: one key holds every specific
        # channel of a process, and its limit is the capacity of the channel
        # being sent to (default 100, channel_capacity patterns on the full name).
        return self.ctx.get_capacity(channel)

    def _score(self) -> float:
        # Strictly increasing per layer: a ZSET orders equal scores by the
        # (random) member bytes, which would shuffle one sender's messages.
        now = time.time()
        self._last_score = max(now, self._last_score + 1e-6)
        return self._last_score

    def _push(self, key_name: str, member: bytes, capacity: int) -> None:
        shard = self._shard(key_name)
        now = time.time()
        pushed = shard.call(
            shard.push_zset,
            keys=[self.prefix + key_name],
            args=[member, capacity, now, self.ctx.expiry, self._score()],
        )
        if not pushed:
            raise ChannelFull(f"channel {key_name!r} is at its capacity ({capacity})")

    def group_send(self, group: str, message: Message) -> int:
        shard = self.group_shard(group)
        # All in one script when the script can build every member's bytes:
        # plain msgpack, one shard, one capacity for every channel.
        fast = (
            self._msgpack
            and self.codec.crypter is None
            and len(self.ctx.shards) == 1
            and not self.ctx.get_capacity.has_overrides
        )
        packed = self.codec.dump_message(message)
        header = 1 if packed[0] & 0xF0 == 0x80 else (3 if packed[0] == 0xDE else 5)
        result = shard.call(
            shard.group_send_cr,
            keys=[self.group_prefix + group, self.restore_key],
            args=[
                self.ctx.group_min_score(),
                self.prefix,
                packed[header:],
                len(message),
                _ASGI_KEY_PACKED,
                os.urandom(8),
                time.time(),
                self.ctx.expiry,
                self.ctx.get_capacity.default,
                "1" if fast else "0",
                self._score(),
                self.ctx.get_capacity.default,  # the fast path runs only without overrides
            ],
        )
        if int(result[0]) < 0:
            raise_restoring(shard)
        skipped = int(result[0])
        for row in result[1:]:
            key_name, *names = (part.decode("utf-8") for part in row)
            try:
                self._push(
                    key_name,
                    self.codec.cr_item({**message, ASGI_KEY: names}),
                    self._capacity(names[0]),
                )
            except ChannelFull:
                skipped += len(names)
        return skipped

    def delayed_member(self, channel: str, message: Message, due: float) -> tuple[Shard, bytes]:
        if "!" in channel:
            message = {**message, ASGI_KEY: channel}
        key_name = _non_local(channel)
        shard = self._shard(key_name)
        head = b"%s|z|%d|%s|" % (
            os.urandom(8).hex().encode(),
            self._capacity(channel),
            (self.prefix + key_name).encode(),
        )
        return shard, head + self.codec.cr_item(message)

    # -- groups -----------------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        self.group_add_many(self.group_shard(group), [(group, channel)])

    def group_add_behind(self, group: str, channel: str) -> bool:
        return False  # channels_redis delivers by channel: the entry is the route

    def flush_joins(self) -> None:
        pass  # nothing is ever queued (group_add_behind)

    def group_add_many(self, shard: Shard, members: list[tuple[str, str]]) -> None:
        now = time.time()
        by_group: dict[str, dict[str, float]] = {}
        for group, channel in members:
            by_group.setdefault(group, {})[channel] = now
        pipe = shard.client.pipeline(transaction=False)
        for group, channels in by_group.items():
            pipe.zadd(self.group_prefix + group, channels)
            pipe.expire(self.group_prefix + group, max(1, int(self.ctx.group_expiry)))
        shard.call(pipe.execute)

    def group_discard(self, group: str, channel: str, *, last_local: bool = False) -> None:
        shard = self.group_shard(group)
        shard.call(shard.client.zrem, self.group_prefix + group, channel)

    def drop_process_from_group(self, group: str) -> None:
        """Nothing to do: channels_redis group items name their channels."""

    def is_queue(self, key: str) -> bool:
        return not key.startswith(self.group_prefix) and key != self.delayed_key

    def group_channels(self, group: str) -> list[str]:
        return group_members(self.ctx, self.group_shard(group), self.group_prefix + group)

    # -- reading -------------------------------------------------------------------------------

    def pop_inbox(self, shard: Shard, timeout: float) -> list[Decoded | None]:
        keys = self.inbox_keys()
        first = shard.call(shard.blocking.bzpopmin, keys, timeout)
        if first is None:
            return []
        key, member, score = first
        rest = shard.call(shard.client.zpopmin, key, BATCH) or []
        return decode_items(self.ctx, f"{shard.name} inbox", [(member, score), *rest], self.decode)

    def pop_stray(self, shard: Shard) -> list[Decoded | None]:
        return []  # every shard has its own reader in this layout

    def decode(self, raw: tuple[bytes, float]) -> Decoded | None:
        member, score = raw
        if float(score) < time.time() - self.ctx.expiry:
            return None
        message = self.codec.cr_decode(member)
        target = message.pop(ASGI_KEY, None)
        if isinstance(target, str):
            return Decoded([target], message)
        if isinstance(target, list) and all(isinstance(t, str) for t in target):
            return Decoded(target, message)
        raise MessageDecodeError(f"channels_redis message without a usable {ASGI_KEY}")

    def receive(self, channel: str, deadline: float | None) -> Message | None:
        """Receive from a named channel: BZPOPMIN, on every shard in turn when sharded."""
        key = self.prefix + channel
        shards = self.ctx.shards
        turn = 0
        result: Any
        while True:
            shard = shards[turn % len(shards)]
            turn += 1
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            wait = remaining if len(shards) == 1 else min(remaining, 0.1)
            if wait <= 0:
                popped = shard.call(shard.client.zpopmin, key, 1)
                result = (key, *popped[0]) if popped else None
            else:
                result = shard.call(shard.blocking.bzpopmin, [key], max(0.01, min(wait, 5.0)))
            if result is not None:
                _, member, score = result
                if float(score) >= time.time() - self.ctx.expiry:
                    try:
                        message = self.codec.cr_decode(member)
                        message.pop(ASGI_KEY, None)  # group sends name plain channels too
                        return message
                    except MessageDecodeError as exc:
                        self.ctx.count_bad_item(key, exc)
                continue
            if deadline is not None and time.monotonic() >= deadline and turn >= len(shards):
                return None
            gevent.sleep(0)

    # -- what channels_redis's format has no structure for ------------------------------

    def reserve(
        self, channel: str, timeout: float | None, visibility: float
    ) -> tuple[Message, bytes] | None:
        raise ConfigurationError("at-least-once channels need the native layout")

    def ack(self, channel: str, receipt: bytes) -> bool:
        raise ConfigurationError("at-least-once channels need the native layout")

    def history_store(self) -> RedisHistory | None:
        return None

    def process_leases(self) -> ProcessLeases | None:
        return None
