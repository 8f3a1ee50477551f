"""What ``RedisLayer.stats()`` reports (and ``wsbridge status`` prints).

Reads are bounded: at most ``LIMIT`` groups and ``LIMIT`` queues are listed
per shard (SCAN, never KEYS), with totals counted over everything scanned.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...exceptions import LayerUnavailable

if TYPE_CHECKING:
    from .layer import RedisLayer
    from .shard import Shard

__all__ = ["layer_stats", "LIMIT"]

LIMIT = 1000


def layer_stats(layer: RedisLayer) -> dict[str, Any]:
    """Per-shard reachability, groups, members per group, queue depths; local counters."""
    return {
        "backend": "redis",
        "layout": layer.layout.name,
        "prefix": layer.prefix,
        "client_prefix": layer.client_prefix,
        "attached": len(layer.local.attached),
        "buffered": layer.local.buffers.total(),
        "readers": layer.readers.alive(),
        "counters": dict(layer.counters),
        "shards": [_shard_stats(layer, shard) for shard in layer.shards],
    }


def _shard_stats(layer: RedisLayer, shard: Shard) -> dict[str, Any]:
    out: dict[str, Any] = {"name": shard.name, "index": shard.index, "outages": shard.outages}
    started = time.perf_counter()
    if not shard.ping():
        out.update(reachable=False, error=shard.last_error)
        return out
    out["reachable"] = True
    out["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    try:
        out.update(shard.call(_scan, layer, shard))
    except LayerUnavailable as exc:
        out.update(reachable=False, error=str(exc))
    return out


def _scan(layer: RedisLayer, shard: Shard) -> dict[str, Any]:
    client = shard.client
    layout = layer.layout
    group_keys, queue_keys = [], []
    for key in client.scan_iter(match=layout.flush_pattern, count=1000):
        name = key.decode("utf-8", "replace")
        if name.startswith(layout.group_prefix):
            group_keys.append(name)
        elif layout.is_queue(name) and not name.endswith("$inflight"):
            queue_keys.append(name)
    group_keys.sort()
    queue_keys.sort()
    min_score = layer.ctx.group_min_score()
    pipe = client.pipeline(transaction=False)
    for key in group_keys[:LIMIT]:
        pipe.zcount(key, min_score, "+inf")
    for key in queue_keys[:LIMIT]:
        pipe.type(key)
    answers = pipe.execute()
    # A cluster layout wraps names in hash tags; the channels_redis one does not.
    groups = {
        layout.untag(key[len(layout.group_prefix) :]): count
        for key, count in zip(group_keys[:LIMIT], answers[: len(group_keys[:LIMIT])], strict=True)
    }
    types = answers[len(group_keys[:LIMIT]) :]
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(queue_keys[:LIMIT], types, strict=True):
        (pipe.llen if kind == b"list" else pipe.zcard)(key)
    depths = dict(zip(queue_keys[:LIMIT], pipe.execute(), strict=True))
    return {
        "groups": groups,
        "group_count": len(group_keys),
        "members": sum(groups.values()),
        "queues": {layout.queue_label(key): depth for key, depth in depths.items()},
        "queue_count": len(queue_keys),
        "delayed": client.zcard(layout.delayed_key),
    }
