"""Who is on a connection: per-user groups, sends to a user, revocation, connect tokens.

Every authenticated connection (WebSocket, long-poll or SSE) is also a
member of its user's group, :func:`user_group` (``"wsbridge.user.<id>"``),
and, when the site names the login session, of that session's group
(:func:`session_group`). A process that can reach the channel layer (a
view, a signal handler, a worker) then talks to all of a user's
connections::

    wsbridge.send_to_user(user, "you have mail")           # straight to the client
    wsbridge.send_to_user(user, {"type": "inbox.update"})  # to the consumer's handler
    wsbridge.revoke_user(user, "permissions changed")      # closes them, code 4403

Control messages (``wsbridge.close``) are handled by the connection runner
before the consumer sees anything, so no consumer can ignore a revocation.

Close codes chosen here (4000-4499 are final for wsbridge.js, 4500-4999
make it reconnect):

* ``REVOKED`` 4403: the user or session was revoked (logout, password
  change, deactivation, :func:`revoke_user`); do not reconnect with the same
  credentials.
* ``KICKED`` 4409: an operator removed the connection (``wsbridge kick``).
* ``TOKEN_EXPIRED`` 4511: the connect token expired while the socket was
  open; refresh it and reconnect.

Connect tokens (:class:`ConnectTokens`) are short-lived signed claims for
clients without cookies; see ``docs/topics/identity.rst``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from .protocol.closecodes import CloseCode

__all__ = [
    "IdentityCloseCode",
    "REVOKED",
    "KICKED",
    "TOKEN_EXPIRED",
    "user_id",
    "user_group",
    "session_group",
    "send_to_user",
    "revoke_user",
    "revoke_session",
    "kick",
    "IdentityOptions",
    "ConnectTokens",
    "HmacTokenCodec",
    "TokenError",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "BEARER_SUBPROTOCOL",
    "TOKEN_QUERY_PARAM",
]

logger = logging.getLogger("wsbridge.identity")


class IdentityCloseCode(IntEnum):
    """The close codes of this module: :class:`~wsbridge.protocol.closecodes.CloseCode`'s.

    Kept for the code that names them here; the values come from ``CloseCode``.
    """

    REVOKED = int(CloseCode.REVOKED)
    KICKED = int(CloseCode.KICKED)
    TOKEN_EXPIRED = int(CloseCode.TOKEN_EXPIRED)


REVOKED = IdentityCloseCode.REVOKED
KICKED = IdentityCloseCode.KICKED
TOKEN_EXPIRED = IdentityCloseCode.TOKEN_EXPIRED

#: The layer message type a connection treats as "close now" (never reaches a consumer).
CONTROL_CLOSE = "wsbridge.close"
#: The layer message type delivered straight to the client by the runner.
CONTROL_DELIVER = "wsbridge.deliver"

#: ``Sec-WebSocket-Protocol`` entry carrying a token: ``"wsbridge.token.<token>"``.
TOKEN_SUBPROTOCOL_PREFIX = "wsbridge.token."
#: Offered beside the token entry; the server selects it when the consumer selects none.
BEARER_SUBPROTOCOL = "wsbridge.bearer"
#: Query-string parameter carrying a token (``?access_token=...``).
TOKEN_QUERY_PARAM = "access_token"

_PLAIN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


# -- naming ------------------------------------------------------------------------------


def user_id(user_or_id: Any) -> str | None:
    """The id a user is addressed by: an int/str as is, else ``pk`` (or ``id``).

    Returns None for None, anonymous users (``is_authenticated`` False) and
    objects without an id.
    """
    if user_or_id is None:
        return None
    if isinstance(user_or_id, bool):
        raise TypeError("a user id cannot be a bool")
    if isinstance(user_or_id, (str, int)):
        text = str(user_or_id)
        return text or None
    if getattr(user_or_id, "is_authenticated", True) is False:
        return None
    for attr in ("pk", "id"):
        value = getattr(user_or_id, attr, None)
        if value is not None:
            return str(value)
    return None


def _safe(ident: str) -> str:
    # Group names allow [A-Za-z0-9._-]; ids outside that (emails, long ids) are hashed.
    if _PLAIN_ID.match(ident):
        return ident
    return "h" + hashlib.sha256(ident.encode("utf-8")).hexdigest()[:40]


def user_group(user_or_id: Any) -> str:
    """The group every connection of a user is in: ``"wsbridge.user.<id>"``.

    Ids made of ``[A-Za-z0-9_-]`` (at most 64) are used as they are; any other
    id is replaced by ``"h"`` and 40 hex digits of its SHA-256.

    Raises:
        ValueError: ``user_or_id`` names no user (None, anonymous).
    """
    ident = user_id(user_or_id)
    if ident is None:
        raise ValueError(f"{user_or_id!r} names no authenticated user")
    return "wsbridge.user." + _safe(ident)


def session_group(session_ref: str) -> str:
    """The group of the connections opened with one login session.

    ``session_ref`` is any stable string naming the session (Django: its
    key); only a digest of it is used, so the group name reveals nothing.
    """
    digest = hashlib.sha256(("wsbridge.session:" + session_ref).encode("utf-8")).hexdigest()
    return "wsbridge.session." + digest[:40]


def _layer(layer: Any) -> Any:
    if layer is not None:
        return layer
    from .layers import get_channel_layer

    found = get_channel_layer()
    if found is None:
        raise RuntimeError("no channel layer is configured: per-user sends need one")
    return found


# -- sending and closing -------------------------------------------------------------------


def send_to_user(
    user_or_id: Any, message: str | bytes | dict[str, Any], *, layer: Any = None
) -> int:
    """Send to every connection of a user, in any process, on any transport.

    Args:
        user_or_id: a user object or its id.
        message: a ``str``/``bytes`` goes straight to the client (a WebSocket
            or long-poll frame, an SSE ``data:`` event) whatever the consumer;
            a dict with ``"type"`` is dispatched to the consumer's handler, as
            a group message is.
        layer: the channel layer (default: the configured one).

    Returns:
        How many member connections were skipped because they were full.
    """
    if isinstance(message, str):
        event: dict[str, Any] = {"type": CONTROL_DELIVER, "text": message}
    elif isinstance(message, (bytes, bytearray)):
        event = {"type": CONTROL_DELIVER, "bytes": bytes(message)}
    elif isinstance(message, dict):
        event = message
    else:
        raise TypeError(f"send_to_user() takes str, bytes or a dict, not {type(message).__name__}")
    return int(_layer(layer).group_send(user_group(user_or_id), event) or 0)


def _close_event(code: int, reason: str, *, revoked: bool) -> dict[str, Any]:
    return {
        "type": CONTROL_CLOSE,
        "code": int(code),
        "reason": str(reason)[:120],
        "revoked": revoked,
    }


#: Seconds a revocation mark is kept: longer than any connect token lives.
REVOCATION_TTL = 24 * 3600.0


def revoke_user(
    user_or_id: Any, reason: str = "revoked", *, code: int = REVOKED, layer: Any = None
) -> None:
    """Close every connection of a user (every process) and refuse its older tokens.

    The connections close with ``code`` (4403) and ``reason`` (the client
    sees it; long-poll sessions end with 410 and the reason). Connect tokens
    issued before this call are refused from now on (the mark lives in the
    layer for ``REVOCATION_TTL``). Cookie sessions are the site's to end:
    Django's logout, password change and ``is_active=False`` do it.
    """
    lay = _layer(layer)
    ident = user_id(user_or_id)
    if ident is None:
        raise ValueError(f"{user_or_id!r} names no authenticated user")
    _mark(lay, "revoked.user." + _safe(ident))
    lay.group_send(user_group(ident), _close_event(code, reason, revoked=True))
    logger.info("revoked user %s: %s", _safe(ident), reason)


def revoke_session(
    session_ref: str, reason: str = "logged out", *, code: int = REVOKED, layer: Any = None
) -> None:
    """Close the connections of one login session (logout) and refuse its tokens."""
    lay = _layer(layer)
    group = session_group(session_ref)
    _mark(lay, "revoked.session." + group)
    lay.group_send(group, _close_event(code, reason, revoked=True))


def _mark(layer: Any, key: str) -> None:
    if "marks" in getattr(layer, "extensions", ()):
        layer.put_mark(key, time.time(), REVOCATION_TTL)
    else:
        logger.warning("layer %r has no marks: revoked tokens stay valid until they expire", layer)


def kick(
    *,
    user: Any = None,
    channel: str | None = None,
    group: str | None = None,
    reason: str = "removed by an operator",
    code: int = KICKED,
    layer: Any = None,
) -> None:
    """Close connections by user, by channel name or by group, in every process.

    Give exactly one of ``user``, ``channel``, ``group``. The client sees
    ``code`` (4409) and ``reason``. Nothing is revoked: the client may
    connect again (use :func:`revoke_user` to refuse its tokens).
    """
    given = [
        name
        for name, value in (("user", user), ("channel", channel), ("group", group))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError("kick() takes exactly one of user=, channel=, group=")
    lay = _layer(layer)
    event = _close_event(code, reason, revoked=False)
    if user is not None:
        lay.group_send(user_group(user), event)
    elif group is not None:
        lay.group_send(group, event)
    else:
        assert channel is not None
        lay.send(channel, event)


# -- connect tokens -------------------------------------------------------------------------


class TokenError(Exception):
    """A connect token was refused; ``kind`` says why (never the token itself)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # "malformed", "forged", "expired", "audience", "replayed", "revoked"


