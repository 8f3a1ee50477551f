"""The key layout as a strategy: what ``RedisLayer`` asks of it, and what it is given.

``RedisLayer`` does the validation, the local delivery and the background
greenlets; everything that depends on how keys and items look in Redis is
the layout's: :class:`~.native.NativeLayout` (wsbridge's own format,
version 1), :class:`~.cluster.ClusterLayout` (the same with hash tags) and
:class:`~.interop.ChannelsRedisLayout` (channels_redis 4.x). They implement
one :class:`Layout` protocol, and the layer never asks which one it holds.

A layout gets a :class:`LayoutContext` (shards, placement, codec, limits,
counters, this process's identity), never the layer itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ...drops import record_drop
from ...exceptions import ConfigurationError, MessageDecodeError
from ..base import CapacityTable, Message
from .codec import Codec, Decoded
from .ring import HashRing

if TYPE_CHECKING:
    from .history import RedisHistory
    from .lease import ProcessLeases
    from .shard import Shard

__all__ = ["Layout", "LayoutContext", "decode_items", "make_layout", "check_compat", "COMPAT_MODES"]

#: The ``compat`` values a layer accepts.
COMPAT_MODES = ("channels_redis",)


@dataclass(eq=False)
class LayoutContext:
    """What a layout needs from the layer: shared state, passed down, not a way back up.

    ``client_prefix`` is this process's identity; the layer updates it
    after a fork. ``counters`` is the layer's own dict (``stats()``).
    """

    prefix: str
    shards: list[Shard]
    ring: HashRing
    codec: Codec
    expiry: float
    group_expiry: float
    get_capacity: CapacityTable
    process_capacity: int
    lease: float
    client_prefix: str
    cluster: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def shard_for(self, key: str) -> Shard:
        """The shard owning ``key`` on the consistent-hash ring."""
        return self.shards[self.ring.index(key)]

    def group_min_score(self) -> float:
        """Memberships added before this time (unix seconds) have expired."""
        return time.time() - self.group_expiry

    def is_local(self, channel: str) -> bool:
        """True for a process-specific channel made by this process's ``new_channel()``."""
        bang = channel.find("!")
        return bang >= 0 and channel[:bang].endswith("." + self.client_prefix)

    def count(self, name: str, n: int = 1) -> int:
        """Add ``n`` to counter ``name``; returns the new value."""
        self.counters[name] = value = self.counters.get(name, 0) + n
        return value

    def count_bad_item(self, where: str, exc: MessageDecodeError) -> None:
        """Count and drop an item that does not decode (a rate-limited WARNING says so)."""
        self.count("bad_items")
        record_drop("undecodable", detail=f"from {where}: {exc}")


def decode_items(
    ctx: LayoutContext,
    where: str,
    raw_items: list[Any],
    decode: Callable[[Any], Decoded | None],
) -> list[Decoded | None]:
    """Decode what a reader popped; bad items are counted and left out, expired ones are None."""
    out: list[Decoded | None] = []
    for raw in raw_items:
        try:
            out.append(decode(raw))
        except MessageDecodeError as exc:
            ctx.count_bad_item(where, exc)
    return out


