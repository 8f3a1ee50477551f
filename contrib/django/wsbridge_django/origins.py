"""Origin checks for the WebSocket handshake and long-poll opens.

Browsers send ``Origin`` with every WebSocket handshake; a page on another
site that opens a socket to ours carries our cookies, so accepting it
would let that site act as the logged-in user (cross-site WebSocket
hijacking). The default allows the hosts in ``ALLOWED_HOSTS`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

__all__ = ["origin_allowed", "header"]


def header(scope: dict, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lowercase bytes) in ``scope``."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value
    return None


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """True if a handshake with this ``Origin`` may go on.

    Args:
        origin: the header's value, or None when the client sent none
            (not a browser: a script or a native app, allowed because the
            attack this prevents needs a browser and its cookies).
        allowed: host patterns as in ``ALLOWED_HOSTS`` (``"example.com"``,
            ``".example.com"`` for subdomains, ``"*"``), or full origins
            (``"https://app.example.com:8443"``).
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    origin = origin.strip()
    if not origin or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https", "ws", "wss") or not host:
        return False
    full = [a for a in allowed if "://" in a]
    if any(_same_origin(parts.scheme, host, port, a) for a in full):
        return True
    return _host_matches(host, (a for a in allowed if "://" not in a))


def _same_origin(scheme: str, host: str, port: int | None, allowed: str) -> bool:
    try:
        other = urlsplit(allowed)
        return (other.scheme, other.hostname, other.port) == (scheme, host, port)
    except ValueError:
        return False


def _host_matches(host: str, patterns: Iterable[str]) -> bool:
    from django.utils.http import is_same_domain

    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # urlsplit drops the brackets of IPv6 literals
    return any(pattern == "*" or is_same_domain(host, pattern.lower()) for pattern in patterns)
