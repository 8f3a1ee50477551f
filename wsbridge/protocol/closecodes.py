"""Every close code wsbridge sends or reports, and what a client does after each.

:class:`CloseCode` is the one source of these numbers (STYLE rule 12): the
transports, the runner, the identity and admission modules, the docs'
tables (a test compares them) and ``wsbridge.js``'s reconnect rule all
follow it. The RFC 6455 codes are those of section 7.4.1; the 4xxx codes
are wsbridge's own, in the private-use range of section 7.4.2, chosen so
that the range tells a client what to do even for a code it does not know:
4000-4499 are final, 4500-4999 transient (:data:`APP_FINAL`,
:data:`APP_TRANSIENT`).

What a client does after a close is :attr:`CloseCode.action`, one of
:class:`ClientAction`; :func:`should_reconnect` is the same rule for any
integer, as ``wsbridge.js``'s ``defaultShouldReconnect`` implements it::

    >>> CloseCode.TRY_AGAIN_LATER.action
    <ClientAction.RECONNECT: 'reconnect'>
    >>> should_reconnect(4001), should_reconnect(4501)
    (False, True)

Sans-I/O: no imports beyond the standard library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CloseCode",
    "ClientAction",
    "CloseInfo",
    "APP_FINAL",
    "APP_TRANSIENT",
    "should_reconnect",
    "describe",
]


class ClientAction(enum.Enum):
    """What a client does after the server closed with a code."""

    #: Connect again, with exponential backoff and full jitter.
    RECONNECT = "reconnect"
    #: Fetch a new connect token, then connect again (with backoff).
    REFRESH_TOKEN = "refresh token"
    #: Stay closed (a reconnection would be refused again, or was not wanted).
    GIVE_UP = "give up"


@dataclass(frozen=True)
class CloseInfo:
    """What one close code means.

    Attributes:
        meaning: when wsbridge closes with it (or reports it).
        action: what a client does next.
        on_wire: False for a code that never travels in a close frame (1006
            is only reported: the connection dropped without a closing
            handshake, or a long-poll session was lost).
    """

    meaning: str
    action: ClientAction
    on_wire: bool = True


_R, _T, _G = ClientAction.RECONNECT, ClientAction.REFRESH_TOKEN, ClientAction.GIVE_UP


class CloseCode(enum.IntEnum):
    """The close codes of wsbridge; each member knows :attr:`info` (meaning, action)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    REVOKED = 4403
    KICKED = 4409
    RATE_LIMITED = 4429
    TOKEN_EXPIRED = 4511

    @property
    def info(self) -> CloseInfo:
        """The meaning and the client's action; the docs' tables are checked against it."""
        return _INFO[self]

    @property
    def meaning(self) -> str:
        """When wsbridge closes with this code (or reports it)."""
        return _INFO[self].meaning

    @property
    def action(self) -> ClientAction:
        """What a client does after it."""
        return _INFO[self].action

    def __str__(self) -> str:
        # A plain number in log lines and f-strings on every Python (3.10 prints names).
        return str(int(self))


_INFO: dict[CloseCode, CloseInfo] = {
    CloseCode.NORMAL: CloseInfo("normal close (the consumer closed, or StopConsumer)", _G),
    CloseCode.GOING_AWAY: CloseInfo("the server is shutting down", _R),
    CloseCode.PROTOCOL_ERROR: CloseInfo("the client broke RFC 6455", _R),
    CloseCode.ABNORMAL: CloseInfo(
        "connection lost, or long-poll session expired (never sent)", _R, on_wire=False
    ),
    CloseCode.INVALID_DATA: CloseInfo("a text message is not valid UTF-8", _R),
    CloseCode.POLICY_VIOLATION: CloseInfo(
        "policy: the server refuses this client (also a control-frame flood)", _G
    ),
    CloseCode.MESSAGE_TOO_BIG: CloseInfo("a message was too big", _G),
    CloseCode.INTERNAL_ERROR: CloseInfo(
        "the consumer crashed, or a keepalive ping went unanswered", _R
    ),
    CloseCode.SERVICE_RESTART: CloseInfo("service restart (reconnect at once)", _R),
    CloseCode.TRY_AGAIN_LATER: CloseInfo("the client is too slow: its outbound buffer filled", _R),
    CloseCode.REVOKED: CloseInfo(
        "the user or session was revoked (logout, password change, failed re-check)", _G
    ),
    CloseCode.KICKED: CloseInfo("an operator closed the connection (wsbridge kick)", _G),
    CloseCode.RATE_LIMITED: CloseInfo(
        "inbound messages or bytes over a connection, user or IP limit", _G
    ),
    CloseCode.TOKEN_EXPIRED: CloseInfo("the connect token expired while the socket was open", _T),
}

#: Application codes after which a client stays closed.
APP_FINAL = range(4000, 4500)
#: Application codes after which a client reconnects with backoff.
APP_TRANSIENT = range(4500, 5000)


def describe(code: int) -> CloseInfo:
    """What ``code`` means: a member's :attr:`~CloseCode.info`, else the rule of its range."""
    try:
        return CloseCode(code).info
    except ValueError:
        pass
    if code in APP_FINAL:
        return CloseInfo("application code, final", _G)
    if code in APP_TRANSIENT:
        return CloseInfo("application code, transient", _R)
    return CloseInfo("not a code wsbridge sends", _R)


def should_reconnect(code: int) -> bool:
    """Whether a client reconnects after the server closed with ``code``.

    No after the :attr:`~wsbridge.protocol.closecodes.ClientAction.GIVE_UP`
    codes (1000, 1008, 1009, 4403, 4409, 4429) and any final application
    code (4000-4499); yes after everything else (going away, restart, server error, lost connection,
    a token to refresh, 4500-4999).
    """
    return describe(code).action is not ClientAction.GIVE_UP
