"""Long-poll without sticky sessions: ask the process holding a session, answer others' asks.

The process that opened a session (its *owner*) holds the consumer and the
session state. Each process attaches one layer channel,
``wsbridge.lp.<process>!<id>``, named in the tokens it signs. A poll, send
or close that reaches another process is sent there as an ``lp.request``
(:class:`~wsbridge.protocol.longpoll_messages.RelayRequest`); the owner
answers a hold at once, runs the request as if it had arrived itself, and
answers its status and body. No hold within ``forward_timeout``: the owner
is gone. No answer to a held poll: an empty poll answer, which loses
nothing since nothing was acked.

The :class:`Relay` never runs a request itself and never calls back into
its owner: :meth:`Relay.forward` and :meth:`Relay.ask_adopter` return a
:class:`Result` (forwarded, moved, gone) and the caller acts on it (adopts
the session, asks its adopter, answers 404). Requests from other processes
come out of :meth:`Relay.receive`; the caller runs them and hands the
result to :meth:`Relay.answer`. See ``docs/topics/protocol.rst``.
"""

from __future__ import annotations

import enum
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gevent.queue import Empty, Queue

from ...exceptions import (
    BadRequest,
    ChannelFull,
    InvalidChannelName,
    LayerError,
    NotFound,
)
from ...layers.base import BaseChannelLayer
from ...protocol.longpoll_messages import (
    OWNER_PREFIX,
    PEERS_GROUP,
    Departed,
    RelayReply,
    RelayRequest,
    ReplyKind,
    session_group,
)
from ...protocol.longpoll_token import Token

__all__ = ["Relay", "Request", "Outcome", "Result", "OWNER_PREFIX", "PEERS_GROUP"]

logger = logging.getLogger("wsbridge.transport.longpoll")

_KNOWN = 1000  # owners remembered as alive / departed
_RELEASE = object()  # put in this process's own reply queues when it goes away


@dataclass(frozen=True)
class Request:
    """One long-poll request (poll, send or close), local or forwarded."""

    op: str
    body: dict[str, Any]
    origin: str
    user: str


class Outcome(enum.Enum):
    """Where a request for a session ended up."""

    #: This process holds the session and answered.
    LOCAL = "local"
    #: The process holding the session answered (or a held poll ran out: empty answer).
    FORWARDED = "forwarded"
    #: The session was handed over on a graceful restart: adopt it, or ask its adopter.
    MOVED = "moved"
    #: Nobody answered in time.
    GONE = "gone"


@dataclass(frozen=True)
class Result:
    """What became of a request: its :class:`Outcome` and, when answered, the HTTP answer."""

    outcome: Outcome
    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.outcome in (Outcome.LOCAL, Outcome.FORWARDED)

    @property
    def answer(self) -> tuple[int, dict[str, Any]]:
        return self.status, self.body


MOVED = Result(Outcome.MOVED)
GONE = Result(Outcome.GONE)


def _forwarded(status: int, body: dict[str, Any]) -> Result:
    return Result(Outcome.FORWARDED, status, body)


#: Seconds between two ``give_up`` checks while a forward waits for its hold.
GIVE_UP_EVERY = 0.5


