"""How layers turn messages into bytes: a small registry, msgpack by default.

Only data formats are registered here. Nothing is ever pickled: a pickle
read from a shared Redis would let whoever can write there run code in every
process. ``register`` refuses the name ``pickle`` outright.

Usage::

    serializer = get_serializer("msgpack")
    data = serializer.dumps({"type": "chat.message", "text": "hi"})
    serializer.loads(data)
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import msgpack

from ..exceptions import ConfigurationError, MessageDecodeError

__all__ = [
    "Serializer",
    "MsgpackSerializer",
    "JsonSerializer",
    "register",
    "get_serializer",
    "available",
]


class Serializer(Protocol):
    """What a layer needs from a serializer."""

    name: str

    def dumps(self, message: dict[str, Any]) -> bytes:
        """Encode a (validated) message; raise ``TypeError`` for what the format cannot carry."""

    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode bytes; raise ``MessageDecodeError`` when they are not a message."""


class MsgpackSerializer:
    """msgpack: every message type the layer contract allows, bytes included."""

    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def dumps(self, message: dict[str, Any]) -> bytes:
        # A Packer kept per serializer saves allocating one per message; it
        # is safe in greenlets because packb never switches.
        packed: bytes = self._packer.pack(message)
        return packed

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise MessageDecodeError(f"not a msgpack message: {exc}") from exc
        if not isinstance(message, dict):
            raise MessageDecodeError(f"decoded a {type(message).__name__}, not a message dict")
        return message


class JsonSerializer:
    """JSON (UTF-8): for Redis readers that are not Python; cannot carry bytes."""

    name = "json"

    def dumps(self, message: dict[str, Any]) -> bytes:
        try:
            return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except TypeError as exc:
            raise TypeError(
                f"the json serializer cannot encode this message ({exc}); "
                "use the msgpack serializer to carry bytes"
            ) from exc

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageDecodeError(f"not a JSON message: {exc}") from exc
        if not isinstance(message, dict):
            raise MessageDecodeError(f"decoded a {type(message).__name__}, not a message dict")
        return message


_registry: dict[str, type] = {"msgpack": MsgpackSerializer, "json": JsonSerializer}


def register(name: str, serializer_class: type) -> None:
    """Make ``serializer_class`` available as ``serializer=name`` in layer settings.

    Raises:
        ConfigurationError: for ``pickle`` (never allowed) or a class without
            ``dumps``/``loads``.
    """
    if "pickle" in name.lower():
        raise ConfigurationError(
            "pickle is never allowed as a layer serializer (remote code execution)"
        )
    if not (hasattr(serializer_class, "dumps") and hasattr(serializer_class, "loads")):
        raise ConfigurationError(f"serializer {name!r} must define dumps() and loads()")
    _registry[name] = serializer_class


def available() -> list[str]:
    """Names that ``get_serializer`` accepts."""
    return sorted(_registry)


def get_serializer(name: str) -> Serializer:
    """A serializer instance for ``name``.

    Raises:
        ConfigurationError: naming the known serializers when ``name`` is unknown.
    """
    try:
        cls = _registry[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown layer serializer {name!r}; choose one of {', '.join(available())} "
            "or register one with wsbridge.layers.serializers.register()"
        ) from None
    return cls()  # type: ignore[no-any-return]
