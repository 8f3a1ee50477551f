"""The Redis channel layer: many processes and hosts joined by Redis.

``wsbridge.layers.redis.RedisLayer`` is the class to name in settings
(``"BACKEND": "wsbridge.layers.redis.RedisLayer"``, or ``"redis"``). The
package is split by responsibility:

========== ===============================================================
layer      ``RedisLayer``: the public API; delegates to the parts below
layout     the ``Layout`` protocol (the layouts' one signature) and the
           ``LayoutContext`` a layout is given instead of the layer
native     the native key layout and message format (version 1)
cluster    the native layout with hash tags, and the Redis Cluster shard
interop    channels_redis 4.x's key layout and format (``compat=...``)
delivery   attached callbacks and local buffers (in-process)
reader     inbox reader greenlets and the delayed-message mover
restore    this process's memberships, restored after an outage
lease      process leases (``LeaseTable``) and the dead-process reaper
presence   presence entries (native layout), on a ``LeaseTable`` too
history    per-group history streams (native layout)
reliable   at-least-once reserve / ack (native layout)
records    marks and process heartbeats (strings with a TTL)
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