class TokenCodec(Protocol):
    """Turns claims into a signed string and back; raises ``TokenError("forged")``."""

    def encode(self, claims: dict[str, Any]) -> str: ...

    def decode(self, token: str) -> dict[str, Any]: ...


class HmacTokenCodec:
    """HMAC-SHA256 over compact JSON, base64url: ``<payload>.<signature>``.

    The stdlib-only codec for sites without Django (itsdangerous-like; the
    Django app signs with ``django.core.signing`` instead). ``secret`` must
    be the same in every process; ``salt`` separates token kinds.
    """

    def __init__(self, secret: str | bytes, *, salt: str = "wsbridge.connect-token") -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._key = hashlib.sha256(salt.encode("utf-8") + b"\0" + key).digest()

    def _sign(self, payload: bytes) -> str:
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def encode(self, claims: dict[str, Any]) -> str:
        body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")
        payload = base64.urlsafe_b64encode(body).rstrip(b"=")
        return payload.decode("ascii") + "." + self._sign(payload)

    def decode(self, token: str) -> dict[str, Any]:
        payload, dot, signature = token.encode("ascii", "replace").partition(b".")
        if not dot or not payload or not signature:
            raise TokenError("malformed")
        if not hmac.compare_digest(self._sign(payload), signature.decode("ascii", "replace")):
            raise TokenError("forged")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except ValueError as exc:
            raise TokenError("malformed") from exc
        if not isinstance(claims, dict):
            raise TokenError("malformed")
        return claims


