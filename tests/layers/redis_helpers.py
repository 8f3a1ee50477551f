"""Helpers for the Redis layer tests: layers with unique prefixes, cleaned up."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import redis

from wsbridge.layers.redis import RedisLayer

SHARED_REDIS = "redis://127.0.0.1:6379/0"

__all__ = ["SHARED_REDIS", "make_layer_factory", "unique_prefix", "delete_prefix"]


def unique_prefix() -> str:
    return f"wsbtest{secrets.token_hex(4)}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key starting with ``prefix`` (SCAN + UNLINK, never FLUSHALL)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    finally:
        client.close()


@contextlib.contextmanager
def make_layer_factory(**defaults: Any) -> Iterator[Any]:
    """Yield ``make(**options) -> RedisLayer``; layers share one fresh prefix.

    All layers made share the prefix (so two of them act as two processes on
    one Redis); they are closed, and the prefix's keys deleted, at the end.
    """
    prefix = defaults.pop("prefix", None) or unique_prefix()
    made: list[RedisLayer] = []

    def make(**options: Any) -> RedisLayer:
        config = {"hosts": [SHARED_REDIS], "prefix": prefix, "retry_backoff": (0.02, 0.5)}
        config.update(defaults)
        config.update(options)
        layer = RedisLayer(**config)
        made.append(layer)
        return layer

    make.prefix = prefix  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        hosts = set()
        for layer in made:
            layer.close()
            hosts.update(s.spec.get("address") for s in layer.shards)
        for url in hosts:
            if url:
                with contextlib.suppress(redis.RedisError):
                    delete_prefix(url, prefix)
