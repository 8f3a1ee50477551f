"""The one Origin matcher: which browser pages may open a WebSocket or a long-poll session.

Browsers send ``Origin`` with every WebSocket handshake (and with a
cross-origin ``fetch``), and send the site's cookies whatever page asked, so
a page on another site that opens a socket to ours would act as the visitor
(cross-site WebSocket hijacking). Every check in wsbridge goes through
:func:`origin_allowed`, with one pattern syntax wherever patterns are given:
``wrap(allowed_origins=[...])``, the long-poll ``allowed_origins`` option,
Django's ``WSBRIDGE["ALLOWED_ORIGINS"]`` and ``ALLOWED_HOSTS``.

Patterns (case does not matter, surrounding spaces are ignored):

================================  ==========================================================
``"*"``                           every origin, ``"null"`` included
``"null"``                        the opaque origin (sandboxed frames, ``file:`` pages)
``"https://app.example.com"``     a full origin: scheme, host and port must all match; no
                                  port means the scheme's default (443 here)
``"https://*.example.com"``       ``*`` in a full origin matches any run of characters in
                                  its part: any subdomain here, any port in
                                  ``"http://localhost:*"``
``"example.com"``                 a host: any web scheme (http, https, ws, wss), any port,
                                  as in ``ALLOWED_HOSTS``
``".example.com"``                the domain and every subdomain (``ALLOWED_HOSTS``' rule)
``"*.example.com"``               any subdomain (not the domain itself), any scheme and port
``"localhost:3000"``              a host and port; ``"localhost:*"``: any port
``"[::1]"``                       an IPv6 literal, in brackets as in a URL
================================  ==========================================================

Only ``*`` is a wildcard (``?`` and ``[`` are plain characters, so IPv6
literals need no escaping). A request without ``Origin`` is not from a
browser and is always allowed: the attack needs a browser and its cookies. A
malformed ``Origin`` is refused unless ``"*"`` is listed.

The same-host rule (``host=``) is separate from the patterns: the origin's
host and port equal the request's ``Host`` header, each side's default port
ignored. ``wrap()`` applies it when no patterns are given.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OriginPattern", "Origins", "origin_allowed", "same_host", "environ_checker"]

#: ``f(environ) -> bool``: may this request's page use the socket?
OriginCheck = Callable[[Mapping[str, Any]], bool]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_MALFORMED = "malformed"
_OPAQUE = "opaque"


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str  # lowercase; an IPv6 literal keeps its brackets
    port: int | None  # as sent: None when the origin names none

    @property
    def effective_port(self) -> int | None:
        return self.port if self.port is not None else _DEFAULT_PORTS.get(self.scheme)


def _parse_origin(text: str) -> _Origin | str:
    """An origin, or ``_OPAQUE`` ("null", no host), or ``_MALFORMED``."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:  # "http://[::1" or "http://a:port": not an origin we can allow
        return _MALFORMED
    if text.lower() == "null" or not parts.netloc:
        return _OPAQUE
    if not host or "@" in parts.netloc:
        return _MALFORMED
    if ":" in host:
        host = f"[{host}]"  # urlsplit drops the brackets of IPv6 literals
    return _Origin(parts.scheme.lower(), host.lower(), port)


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")) + r"\Z")


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, _, rest = text.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else None
    if text.count(":") > 1:  # a bare IPv6 literal
        return f"[{text}]", None
    host, colon, port = text.partition(":")
    return host, port if colon else None


