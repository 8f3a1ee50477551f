"""Small shared records with a lifetime: marks and process heartbeats.

Both are plain Redis strings set with a ``PX`` time-to-live, so nobody has
to clean them up:

* marks (extension ``"marks"``, ``BaseChannelLayer.claim``) under
  ``<layout's key base>mark:<key>``, on the ring's shard for ``m:<key>``;
* heartbeats (:mod:`wsbridge.heartbeat`, ``wsbridge status``) under
  ``<prefix>:wsbridge:proc:<name>`` (msgpack), on the ring's shard for
  ``processes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from ...drops import record_drop
from .layout import LayoutContext
from .shard import Shard

__all__ = ["Marks", "Heartbeats"]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Marks:
    """``claim`` / ``put_mark`` / ``get_mark`` (see ``BaseChannelLayer.claim``).

    Args:
        ctx: placement.
        key_base: what mark keys start with (the layout's key prefix).
    """

    def __init__(self, ctx: LayoutContext, key_base: str) -> None:
        self.ctx = ctx
        self.key_base = key_base

    def _where(self, key: str) -> tuple[Shard, str]:
        return self.ctx.shard_for("m:" + key), f"{self.key_base}mark:{key}"

    def claim(self, key: str, ttl: float) -> bool:
        shard, name = self._where(key)
        return bool(shard.call(shard.client.set, name, b"1", nx=True, px=_ms(ttl)))

    def put(self, key: str, value: float, ttl: float) -> None:
        shard, name = self._where(key)
        shard.call(shard.client.set, name, repr(float(value)), px=_ms(ttl))

    def get(self, key: str) -> float | None:
        shard, name = self._where(key)
        raw = shard.call(shard.client.get, name)
        return None if raw is None else float(raw)


class Heartbeats:
    """Process heartbeats: one record per process, gone ``ttl`` s after its last beat."""

    def __init__(self, ctx: LayoutContext) -> None:
        self.ctx = ctx
        self.key_prefix = f"{ctx.prefix}:wsbridge:proc:"

    def publish(self, name: str, info: Mapping[str, Any], ttl: float) -> None:
        """Store the heartbeat on the ring's ``processes`` shard for ``ttl`` seconds.

        Raises:
            LayerUnavailable: that shard is down (the next beat tries again).
        """
        shard = self.ctx.shard_for("processes")
        data = msgpack.packb(dict(info), use_bin_type=True)
        shard.call(shard.client.set, self.key_prefix + name, data, px=int(ttl * 1000))

    def read(self) -> list[dict[str, Any]]:
        """Every live process's last heartbeat (those that stopped beating expired)."""
        shard = self.ctx.shard_for("processes")
        keys = shard.call(
            lambda: list(shard.client.scan_iter(match=self.key_prefix + "*", count=1000))
        )
        if not keys:
            return []
        out = []
        # On a cluster the heartbeats sit in many slots: one MGET per slot.
        client: Any = shard.client
        mget = client.mget_nonatomic if self.ctx.cluster else client.mget
        for raw in shard.call(mget, keys):
            if raw is None:
                continue
            try:
                out.append(msgpack.unpackb(raw, raw=False))
            except (ValueError, msgpack.UnpackException):
                record_drop("undecodable", detail="a process heartbeat")
        return out