UserLoader = Callable[[str, dict[str, Any]], Any]


@dataclass
class ConnectTokens:
    """Issues and checks connect tokens.

    Claims: ``sub`` (user id), ``aud`` (this site), ``iat``/``exp`` (unix
    seconds), ``jti`` (random id), ``ses`` (optional login-session ref).

    *Replay*: a token opens one connection. Its ``jti`` is claimed in the
    layer (``claim``, shared by every process) at the first handshake and
    kept until the token expires; a second handshake with it is refused.
    A refresh over an open socket spends the new token the same way.

    Args:
        codec: signs and verifies (:class:`HmacTokenCodec`, or Django's).
        audience: names this site; tokens of another site are refused.
        ttl: seconds a token lives (keep it short: 5 minutes by default).
        user_loader: ``f(user_id, claims) -> user or None``; None (or an
            anonymous user) refuses the token. Plain WSGI sites supply it.
        layer: where jtis and revocation marks live (default: the configured one).
    """

    codec: TokenCodec
    audience: str = "wsbridge"
    ttl: float = 300.0
    user_loader: UserLoader | None = None
    layer: Any = None
    counters: dict[str, int] = field(default_factory=dict)

    def issue(
        self,
        user_or_id: Any,
        *,
        session_ref: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A new token for ``user_or_id`` (give it to the client; never log it)."""
        ident = user_id(user_or_id)
        if ident is None:
            raise ValueError("connect tokens are for authenticated users")
        now = time.time()
        claims: dict[str, Any] = dict(extra or {})
        # iat rounded down: a token issued just before a revocation is never
        # stamped after it (a token of the same millisecond is refused: safe side).
        claims.update(
            sub=ident,
            aud=self.audience,
            iat=math.floor(now * 1000) / 1000,
            exp=round(now + self.ttl, 3),
            jti=secrets.token_urlsafe(16),
        )
        if session_ref is not None:
            claims["ses"] = session_group(session_ref)
        return self.codec.encode(claims)

    def verify(self, token: str, *, spend: bool = True) -> dict[str, Any]:
        """Check a token; return its claims. Spends its jti unless ``spend=False``.

        Raises:
            TokenError: malformed, forged, expired, audience (another site's),
                revoked (issued before a revocation) or replayed.
        """
        try:
            claims = self._check(token, spend)
        except TokenError as exc:
            self.counters[exc.kind] = self.counters.get(exc.kind, 0) + 1
            raise
        self.counters["accepted"] = self.counters.get("accepted", 0) + 1
        return claims

    def _check(self, token: str, spend: bool) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise TokenError("malformed")
        claims = self.codec.decode(token)
        for key, kind in (("sub", str), ("aud", str), ("jti", str)):
            if not isinstance(claims.get(key), kind):
                raise TokenError("malformed", f"claim {key!r}")
        for key in ("iat", "exp"):
            if type(claims.get(key)) not in (int, float):
                raise TokenError("malformed", f"claim {key!r}")
        if not hmac.compare_digest(claims["aud"], self.audience):
            raise TokenError("audience")
        now = time.time()
        if claims["exp"] <= now:
            raise TokenError("expired")
        layer = _layer(self.layer)
        if self._revoked(layer, claims):
            raise TokenError("revoked")
        if spend:
            lifetime = max(1.0, claims["exp"] - now + 1.0)
            if "marks" not in getattr(layer, "extensions", ()):
                raise TokenError("replayed", "the layer cannot record spent tokens")
            if not layer.claim("jti." + claims["jti"], lifetime):
                raise TokenError("replayed")
        return claims

    @staticmethod
    def _revoked(layer: Any, claims: dict[str, Any]) -> bool:
        if "marks" not in getattr(layer, "extensions", ()):
            return False
        keys = ["revoked.user." + _safe(claims["sub"])]
        if isinstance(claims.get("ses"), str):
            keys.append("revoked.session." + claims["ses"])
        for key in keys:
            when = layer.get_mark(key)
            if when is not None and claims["iat"] <= when:
                return True
        return False

    def load_user(self, claims: dict[str, Any]) -> Any:
        """The user the claims name (``user_loader``), or the id itself without a loader."""
        if self.user_loader is None:
            return claims["sub"]
        user = self.user_loader(claims["sub"], claims)
        if user is None or getattr(user, "is_authenticated", True) is False:
            raise TokenError("revoked", "the user loader refused the user")
        return user


Validator = Callable[[dict[str, Any]], "str | None"]


@dataclass
class IdentityOptions:
    """``wrap(app, identity=IdentityOptions(...))``: who a connection is, and re-checks.

    Args:
        tokens: accept connect tokens (``?access_token=`` or the
            ``wsbridge.token.<token>`` subprotocol); None accepts none.
        validator: ``f(scope) -> None`` while the connection may stay, or a
            reason string to close it with ``REVOKED``. Called every
            ``recheck_interval`` seconds for each authenticated connection
            (Django: is the session still live, the user still active?).
        recheck_interval: seconds between two checks of one connection.
        user_key: ``f(scope) -> id or None``; default: ``scope["user"]``'s id.
        session_ref: ``f(scope) -> str or None`` naming the login session, for
            per-session revocation (Django: the session key).
    """

    tokens: ConnectTokens | None = None
    validator: Validator | None = None
    recheck_interval: float = 60.0
    user_key: Callable[[dict[str, Any]], str | None] | None = None
    session_ref: Callable[[dict[str, Any]], str | None] | None = None

    def __post_init__(self) -> None:
        if not self.recheck_interval > 0:
            raise ValueError("recheck_interval must be > 0 seconds")


#: Process-wide options, for connections whose transport set none in the scope.
_default_options: list[IdentityOptions] = [IdentityOptions()]


def set_default_options(options: IdentityOptions) -> None:
    """Make ``options`` the default of this process (``wrap(identity=...)`` calls it)."""
    _default_options[0] = options


def options_for(scope: dict[str, Any]) -> IdentityOptions:
    found = scope.get("wsbridge.identity")
    return found if isinstance(found, IdentityOptions) else _default_options[0]


def authenticate_scope(scope: dict[str, Any], options: IdentityOptions | None) -> str | None:
    """Take a connect token from the scope (query string or subprotocol), set the user.

    Call before the consumer is built. Removes the token entry from
    ``scope["subprotocols"]``. Returns None to go on, or the refusal kind
    (the transport answers 403 and logs the kind, never the token).
    """
    if options is not None:
        scope["wsbridge.identity"] = options
    token = _token_in(scope)
    if token is None:
        return None
    tokens = options.tokens if options is not None else None
    if tokens is None:
        return "tokens are not enabled"
    try:
        claims = tokens.verify(token)
        user = tokens.load_user(claims)
    except TokenError as exc:
        logger.info(
            "refused connect token for %s %s: %s",
            scope.get("transport"),
            scope.get("path"),
            exc.kind,
        )
        return exc.kind
    scope["user"] = user
    scope["wsbridge.token_claims"] = claims
    if isinstance(claims.get("ses"), str):
        scope["wsbridge.session_group"] = claims["ses"]
    return None


def _token_in(scope: dict[str, Any]) -> str | None:
    found: str | None = None
    offered = scope.get("subprotocols") or []
    kept = []
    for entry in offered:
        if isinstance(entry, str) and entry.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            found = entry[len(TOKEN_SUBPROTOCOL_PREFIX) :]
        else:
            kept.append(entry)
    if found is not None:
        scope["subprotocols"] = kept
        scope["wsbridge.token_subprotocol"] = True
        return found
    query = scope.get("query_string") or b""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if TOKEN_QUERY_PARAM + "=" not in query:
        return None
    from urllib.parse import parse_qsl

    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == TOKEN_QUERY_PARAM:
            found = value
    return found


_QUERY_TOKEN = re.compile(r"(?<=[?&]" + TOKEN_QUERY_PARAM + r"=)[^&\s]*")


def redact(text: str) -> str:
    """``text`` with any ``access_token=`` value replaced (for access logs)."""
    return _QUERY_TOKEN.sub("[redacted]", text) if TOKEN_QUERY_PARAM in text else text