@dataclass(frozen=True)
class OriginPattern:
    """One allowed-origin pattern, parsed once (the syntax is in the module docstring).

    Attributes:
        text: the pattern as given.
        scheme: a glob for the scheme, or None for any web scheme (host patterns).
        host: a glob for the host, or ``".domain"`` for a domain and its subdomains.
        port: a glob for the port, or None: the scheme's default for a full
            origin, any port for a host pattern.
    """

    text: str
    scheme: str | None
    host: str
    port: str | None

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        """Read a pattern; never raises (a pattern that cannot match just matches nothing)."""
        value = text.strip().lower()
        scheme: str | None = None
        if "://" in value:
            scheme, _, value = value.partition("://")
            value = value.split("/", 1)[0]  # "https://app.example.com/": the path is no part
        host, port = _split_host_port(value)
        return cls(text, scheme, host, port)

    def matches(self, origin: str) -> bool:
        """Does this pattern allow ``origin`` (an ``Origin`` header's value)?

        ``"*"`` and ``"null"`` are read by :class:`Origins`, which never
        makes a pattern of them.
        """
        parsed = _parse_origin(origin)
        return isinstance(parsed, _Origin) and self._matches(parsed)

    def _matches(self, origin: _Origin) -> bool:
        if self.scheme is None:
            if origin.scheme not in _DEFAULT_PORTS:
                return False
        elif not _glob(self.scheme).match(origin.scheme):
            return False
        if not self._host_matches(origin.host):
            return False
        if self.port is None:
            if self.scheme is None:
                return True
            return origin.port in (None, _DEFAULT_PORTS.get(origin.scheme))
        return _glob(self.port).match(str(origin.effective_port)) is not None

    def _host_matches(self, host: str) -> bool:
        if self.host.startswith("."):
            return host == self.host[1:] or host.endswith(self.host)
        return _glob(self.host).match(host) is not None


class Origins:
    """A list of allowed-origin patterns, parsed once; see the module docstring.

    Args:
        patterns: the patterns (``["https://*.example.com", "localhost:*"]``).
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.texts = tuple(p.strip().lower() for p in patterns)
        self.any = "*" in self.texts
        self.null = self.any or "null" in self.texts
        self.patterns = tuple(
            OriginPattern.parse(p) for p in self.texts if p not in ("*", "null", "")
        )

    def allows(self, origin: str | None, *, host: str | None = None, scheme: str = "http") -> bool:
        """Is a page at ``origin`` allowed?

        Args:
            origin: the ``Origin`` header, or None when the client sent none
                (not a browser: allowed).
            host: the request's ``Host`` header, to allow the same host as
                well; None to match the patterns only.
            scheme: the request's scheme (``wsgi.url_scheme``), whose default
                port ``host`` may omit.

        Returns:
            True to go on; False to refuse (403).
        """
        if origin is None or self.any:
            return True
        parsed = _parse_origin(origin)
        if parsed == _OPAQUE:
            return self.null
        if not isinstance(parsed, _Origin):
            return False
        if host is not None and same_host(origin, host, scheme=scheme):
            return True
        return any(pattern._matches(parsed) for pattern in self.patterns)


def _netloc(scheme: str, netloc: str) -> str:
    netloc = netloc.strip().lower()
    default = ":80" if scheme in ("http", "ws") else ":443"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


def same_host(origin: str, host: str, *, scheme: str = "http") -> bool:
    """Does ``origin`` name the request's own ``Host`` (default ports ignored)?

    The schemes are not compared: behind a proxy that ends TLS the request's
    scheme is ``http`` while the page is ``https``.
    """
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if not parts.netloc:
        return False
    return _netloc(parts.scheme, parts.netloc) == _netloc(scheme, host)


def origin_allowed(
    origin: str | None,
    allowed: Iterable[str] | None,
    *,
    host: str | None = None,
    scheme: str = "http",
) -> bool:
    """Is a page at ``origin`` allowed? The one check; see :meth:`Origins.allows`.

    Args:
        origin: the ``Origin`` header, or None (allowed: not a browser).
        allowed: patterns (the module docstring), or None for none.
        host: the request's ``Host``, to allow the same host too.
        scheme: the request's scheme.
    """
    return Origins(allowed or ()).allows(origin, host=host, scheme=scheme)


def environ_checker(allowed: Iterable[str] | None, *, same_host: bool | None = None) -> OriginCheck:
    """The Origin check of a WSGI request as ``f(environ) -> bool``.

    Args:
        allowed: patterns; None for "the request's own host only".
        same_host: also allow the request's own host; by default only when
            ``allowed`` is None (a list replaces the same-host rule, so a site
            behind several names lists each).
    """
    origins = Origins(allowed or ())
    with_host = allowed is None if same_host is None else same_host

    def check(environ: Mapping[str, Any]) -> bool:
        host = environ.get("HTTP_HOST") if with_host else None
        return origins.allows(
            environ.get("HTTP_ORIGIN"), host=host, scheme=environ.get("wsgi.url_scheme", "http")
        )

    return check