def _first_reply(replies: Queue[Any], timeout: float, give_up: Callable[[], bool] | None) -> Any:
    """The first reply within ``timeout``; raises ``Empty`` then, or once ``give_up()`` is true."""
    if give_up is None:
        return replies.get(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return replies.get(timeout=max(0.0, min(GIVE_UP_EVERY, left)))
        except Empty:
            if left <= GIVE_UP_EVERY or give_up():
                raise


class Relay:
    """Asks other processes for their sessions, and reads their asks for ours.

    Args:
        layer: the shared channel layer (Redis across processes).
        owner: this process's channel (from ``layer.new_channel(OWNER_PREFIX)``),
            which the caller attaches and whose messages it passes to
            :meth:`receive`.
        verify: checks a token's MAC here (when every process shares the
            secret), so forgeries are refused without a round trip; None to
            leave it to the owner.
        forward_timeout: seconds to wait for the owner's hold.
        poll_timeout: the longest the owner may hold a poll.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        owner: str,
        *,
        verify: Callable[..., None] | None,
        forward_timeout: float,
        poll_timeout: float,
    ) -> None:
        self.layer = layer
        self.owner = owner
        self._verify = verify
        self.forward_timeout = forward_timeout
        self.poll_timeout = poll_timeout
        self._shared = "shared" in layer.extensions
        self._replies: dict[str, Queue[Any]] = {}
        # Owners that answered lately (no hand-off to look for) and owners gone away.
        self._alive: OrderedDict[str, None] = OrderedDict()
        self._departed: OrderedDict[str, None] = OrderedDict()
        self._peers = False

    def join_peers(self) -> None:
        """Join :data:`PEERS_GROUP`, where processes going away say so (when sessions move)."""
        try:
            self.layer.group_add(PEERS_GROUP, self.owner)
            self._peers = True
        except LayerError as exc:  # departures are then noticed by asking
            logger.warning("long-poll: cannot join %s: %s", PEERS_GROUP, exc)

    def depart(self) -> None:
        """Tell the other processes this one has handed its sessions over and is going away.

        Polls this process holds for sessions of other processes are answered
        now (an empty batch: nothing was acked, the client polls again), so
        they do not keep it alive until their timeout.
        """
        for replies in list(self._replies.values()):
            replies.put(_RELEASE)
        if not self._peers:
            return
        try:
            self.layer.group_discard(PEERS_GROUP, self.owner)
            self.layer.group_send(PEERS_GROUP, Departed(self.owner).to_message())
        except LayerError as exc:  # they find out by asking (a "moved" answer, or silence)
            logger.warning("long-poll: could not announce this process's departure: %s", exc)
        self._peers = False

    @staticmethod
    def _remember(table: OrderedDict[str, None], owner: str) -> None:
        table[owner] = None
        table.move_to_end(owner)
        while len(table) > _KNOWN:
            table.popitem(last=False)

    # -- this process asks the owner ---------------------------------------------------

    def check(self, token: Token, request: Request) -> None:
        """Refuse what no other process can answer, before asking anyone.

        Raises:
            Forbidden: the token is forged (only when the secret is shared).
            NotFound: the layer is not shared across processes (the owner is
                a process that is gone), or the token names no owner channel.
        """
        if self._verify is not None:  # refuse forgeries here, without bothering the owner
            self._verify(token, origin=request.origin, user=request.user)
        if not self._shared or not token.owner.startswith(OWNER_PREFIX + "."):
            raise NotFound("unknown session (its server process is gone)")

    def departed(self, owner: str) -> bool:
        """True when ``owner`` said it went away: its sessions wait in the layer."""
        return owner in self._departed

    def known_alive(self, owner: str) -> bool:
        """True when ``owner`` answered lately (no hand-off to look for first)."""
        return owner in self._alive

    def forward(
        self, owner: str, request: Request, give_up: Callable[[], bool] | None = None
    ) -> Result:
        """Ask ``owner`` to run ``request``.

        ``give_up`` is asked about twice a second while no hold has come: a
        true answer (the owner is known dead) ends the wait at once, as GONE.

        Returns:
            FORWARDED with its answer; MOVED when it handed the session over
            (its hand-off message is written before it says so); GONE when
            it does not answer within ``forward_timeout``.

        Raises:
            BadRequest: the token names no valid channel, or the body cannot
                be sent.
        """
        result = self._ask(owner, request, self.forward_timeout, give_up=give_up)
        if result.answered:
            self._remember(self._alive, owner)
        elif result.outcome is Outcome.MOVED:
            self._remember(self._departed, owner)
            self._alive.pop(owner, None)
        return result

    def ask_adopter(self, sid: bytes, request: Request) -> Result:
        """Ask the process that adopted session ``sid`` (FORWARDED), if one answers (else GONE)."""
        result = self._ask(session_group(sid), request, min(2.0, self.forward_timeout), group=True)
        return result if result.answered else GONE

    def _ask(
        self,
        target: str,
        request: Request,
        hold_timeout: float,
        *,
        group: bool = False,
        give_up: Callable[[], bool] | None = None,
    ) -> Result:
        """Send ``request`` to a channel (or a group) and wait for its replies."""
        rid = secrets.token_hex(8)
        replies: Queue[Any] = Queue()
        self._replies[rid] = replies
        message = RelayRequest(
            request.op, request.body, request.origin, request.user, self.owner, rid
        ).to_message()
        held = False
        try:
            if group:
                self.layer.group_send(target, message)
            else:
                self.layer.send(target, message)
            reply = _first_reply(replies, hold_timeout, give_up)
            while reply is _RELEASE or reply.kind is ReplyKind.HOLD:
                if reply is _RELEASE:
                    if request.op == "poll":  # this process is leaving
                        return _forwarded(200, {"messages": []})
                else:
                    held = True  # the owner is alive and working on it
                reply = replies.get(timeout=self.poll_timeout + self.forward_timeout)
        except (InvalidChannelName, TypeError):
            raise BadRequest("'token' or body cannot be forwarded") from None
        except ChannelFull:
            return _forwarded(503, {"error": "the process holding this session is overloaded"})
        except Empty:
            if held and request.op == "poll":  # nothing acked, nothing lost: the next poll resends
                return _forwarded(200, {"messages": []})
            return GONE
        finally:
            self._replies.pop(rid, None)
        if reply.kind is ReplyKind.MOVED:
            return MOVED
        return _forwarded(reply.status, reply.body or {})

    # -- another process asks us -------------------------------------------------------

    def receive(self, message: dict[str, Any]) -> RelayRequest | None:
        """Take one message of this process's channel; a request for the caller to run, or None.

        Replies and departures are handled here. Runs in the layer's
        greenlet: the caller must run the request in another one, starting
        with :meth:`hold`.
        """
        kind = message.get("type")
        if kind == "lp.request":
            return RelayRequest.from_message(message)
        if kind == "lp.reply":
            replies = self._replies.get(str(message.get("rid")))
            if replies is not None:
                try:
                    replies.put(RelayReply.from_message(message))
                except ValueError as exc:  # the asker times out and answers its client
                    logger.warning("long-poll: reply dropped: %s", exc)
        elif kind == "lp.departed":
            owner = Departed.from_message(message).owner
            if owner and owner != self.owner:
                self._remember(self._departed, owner)
                self._alive.pop(owner, None)
        return None

    def hold(self, request: RelayRequest) -> None:
        """Tell the asker this process is alive and on ``request`` (the answer may take a poll)."""
        self._reply(request, RelayReply(request.rid, ReplyKind.HOLD))

    def answer(self, request: RelayRequest, result: Result) -> None:
        """Send the asker ``result``: the answer, or "moved" when the session was handed over."""
        if result.outcome is Outcome.MOVED:
            reply = RelayReply(request.rid, ReplyKind.MOVED)
        else:
            reply = RelayReply(request.rid, ReplyKind.ANSWER, result.status, result.body)
        self._reply(request, reply)

    def _reply(self, request: RelayRequest, reply: RelayReply) -> None:
        try:
            self.layer.send(request.reply, reply.to_message())
        except Exception:  # the forwarder times out and answers its client
            logger.warning("cannot answer forwarded long-poll request", exc_info=True)
