"""Consistent hashing: which shard holds a group, a channel, a delayed message.

The ring places ``POINTS`` virtual points per shard, keyed by the shard's
*name* (its ``describe()``-d address), not its position in the list. Adding
a shard therefore moves only the keys that land on the new shard's points
(about 1/N of them), and re-ordering the ``hosts`` list moves nothing.
``wsbridge.layers.redis.reshard`` moves those keys when a shard is added.

``channels_redis_index`` is channels_redis 4.x's own (non-consistent)
placement, used in interop mode so both sides agree on where a key lives.
"""

from __future__ import annotations

import binascii
import bisect
import hashlib
from collections.abc import Sequence

__all__ = ["HashRing", "channels_redis_index", "POINTS"]

POINTS = 160


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Map names to shard indexes by consistent hashing.

    Args:
        names: one stable name per shard (the ``hosts`` entry's address).
    """

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"two shards have the same address: {list(names)}")
        self.names = list(names)
        points = []
        for index, name in enumerate(self.names):
            for replica in range(POINTS):
                points.append((_point(f"{name}#{replica}".encode()), index))
        points.sort()
        self._keys = [p for p, _ in points]
        self._owners = [i for _, i in points]
        self._cache: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def index(self, key: str) -> int:
        """The shard index that owns ``key``."""
        if len(self.names) == 1:
            return 0
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        position = bisect.bisect(self._keys, _point(key.encode("utf-8"))) % len(self._keys)
        owner = self._owners[position]
        if len(self._cache) < 50_000:
            self._cache[key] = owner
        return owner


def channels_redis_index(value: str, ring_size: int) -> int:
    """channels_redis 4.x's shard choice: CRC32 & 0xFFF scaled onto the host list."""
    if ring_size == 1:
        return 0
    bigval = binascii.crc32(value.encode("utf-8")) & 0xFFF
    return int(bigval / (4096 / float(ring_size)))
