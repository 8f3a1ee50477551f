"""Channel layers: where groups and channels live.

``get_channel_layer()`` returns the process's layer for an alias, built from
the settings given to :func:`configure` (Channels' ``CHANNEL_LAYERS`` shape:
``{"default": {"BACKEND": "dotted.Path", "CONFIG": {...}}}``), or the
in-memory layer when nothing was configured.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError
from .base import BaseChannelLayer

__all__ = [
    "BaseChannelLayer",
    "get_channel_layer",
    "set_channel_layer",
    "configure",
    "build_layer",
    "DEFAULT_ALIAS",
    "BACKEND_ALIASES",
]

DEFAULT_ALIAS = "default"

#: Short names accepted for BACKEND, and Channels' names mapped to ours.
BACKEND_ALIASES = {
    "memory": "wsbridge.layers.memory.MemoryLayer",
    "redis": "wsbridge.layers.redis.RedisLayer",
    "channels.layers.InMemoryChannelLayer": "wsbridge.layers.memory.MemoryLayer",
    "channels_redis.core.RedisChannelLayer": "wsbridge.layers.redis.RedisLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer": "wsbridge.layers.redis.RedisLayer",
}

_lock = threading.Lock()
_settings: dict[str, Mapping[str, Any]] = {}
_layers: dict[str, BaseChannelLayer] = {}


def build_layer(spec: Mapping[str, Any], *, test: bool = False) -> BaseChannelLayer:
    """Build a layer from ``{"BACKEND": ..., "CONFIG": {...}, "TEST_CONFIG": {...}}``."""
    backend = spec.get("BACKEND", "memory")
    backend = BACKEND_ALIASES.get(backend, backend)
    module_name, _, class_name = backend.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load channel layer backend {backend!r}: {exc}") from exc
    chosen = spec.get("TEST_CONFIG") if test and spec.get("TEST_CONFIG") else spec.get("CONFIG")
    config: dict[str, Any] = dict(chosen or {})
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigurationError(f"bad CONFIG for {backend}: {exc}") from exc


def configure(layers: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Set the layer settings (closing layers already built from older ones)."""
    with _lock:
        for layer in _layers.values():
            layer.close()
        _layers.clear()
        _settings.clear()
        _settings.update(layers or {})


def get_channel_layer(alias: str = DEFAULT_ALIAS) -> BaseChannelLayer:
    """The layer for ``alias``, built on first use (in-memory if not configured)."""
    layer = _layers.get(alias)
    if layer is not None:
        return layer
    with _lock:
        layer = _layers.get(alias)
        if layer is None:
            spec = _settings.get(alias)
            if spec is None:
                if alias != DEFAULT_ALIAS:
                    raise ConfigurationError(f"no channel layer configured for alias {alias!r}")
                spec = {"BACKEND": "memory"}
            layer = _layers[alias] = build_layer(spec)
    return layer


def set_channel_layer(layer: BaseChannelLayer | None, alias: str = DEFAULT_ALIAS) -> None:
    """Install ``layer`` as the process's layer for ``alias`` (None forgets it)."""
    with _lock:
        if layer is None:
            _layers.pop(alias, None)
        else:
            _layers[alias] = layer
