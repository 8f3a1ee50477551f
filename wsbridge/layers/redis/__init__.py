"""The Redis channel layer: many processes and hosts joined by Redis.

``wsbridge.layers.redis.RedisLayer`` is the class to name in settings
(``"BACKEND": "wsbridge.layers.redis.RedisLayer"``, or ``"redis"``). The
package is split by responsibility:

========== ===============================================================
layer      ``RedisLayer``: the public API, readers, mover, outages
native     the native key layout and message format (version 1)
interop    channels_redis 4.x's key layout and format (``compat=...``)
codec      item encoding, signing and encryption (Fernet)
scripts    the Lua scripts (one atomic round trip each)
shard      one Redis: pools, health, backoff
ring       consistent hashing over shards
config     ``hosts`` entries to redis-py pools (URLs, unix, Sentinel)
reshard    moving keys when a shard is added
status     ``stats()`` for ``wsbridge status``
========== ===============================================================
"""

from __future__ import annotations

try:
    import redis as _redis  # noqa: F401 - only to name the extra when it is missing
except ImportError as exc:  # pragma: no cover - exercised by tests/test_packaging.py
    from ...extras import missing_extra

    raise ModuleNotFoundError(
        f"the Redis channel layer needs redis-py: {missing_extra(exc)}", name=exc.name
    ) from exc

from .layer import RedisChannelLayer, RedisLayer  # noqa: E402

__all__ = ["RedisLayer", "RedisChannelLayer"]