class Layout(Protocol):
    """One key layout and message format; the layer's strategy for everything in Redis.

    Every method may raise :class:`~wsbridge.exceptions.LayerUnavailable`
    (the shard is down) and the ``send`` methods
    :class:`~wsbridge.exceptions.ChannelFull`.
    """

    #: Format name shown by ``wsbridge status`` (``wsbridge/1``, ``channels_redis/4``).
    name: str
    #: Capabilities this layout adds to the layer's (``presence``, ``history``, ...).
    extensions: tuple[str, ...]
    delayed_key: str
    restore_key: str
    flush_pattern: str
    group_prefix: str

    # -- sending
    def check_message(self, message: Message) -> None:
        """Refuse (``ValueError``) a message this format cannot carry, before any I/O."""

    def send(self, channel: str, message: Message) -> None:
        """Put a validated message on ``channel`` now."""

    def delayed_member(self, channel: str, message: Message, due: float) -> tuple[Shard, bytes]:
        """The delayed-set entry for ``channel`` due at ``due`` and the shard to add it on."""

    def group_send(self, group: str, message: Message) -> int:
        """Send to every member; returns how many were skipped as full."""

    # -- groups
    def group_add(self, group: str, channel: str) -> None: ...

    def group_add_behind(self, group: str, channel: str) -> bool:
        """Write a local channel's membership of a group this process already receives,
        without waiting for it; False when this layout cannot (it delivers by channel,
        so the membership must be written first): call :meth:`group_add`."""

    def flush_joins(self) -> None:
        """Return once the joins queued by :meth:`group_add_behind` are written (or failed)."""

    def group_add_many(self, shard: Shard, members: list[tuple[str, str]]) -> None:
        """Write many ``(group, channel)`` memberships of groups on ``shard`` at once
        (a restore: a few round trips instead of one each)."""

    def group_discard(self, group: str, channel: str, *, last_local: bool = False) -> None:
        """Remove a member; ``last_local``: this process holds no other member of the group."""

    def group_channels(self, group: str) -> list[str]: ...

    def group_shard(self, group: str) -> Shard: ...

    def drop_process_from_group(self, group: str) -> None:
        """This process holds no member of ``group`` any more."""

    # -- reading
    def note_prefix(self, prefix: str) -> None:
        """``new_channel(prefix)`` was called (a layout may read per-prefix inboxes)."""

    def reader_shards(self) -> list[Shard]:
        """The shards this process must read its inbox on."""

    def pop_inbox(self, shard: Shard, timeout: float) -> list[Decoded | None]:
        """Wait up to ``timeout`` s for this process's inbox on ``shard``; a decoded batch.

        Undecodable items are counted (``ctx.count_bad_item``) and left out;
        expired ones are None.
        """

    def pop_stray(self, shard: Shard) -> list[Decoded | None]:
        """Without waiting: items for this process that landed on another shard."""

    def receive(self, channel: str, deadline: float | None) -> Message | None:
        """Blocking receive on a named channel until ``deadline`` (``time.monotonic``)."""

    def reserve(
        self, channel: str, timeout: float | None, visibility: float
    ) -> tuple[Message, bytes] | None:
        """At-least-once receive (``at_least_once``); ``ConfigurationError`` without it."""

    def ack(self, channel: str, receipt: bytes) -> bool: ...

    # -- capabilities backed by Redis structures of this layout
    def history_store(self) -> RedisHistory | None:
        """The group history of this layout, or None when it has none."""

    def process_leases(self) -> ProcessLeases | None:
        """The crash clean-up of this layout (``lease.py``), or None when it has none."""

    # -- status
    def is_queue(self, key: str) -> bool: ...

    def queue_label(self, key: str) -> str: ...

    def untag(self, name: str) -> str: ...


def check_compat(compat: str | None, cluster: bool, groups: object) -> None:
    """Refuse option combinations no layout serves (before anything is built)."""
    if compat is not None and compat not in COMPAT_MODES:
        raise ConfigurationError(
            f"unknown compat mode {compat!r}; known: {', '.join(COMPAT_MODES)}"
        )
    if compat and cluster:
        raise ConfigurationError(
            "compat='channels_redis' cannot run on a Redis Cluster: channels_redis's keys "
            "have no hash tags, so its scripts span slots; use the native layout"
        )
    if compat and groups:
        raise ConfigurationError(
            "history and presence (groups=...) need the native layout; "
            "they are not available with compat='channels_redis'"
        )


def make_layout(ctx: LayoutContext, compat: str | None) -> Layout:
    """The layout strategy for the options (the only place that looks at them)."""
    if ctx.cluster:
        from .cluster import ClusterLayout

        return ClusterLayout(ctx)
    if compat:
        from .interop import ChannelsRedisLayout

        return ChannelsRedisLayout(ctx)
    from .native import NativeLayout

    return NativeLayout(ctx)
