"""One parser for every way a command line or the environment names a layer.

``wsbridge serve --layer``, ``wsbridge worker --layer``, ``wsbridge status``,
``wsbridge check``, ``runworker`` and ``WSBRIDGE_LAYER`` all go through
:func:`from_url` (which builds with :func:`layer_from_urls`), so one spelling
means one layer everywhere:

* ``memory``: a new in-memory layer;
* one or more ``redis://``, ``rediss://`` or ``unix://`` URLs, one per
  shard, with layer options in the query string of any of them (put them on
  the first): ``prefix``, ``expiry``, ``group_expiry``, ``capacity``,
  ``compat`` (``compat=channels_redis``), ``cluster`` (``cluster=1``: the
  URLs are seed nodes of one Redis Cluster), ``lease``; the rest of the URL
  goes to redis-py;
* ``module:attr``: a layer instance, or a callable returning one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConfigurationError
from .base import BaseChannelLayer

__all__ = [
    "from_url",
    "layer_from_urls",
    "split_urls",
    "REDIS_SCHEMES",
    "URL_OPTIONS",
    "LAYER_ENV",
]

#: The environment variable naming the process's layer (see docs/topics/layers.rst).
LAYER_ENV = "WSBRIDGE_LAYER"
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on", ""):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r}: use 1/0, true/false, yes/no")


#: Query-string keys that are layer options (the others are redis-py's).
URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": str,
    "expiry": float,
    "group_expiry": float,
    "capacity": int,
    "compat": str,
    "cluster": _flag,  # the URLs are seed nodes of one Redis Cluster
    "lease": float,
}


def split_urls(value: str | Sequence[str] | None) -> list[str]:
    """``--layer`` values or ``WSBRIDGE_LAYER`` as a list (whitespace separates shards)."""
    values = [value] if isinstance(value, str) else list(value or ())
    return [part for item in values for part in item.split() if part]


def from_url(
    value: str | Sequence[str] | None, *, what: str = "--layer", env: bool = False
) -> BaseChannelLayer:
    """The layer a command's ``--layer`` values name; the process's layer when none is given.

    Args:
        value: ``--layer`` values (see the module docstring); None or empty:
            none given.
        what: where the value came from, for error messages.
        env: with no value, build a new layer from ``WSBRIDGE_LAYER`` when it
            is set (``wsbridge status`` and ``check`` look from outside);
            otherwise (and when it is unset) return ``get_channel_layer()``,
            the process's layer (which honours ``WSBRIDGE_LAYER`` too).

    Raises:
        ConfigurationError: a value that is none of the accepted forms, or
            several values that are not all Redis URLs.
    """
    if split_urls(value):
        return layer_from_urls(split_urls(value), what=what)
    from_env = os.environ.get(LAYER_ENV, "").strip() if env else ""
    if from_env:
        return layer_from_urls(from_env, what=LAYER_ENV)
    from . import get_channel_layer

    return get_channel_layer()


def layer_from_urls(value: str | Sequence[str], *, what: str = "--layer") -> BaseChannelLayer:
    """Build the layer ``value`` names (see the module docstring).

    Args:
        value: one spec, or several Redis URLs (one per shard); a string with
            spaces is split, so ``WSBRIDGE_LAYER="redis://a redis://b"`` works.
        what: where the value came from, for error messages.

    Raises:
        ConfigurationError: a value that is none of the accepted forms.
    """
    from . import build_layer

    values = split_urls(value)
    if not values:
        raise ConfigurationError(f"{what}: empty; use 'memory', a redis:// URL or module:attr")
    if len(values) == 1 and urlsplit(values[0]).scheme not in REDIS_SCHEMES:
        return _named_layer(values[0], what)
    config: dict[str, Any] = {}
    hosts = []
    for url in values:
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ConfigurationError(
                f"{what} {url!r}: with several layers given, each one must be a redis://, "
                "rediss:// or unix:// URL (one per shard)"
            )
        rest = []
        for key, item in parse_qsl(parts.query, keep_blank_values=True):
            if key in URL_OPTIONS:
                try:
                    config[key] = URL_OPTIONS[key](item)
                except ValueError as exc:
                    raise ConfigurationError(f"{what} {url!r}: bad {key}: {exc}") from exc
            else:
                rest.append((key, item))
        hosts.append(urlunsplit(parts._replace(query=urlencode(rest))))
    return build_layer({"BACKEND": "redis", "CONFIG": {"hosts": hosts, **config}})


def _named_layer(value: str, what: str) -> BaseChannelLayer:
    from . import build_layer

    if value == "memory":
        return build_layer({"BACKEND": "memory"})
    module_name, sep, attr = value.partition(":")
    if not sep:
        raise ConfigurationError(
            f"{what} {value!r}: use 'memory', a redis:// URL, or module:attribute"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{what} {value!r}: {exc}") from exc
    layer = target() if callable(target) and not isinstance(target, BaseChannelLayer) else target
    if not isinstance(layer, BaseChannelLayer):
        raise ConfigurationError(f"{what} {value!r} is a {type(layer).__name__}, not a layer")
    return layer
