"""Long-poll session tokens, sans-I/O: ``b64(sid).b64(owner).b64(mac)``, signed and checked.

A token names a session (:func:`new_session_id`, 128 random bits) and the
layer channel of the process holding it (the *owner*), and carries an
HMAC-SHA256 over both plus the Origin and user it is bound to. Any process
can :meth:`TokenSigner.parse` a token to learn its owner; only a process
with the same secret can :meth:`TokenSigner.verify` it, and a process that
adopted a session checks the old tokens with :meth:`TokenSigner.verify_known`.
See ``docs/topics/protocol.rst``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from ..exceptions import BadRequest, Forbidden

__all__ = ["Token", "TokenSigner", "new_session_id", "SESSION_ID_BYTES"]

#: Random bytes in a session id (128 bits).
SESSION_ID_BYTES = 16
_MAX_TOKEN_LENGTH = 400
_MAC_BYTES = 16
_TOKEN_CONTEXT = b"wsbridge.longpoll.v1"


def new_session_id() -> bytes:
    """A fresh random session id of :data:`SESSION_ID_BYTES` bytes."""
    return secrets.token_bytes(SESSION_ID_BYTES)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))


@dataclass(frozen=True)
class Token:
    """A parsed session token: the session id, the owner's layer channel, the MAC."""

    sid: bytes
    owner: str
    mac: bytes


class TokenSigner:
    """Makes and checks session tokens: ``b64(sid).b64(owner).b64(mac)``.

    The MAC is HMAC-SHA256 (truncated to 128 bits) over the session id, the
    owning process's channel, the Origin that opened the session and the
    user key (empty without a user), so a token replayed from another Origin
    or by another user fails, and a made-up token cannot name a session.

    Args:
        secret: the server secret; every process that should accept a token
            without asking its owner needs the same one.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes long")
        self._secret = secret

    def _mac(self, sid: bytes, owner: str, origin: str, user: str) -> bytes:
        message = b"\0".join((_TOKEN_CONTEXT, sid, owner.encode(), origin.encode(), user.encode()))
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, sid: bytes, owner: str, *, origin: str = "", user: str = "") -> str:
        """The token for session ``sid`` held by ``owner``, bound to ``origin`` and ``user``."""
        mac = self._mac(sid, owner, origin, user)
        return ".".join((_b64(sid), _b64(owner.encode()), _b64(mac)))

    @staticmethod
    def parse(token: object) -> Token:
        """Split a token without checking it (any process can read the owner).

        Raises:
            BadRequest: the token is not a string of the right shape.
        """
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_LENGTH:
            raise BadRequest("'token' must be a non-empty string")
        parts = token.split(".")
        if len(parts) != 3:
            raise BadRequest("'token' is malformed")
        try:
            sid, owner, mac = (_unb64(part) for part in parts)
            owner_name = owner.decode("ascii")
        except (binascii.Error, ValueError):
            raise BadRequest("'token' is malformed") from None
        if len(sid) != SESSION_ID_BYTES or len(mac) != _MAC_BYTES or not owner_name:
            raise BadRequest("'token' is malformed")
        return Token(sid, owner_name, mac)

    def verify(self, token: Token, *, origin: str = "", user: str = "") -> None:
        """Check the MAC against this request's Origin and user.

        Raises:
            Forbidden: forged, or presented from another Origin or by another user.
        """
        expected = self._mac(token.sid, token.owner, origin, user)
        if not hmac.compare_digest(expected, token.mac):
            raise Forbidden("token refused: forged, or bound to another Origin or user")

    @staticmethod
    def verify_known(token: Token, known: Iterable[tuple[str, bytes]]) -> None:
        """Check a token signed by another process against the tokens its session is known by.

        A process that adopted a session cannot recompute the old owner's
        MAC without that process's secret; it compares the token's owner and
        MAC with the ``(owner, mac)`` pairs of the tokens the session was
        known by (and the caller checks the bound Origin and user itself).
        Every part counts: the session id picked the session, and a MAC
        presented with another owner than the one it was made for is refused.

        Raises:
            Forbidden: not one of ``known``.
        """
        matched = False
        for owner, mac in known:
            # Compare every pair (no early exit): the time taken says nothing.
            same_mac = hmac.compare_digest(token.mac, mac)
            matched |= same_mac and hmac.compare_digest(token.owner.encode(), owner.encode())
        if not matched:
            raise Forbidden("token refused: forged, or not a token of this session")
