"""Long-poll messages between server processes, sans-I/O: relaying requests and hand-offs.

Every message is a layer message (msgpack types only) with a ``type``:

``lp.request``
    :class:`RelayRequest`: a poll, send or close that reached a process
    other than the session's owner, sent to the owner's channel
    (``wsbridge.lp.<process>!<id>``, :data:`OWNER_PREFIX`)::

        {"type": "lp.request", "op", "body", "origin", "user", "reply", "rid"}

``lp.reply``
    :class:`RelayReply`, to the asker's ``reply`` channel: at once
    ``{"rid", "hold": True}`` (the owner is alive and on it), then
    ``{"rid", "status", "body"}``; or ``{"rid", "moved": True}`` when the
    owner handed the session over on a graceful restart.

``lp.departed``
    :class:`Departed`, to :data:`PEERS_GROUP`: ``{"owner"}`` has handed its
    sessions over and is going away.

``lp.handoff``
    :class:`HandOff`, to :func:`handoff_channel`: a session on its way to
    whichever process sees its next request.

See ``docs/topics/protocol.rst`` ("No sticky sessions" and "Restarts").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .longpoll_token import SESSION_ID_BYTES

__all__ = [
    "RelayRequest",
    "RelayReply",
    "ReplyKind",
    "Departed",
    "HandOff",
    "HANDOFF_VERSION",
    "MAX_SESSION_MACS",
    "OWNER_PREFIX",
    "PEERS_GROUP",
    "handoff_channel",
    "session_group",
]

#: Prefix of the per-process channel that receives forwarded requests.
OWNER_PREFIX = "wsbridge.lp"
#: Group of every process's owner channel (when sessions are handed over at shutdown).
PEERS_GROUP = "wsbridge.lp.peers"


# -- relaying requests ---------------------------------------------------------------


@dataclass(frozen=True)
class RelayRequest:
    """``lp.request``: run ``op`` with ``body`` for the session, answer on ``reply``.

    Attributes:
        op: ``"poll"``, ``"send"`` or ``"close"``.
        body: the client's JSON request body (it carries the ``token``).
        origin: the Origin the client sent.
        user: the user key of the client's request ("" without a user).
        reply: the asker's owner channel.
        rid: names the request in the replies.
    """

    op: str
    body: dict[str, Any]
    origin: str
    user: str
    reply: str
    rid: str

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "lp.request",
            "op": self.op,
            "body": self.body,
            "origin": self.origin,
            "user": self.user,
            "reply": self.reply,
            "rid": self.rid,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> RelayRequest:
        """Read an ``lp.request``; missing or mistyped fields become empty (the owner refuses)."""
        body = message.get("body")
        return cls(
            str(message.get("op")),
            body if isinstance(body, dict) else {},
            str(message.get("origin") or ""),
            str(message.get("user") or ""),
            str(message.get("reply")),
            str(message.get("rid")),
        )


class ReplyKind(enum.Enum):
    """What an ``lp.reply`` says."""

    #: The owner is alive and running the request; the answer follows.
    HOLD = "hold"
    #: The owner handed the session over on a graceful restart; look for its adopter.
    MOVED = "moved"
    #: The request's HTTP status and JSON body.
    ANSWER = "answer"


@dataclass(frozen=True)
class RelayReply:
    """``lp.reply``: a hold, a "moved", or the answer to the :class:`RelayRequest` ``rid``.

    Attributes:
        rid: the request's ``rid``.
        kind: a hold, a "moved" or an answer.
        status: the answer's HTTP status.
        body: the answer's JSON body.
    """

    rid: str
    kind: ReplyKind
    status: int = 0
    body: dict[str, Any] | None = None

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "lp.reply", "rid": self.rid}
        if self.kind is ReplyKind.ANSWER:
            message.update(status=self.status, body=self.body or {})
        else:
            message[self.kind.value] = True
        return message

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> RelayReply:
        """Read an ``lp.reply``.

        Raises:
            ValueError: neither a hold, a "moved" nor a status and body.
        """
        rid = str(message.get("rid"))
        if message.get("hold"):
            return cls(rid, ReplyKind.HOLD)
        if message.get("moved"):
            return cls(rid, ReplyKind.MOVED)
        status, body = message.get("status"), message.get("body")
        if type(status) is not int or not isinstance(body, dict):
            raise ValueError("malformed lp.reply: no hold, moved, or status and body")
        return cls(rid, ReplyKind.ANSWER, status, body)


@dataclass(frozen=True)
class Departed:
    """``lp.departed``: the process at ``owner`` handed its sessions over and is going away."""

    owner: str

    def to_message(self) -> dict[str, Any]:
        return {"type": "lp.departed", "owner": self.owner}

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Departed:
        return cls(str(message.get("owner") or ""))


#: Version of the hand-off message format (``HandOff.to_message``).
HANDOFF_VERSION = 1
#: How many tokens a moved session keeps accepting, the newest first, since the
#: client may still hold an older one while the answer with the new one is on its way.
MAX_SESSION_MACS = 4


def handoff_channel(sid: bytes) -> str:
    """The layer channel where a session waits for its next process (a normal channel)."""
    return f"wsbridge.lp.handoff.{sid.hex()}"


def session_group(sid: bytes) -> str:
    """The layer group joined by the process that adopted a session, so others can find it."""
    return f"wsbridge.lp.s.{sid.hex()}"


@dataclass(frozen=True)
class HandOff:
    """A session on its way from a process that is going away to whichever process sees it next.

    Attributes:
        sid: the session id.
        origin: the Origin its tokens are bound to.
        user: the user its tokens are bound to.
        macs: the MACs of the tokens the client may present (newest first).
        scope: the connection scope, reduced to msgpack types.
        session: :meth:`~wsbridge.protocol.longpoll.LongPollSession.snapshot`.
        source: the owner channel of the process that handed it off.
        owners: the owner channel each of ``macs`` was made for (same
            order); a message without them (an older sender) means ``source``
            for every one.
    """

    sid: bytes
    origin: str
    user: str
    macs: tuple[bytes, ...]
    scope: dict[str, Any]
    session: dict[str, Any]
    source: str = ""
    owners: tuple[str, ...] = ()

    def known(self) -> list[tuple[str, bytes]]:
        """``(owner, mac)`` of each token the client may present (see ``verify_known``)."""
        owners = self.owners
        if len(owners) != len(self.macs):
            owners = (self.source,) * len(self.macs)
        return list(zip(owners, self.macs, strict=True))

    def to_message(self) -> dict[str, Any]:
        """The layer message (msgpack types only) to send to :func:`handoff_channel`."""
        return {
            "type": "lp.handoff",
            "v": HANDOFF_VERSION,
            "sid": self.sid,
            "origin": self.origin,
            "user": self.user,
            "macs": list(self.macs[:MAX_SESSION_MACS]),
            "scope": self.scope,
            "session": self.session,
            "source": self.source,
            "owners": list(self.owners[:MAX_SESSION_MACS]),
        }

    @classmethod
    def from_message(cls, message: Any) -> HandOff:
        """Parse a hand-off message.

        Raises:
            ValueError: not a hand-off this version understands.
        """
        if not isinstance(message, dict) or message.get("type") != "lp.handoff":
            raise ValueError("not a long-poll hand-off message")
        if message.get("v") != HANDOFF_VERSION:
            raise ValueError(f"hand-off format v{message.get('v')!r} is not v{HANDOFF_VERSION}")
        sid, macs = message.get("sid"), message.get("macs")
        fields = (message.get("origin"), message.get("user"), message.get("source", ""))
        if (
            not isinstance(sid, bytes)
            or len(sid) != SESSION_ID_BYTES
            or not isinstance(macs, list)
            or not all(isinstance(mac, bytes) for mac in macs)
            or not all(isinstance(field, str) for field in fields)
            or not isinstance(message.get("scope"), dict)
            or not isinstance(message.get("session"), dict)
        ):
            raise ValueError("malformed long-poll hand-off message")
        owners = message.get("owners") or []
        if not isinstance(owners, list) or not all(isinstance(owner, str) for owner in owners):
            raise ValueError("malformed long-poll hand-off message")
        origin, user, source = (str(field) for field in fields)
        return cls(
            sid,
            origin,
            user,
            tuple(macs),
            message["scope"],
            message["session"],
            source,
            tuple(owners),
        )
