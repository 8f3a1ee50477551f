"""Path syntax for routes: Django's ``path()`` converters, without Django.

``"ws/chat/<str:room>/"`` compiles to an anchored regex whose named groups
are converted by :data:`CONVERTERS` (``str``, ``int``, ``slug``, ``uuid``,
``path``); :func:`register_converter` adds one. :mod:`wsbridge.consumers.routing`
uses this to build its routes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import RoutingError

__all__ = ["Converter", "CONVERTERS", "register_converter", "compile_path"]


@dataclass(frozen=True)
class Converter:
    """How one ``<converter:name>`` matches (``regex``) and what it yields (``to_python``)."""

    regex: str
    to_python: Callable[[str], Any]


def _to_uuid(value: str) -> Any:
    # imported here: on Python 3.10 uuid imports platform and subprocess, which a
    # bare ``import wsbridge`` (or wsbridge.protocol) must not load
    import uuid

    return uuid.UUID(value)


#: Converter name (``<int:pk>``) -> how it matches; :func:`register_converter` adds one.
CONVERTERS: dict[str, Converter] = {
    "str": Converter(r"[^/]+", str),
    "int": Converter(r"[0-9]+", int),
    "slug": Converter(r"[-a-zA-Z0-9_]+", str),
    "uuid": Converter(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", _to_uuid),
    "path": Converter(r".+", str),
}

_PARAM_RE = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def register_converter(name: str, regex: str, to_python: Callable[[str], Any] = str) -> None:
    """Add a path converter usable as ``<name:value>`` in ``path()`` patterns.

    ``to_python`` may raise ``ValueError`` to make the route not match.
    """
    CONVERTERS[name] = Converter(regex, to_python)


def compile_path(pattern: str, *, end: bool) -> tuple[re.Pattern[str], dict[str, Converter]]:
    """Compile a ``path()`` pattern; return its regex and the converter of each parameter.

    ``end`` anchors the regex at the end of the path (a consumer route); a
    prefix of nested routes is not anchored.

    Raises:
        RoutingError: a bad parameter name, an unknown converter, a repeated
            parameter, or an unbalanced ``<`` / ``>``.
    """
    parts = ["^"]
    converters: dict[str, Converter] = {}
    pos = 0
    for m in _PARAM_RE.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        pos = m.end()
        name = m.group("name")
        if not name.isidentifier():
            raise RoutingError(f"path {pattern!r}: {name!r} is not a valid parameter name")
        conv_name = m.group("converter") or "str"
        try:
            converter = CONVERTERS[conv_name]
        except KeyError:
            raise RoutingError(
                f"path {pattern!r}: unknown converter {conv_name!r} "
                f"(known: {', '.join(sorted(CONVERTERS))}; add one with register_converter())"
            ) from None
        if name in converters:
            raise RoutingError(f"path {pattern!r}: parameter {name!r} appears twice")
        converters[name] = converter
        parts.append(f"(?P<{name}>{converter.regex})")
    tail = pattern[pos:]
    if "<" in tail or ">" in tail:
        raise RoutingError(f"path {pattern!r}: unbalanced '<' or '>' in {tail!r}")
    parts.append(re.escape(tail))
    if end:
        parts.append(r"\Z")
    return re.compile("".join(parts)), converters
