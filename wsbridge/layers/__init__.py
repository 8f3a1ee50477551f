"""Channel layers: where groups and channels live.

``get_channel_layer()`` returns the process's layer for an alias. For the
default alias one layer serves the whole process, chosen once, strongest
source first (:data:`SOURCES`, docs/topics/layers.rst):

1. ``explicit``: ``wrap(app, layer=...)`` or :func:`set_channel_layer`;
2. ``serve``: ``wsbridge serve --layer URL``;
3. ``env``: the ``WSBRIDGE_LAYER`` environment variable;
4. ``settings``: what :func:`configure` was given (Channels' ``CHANNEL_LAYERS``
   shape: ``{"default": {"BACKEND": "dotted.Path", "CONFIG": {...}}}``; Django
   sites: ``WSBRIDGE["LAYERS"]`` or ``CHANNEL_LAYERS``);
5. ``default``: the in-memory layer.

A weaker source never replaces a stronger one: the layer the sockets are
served on is the one views, ``Group`` and ``Channel`` send through.
"""

from __future__ import annotations

import importlib
import logging
import os
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
    "install_channel_layer",
    "channel_layer_source",
    "DEFAULT_ALIAS",
    "BACKEND_ALIASES",
    "SOURCES",
    "LEGACY_BACKENDS",
    "resolve_backend",
    "backend_class_path",
]

logger = logging.getLogger("wsbridge.layers")

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
        " It reaches this process only: for several processes on one host, use BACKEND 'redis'.",
    ),
}


#: Where a process's layer can come from, strongest first (see the module docstring).
SOURCES = ("explicit", "serve", "env", "settings", "default")

_lock = threading.RLock()
_settings: dict[str, Mapping[str, Any]] = {}
_layers: dict[str, BaseChannelLayer] = {}
_sources: dict[str, str] = {}


def _rank(source: str) -> int:
    return SOURCES.index(source)


def build_layer(spec: Mapping[str, Any], *, test: bool = False) -> BaseChannelLayer:
    """Build a layer from ``{"BACKEND": ..., "CONFIG": {...}, "TEST_CONFIG": {...}}``."""
    chosen = spec.get("TEST_CONFIG") if test and spec.get("TEST_CONFIG") else spec.get("CONFIG")
    backend, config = resolve_backend(spec.get("BACKEND", "memory"), dict(chosen or {}))
    module_name, _, class_name = backend.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        from ..extras import missing_extra

        hint = missing_extra(exc)
        raise ConfigurationError(
            f"cannot load channel layer backend {backend!r}: {hint or exc}"
        ) from exc
    except (AttributeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load channel layer backend {backend!r}: {exc}") from exc
    _warn_channels_name_without_compat(str(spec.get("BACKEND", "")), config)
    try:
        layer: BaseChannelLayer = cls(**config)
    except TypeError as exc:
        raise ConfigurationError(f"bad CONFIG for {backend}: {exc}") from exc
    return layer


def _warn_channels_name_without_compat(name: str, config: Mapping[str, Any]) -> None:
    # The Channels name reads as "works with my Channels site"; without compat it does not.
    if name.startswith("channels_redis.") and not config.get("compat"):
        logger.warning(
            "channel layer BACKEND %r is served by wsbridge's own Redis format, which does "
            "not share groups or channels with a Channels site on the same Redis. Add "
            '"compat": "channels_redis" to its CONFIG to interoperate (same hosts and '
            'prefix as the Channels site), or write BACKEND "redis" to say you do not need it.',
            name,
        )


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
    """Set the layer settings (the ``settings`` source).

    Layers built from older settings are closed. A default layer that a
    stronger source installed (``wrap(layer=)``, ``serve --layer``,
    ``WSBRIDGE_LAYER``) is kept, and an INFO line says the settings' default
    is not used.
    """
    with _lock:
        for alias, layer in list(_layers.items()):
            if _rank(_sources.get(alias, "default")) >= _rank("settings"):
                layer.close()
                _layers.pop(alias)
                _sources.pop(alias, None)
        _settings.clear()
        _settings.update(layers or {})
        kept = _sources.get(DEFAULT_ALIAS)
        if kept is not None and DEFAULT_ALIAS in _settings:
            logger.info(
                "channel layer settings: the default layer stays %r (from %s, which wins "
                "over settings)",
                _layers[DEFAULT_ALIAS],
                kept,
            )


def _from_env() -> BaseChannelLayer | None:
    from .urls import LAYER_ENV, layer_from_urls

    value = os.environ.get(LAYER_ENV, "").strip()
    return layer_from_urls(value, what=LAYER_ENV) if value else None


def get_channel_layer(alias: str = DEFAULT_ALIAS) -> BaseChannelLayer:
    """The process's layer for ``alias``, built on first use (see the module docstring).

    Raises:
        ConfigurationError: ``alias`` is not configured, or its settings (or
            ``WSBRIDGE_LAYER``) name no usable layer.
    """
    layer = _layers.get(alias)
    if layer is not None and not layer.closed:
        return layer
    with _lock:
        layer = _layers.get(alias)
        if layer is not None and layer.closed:  # closed by its owner: choose again
            _layers.pop(alias)
            _sources.pop(alias, None)
            layer = None
        if layer is None:
            env = _from_env() if alias == DEFAULT_ALIAS else None
            if env is not None:
                layer, source = env, "env"
            else:
                spec = _settings.get(alias)
                source = "settings"
                if spec is None:
                    if alias != DEFAULT_ALIAS:
                        raise ConfigurationError(f"no channel layer configured for alias {alias!r}")
                    spec, source = {"BACKEND": "memory"}, "default"
                layer = build_layer(spec)
            _layers[alias] = layer
            _sources[alias] = source
    return layer


def channel_layer_source(alias: str = DEFAULT_ALIAS) -> str | None:
    """Which of :data:`SOURCES` the current layer for ``alias`` came from (None: not built)."""
    return _sources.get(alias) if alias in _layers else None


def install_channel_layer(
    layer: BaseChannelLayer, source: str, alias: str = DEFAULT_ALIAS
) -> BaseChannelLayer:
    """Make ``layer`` the process's layer unless a stronger source installed one; return
    the layer in effect.

    ``wrap(layer=)`` calls it with ``"explicit"``, ``wsbridge serve --layer``
    with ``"serve"``. Replacing a different layer of the same strength is
    logged (INFO): two ``wrap()`` calls with two layers in one process.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown layer source {source!r}; one of {', '.join(SOURCES)}")
    with _lock:
        current = _layers.get(alias)
        current_source = _sources.get(alias, "default")
        if current is layer:
            if _rank(source) < _rank(current_source):
                _sources[alias] = source
            return layer
        if current is not None and not current.closed:
            if _rank(current_source) < _rank(source):
                logger.info(
                    "channel layer %r (from %s) is not used: %r (from %s) wins",
                    layer,
                    source,
                    current,
                    current_source,
                )
                return current
            if current_source == source:
                logger.info("channel layer %r (from %s) replaces %r", layer, source, current)
        _layers[alias] = layer
        _sources[alias] = source
        return layer


def set_channel_layer(layer: BaseChannelLayer | None, alias: str = DEFAULT_ALIAS) -> None:
    """Install ``layer`` as the process's layer for ``alias`` (None forgets it).

    This is the ``explicit`` source: it wins over every other one.
    """
    with _lock:
        if layer is None:
            _layers.pop(alias, None)
            _sources.pop(alias, None)
        else:
            _layers[alias] = layer
            _sources[alias] = "explicit"
