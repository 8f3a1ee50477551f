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

from ..exceptions import ConfigurationError, warn_deprecated
from .base import BaseChannelLayer

__all__ = [
    "BaseChannelLayer",
    "get_channel_layer",
    "set_channel_layer",
    "configure",
    "build_layer",
    "DEFAULT_ALIAS",
    "BACKEND_ALIASES",
    "LEGACY_BACKENDS",
    "resolve_backend",
    "backend_class_path",
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

#: Channels 1.x (ASGI 1) backends: still accepted, with a deprecation warning.
#: Each maps to (wsbridge class, CONFIG keys it does not take, what to know).
LEGACY_BACKENDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "asgi_redis.RedisChannelLayer": ("wsbridge.layers.redis.RedisLayer", (), ""),
    "asgiref.inmemory.ChannelLayer": ("wsbridge.layers.memory.MemoryLayer", (), ""),
    "asgi_ipc.IPCChannelLayer": (
        "wsbridge.layers.memory.MemoryLayer",
        ("prefix", "channel_memory", "group_memory"),
        " It reaches this process only: for several processes on one host, use "
        "BACKEND 'redis'.",
    ),
}

_lock = threading.Lock()
_settings: dict[str, Mapping[str, Any]] = {}
_layers: dict[str, BaseChannelLayer] = {}


def build_layer(spec: Mapping[str, Any], *, test: bool = False) -> BaseChannelLayer:
    """Build a layer from ``{"BACKEND": ..., "CONFIG": {...}, "TEST_CONFIG": {...}}``."""
    chosen = spec.get("TEST_CONFIG") if test and spec.get("TEST_CONFIG") else spec.get("CONFIG")
    backend, config = resolve_backend(spec.get("BACKEND", "memory"), dict(chosen or {}))
    module_name, _, class_name = backend.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load channel layer backend {backend!r}: {exc}") from exc
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigurationError(f"bad CONFIG for {backend}: {exc}") from exc


def backend_class_path(backend: str) -> str:
    """The dotted class path a BACKEND name means; no warning (for checks and status)."""
    legacy = LEGACY_BACKENDS.get(backend)
    return legacy[0] if legacy is not None else BACKEND_ALIASES.get(backend, backend)


def resolve_backend(backend: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The class path a BACKEND name means, and the CONFIG to build it with.

    Short names (``"memory"``, ``"redis"``) and Channels 4 names map through
    :data:`BACKEND_ALIASES`. Channels 1.x names (:data:`LEGACY_BACKENDS`) map
    to wsbridge's layers with a :class:`~wsbridge.exceptions.WsbridgeDeprecationWarning`
    naming the BACKEND to write instead; CONFIG keys the new layer does not
    take are dropped (and named in the warning).
    """
    legacy = LEGACY_BACKENDS.get(backend)
    if legacy is None:
        return backend_class_path(backend), config
    target, dropped, note = legacy
    kept = {k: v for k, v in config.items() if k not in dropped}
    ignored = sorted(set(config) - set(kept))
    short = "redis" if target.endswith("RedisLayer") else "memory"
    warn_deprecated(
        f"channel layer BACKEND {backend!r} is a Channels 1.x name; it means {target}. "
        f"Write BACKEND {short!r} instead."
        + (f" CONFIG keys ignored: {', '.join(ignored)}." if ignored else "")
        + note
    )
    return target, kept


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
