"""Origin checks for the WebSocket handshake and long-poll opens.

Browsers send ``Origin`` with every WebSocket handshake; a page on another
site that opens a socket to ours carries our cookies, so accepting it
would let that site act as the logged-in user (cross-site WebSocket
hijacking). The default allows the hosts in ``ALLOWED_HOSTS`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["origin_allowed", "header"]


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lowercase bytes) in ``scope``."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """True if a handshake with this ``Origin`` may go on.

    Args:
        origin: the header's value, or None when the client sent none
            (not a browser: a script or a native app, allowed because the
            attack this prevents needs a browser and its cookies).
        allowed: patterns of :mod:`wsbridge.transport.origin`: host patterns as
            in ``ALLOWED_HOSTS`` (``"example.com"``, ``".example.com"`` for
            subdomains, ``"*"``), or full origins (``"https://app.example.com:8443"``).
    """
    from wsbridge.transport.origin import origin_allowed as matches

    return matches(origin, allowed)
