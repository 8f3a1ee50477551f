"""Long-poll without sticky sessions: forward requests to the process holding the session.

The process that opened a session (its *owner*) holds the consumer and the
session state. Each process attaches one layer channel,
``wsbridge.lp.<process>!<id>``, named in the tokens it signs. A poll, send
or close that reaches another process is sent there as a layer message::

    {"type": "lp.request", "op", "body", "origin", "user", "reply", "rid"}

The owner answers ``{"type": "lp.reply", "rid", "hold": True}`` at once (it
is alive and on it), runs the request as if it had arrived itself, and
answers ``{"type": "lp.reply", "rid", "status", "body"}``. No hold within
``forward_timeout``: the owner is gone (404). No answer to a held poll: an
empty poll answer, which loses nothing since nothing was acked.

After a graceful restart the owner named in a token may have handed the
session over (:mod:`wsbridge.transport.longpoll_handoff`): it answers
``{"type": "lp.reply", "rid", "moved": True}`` while it is still alive, and
announces ``{"type": "lp.departed", "owner"}`` to :data:`PEERS_GROUP`;
:meth:`Relay.forward` then lets the transport adopt the session, or asks
the process that already did (group ``wsbridge.lp.s.<sid>``). See
``docs/topics/protocol.rst``.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.queue import Empty, Queue

from ..exceptions import (
    BadRequest,
    ChannelFull,
    HTTPError,
    InvalidChannelName,
    LayerError,
    LayerUnavailable,
    NotFound,
)
from ..layers.base import BaseChannelLayer
from ..protocol.longpoll import Token, TokenSigner, session_group

__all__ = ["Relay", "Request", "SessionMoved", "OWNER_PREFIX", "PEERS_GROUP"]

logger = logging.getLogger("wsbridge.transport.longpoll")

#: Prefix of the per-process channel that receives forwarded requests.
OWNER_PREFIX = "wsbridge.lp"
#: Group of every process's owner channel (when sessions are handed over at shutdown).
PEERS_GROUP = "wsbridge.lp.peers"

Answer = tuple[int, dict[str, Any]]


@dataclass
class Request:
    """One long-poll request (poll, send or close), local or forwarded."""

    op: str
    body: dict[str, Any]
    origin: str
    user: str


class SessionMoved(Exception):
    """Internal: this process handed the session over; the forwarder should adopt it."""


_MOVED = "moved"
_KNOWN = 1000  # owners remembered as alive / departed


class Relay:
    """Forwards requests for other processes' sessions, and serves theirs for ours.

    Args:
        layer: the shared channel layer (Redis across processes).
        owner: this process's channel (from ``layer.new_channel(OWNER_PREFIX)``).
        run_local: runs a request for a session this process holds; raises
            :class:`SessionMoved` for one it has handed over.
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
        run_local: Callable[[Token, Request], Answer],
        verify: Callable[..., None] | None,
        forward_timeout: float,
        poll_timeout: float,
    ) -> None:
        self.layer = layer
        self.owner = owner
        self._run_local = run_local
        self._verify = verify
        self.forward_timeout = forward_timeout
        self.poll_timeout = poll_timeout
        self._replies: dict[str, Queue] = {}
        # Owners that answered lately (no hand-off to look for) and owners gone away.
        self._alive: OrderedDict[str, None] = OrderedDict()
        self._departed: OrderedDict[str, None] = OrderedDict()
        self._peers = False

    def attach(self, *, join_peers: bool = False) -> None:
        """Receive forwarded requests and replies on this process's channel.

        With ``join_peers`` (sessions are handed over at shutdown) also join
        :data:`PEERS_GROUP`, where processes going away say so.
        """
        self.layer.attach(self.owner, self.on_message)
        if join_peers:
            try:
                self.layer.group_add(PEERS_GROUP, self.owner)
                self._peers = True
            except LayerError as exc:  # departures are then noticed by asking
                logger.warning("long-poll: cannot join %s: %s", PEERS_GROUP, exc)

    def detach(self) -> None:
        self.layer.detach(self.owner)

    def depart(self) -> None:
        """Tell the other processes this one has handed its sessions over and is going away.

        Polls this process holds for sessions of other processes are answered
        now (an empty batch: nothing was acked, the client polls again), so
        they do not keep it alive until their timeout.
        """
        for replies in list(self._replies.values()):
            replies.put({"release": True})
        if not self._peers:
            return
        try:
            self.layer.group_discard(PEERS_GROUP, self.owner)
            self.layer.group_send(PEERS_GROUP, {"type": "lp.departed", "owner": self.owner})
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

    def forward(
        self, token: Token, request: Request, adopt: Callable[[float], Answer | None]
    ) -> Answer:
        """Run ``request`` where ``token``'s session lives; its (status, body).

        The owner named in the token answers, unless it has handed the
        session over (a graceful restart): then ``adopt(wait)`` takes the
        session from the layer (waiting up to ``wait`` seconds for it) and
        runs the request here, or the process that adopted it earlier
        answers.

        Raises:
            Forbidden: the token is forged (only when the secret is shared).
            NotFound: the owner is gone and nobody took the session over
                (or, with the in-memory layer, the owner is another process).
            BadRequest: the token names no valid channel.
        """
        from ..layers.memory import MemoryLayer

        if self._verify is not None:  # refuse forgeries here, without bothering the owner
            self._verify(token, origin=request.origin, user=request.user)
        if isinstance(self.layer, MemoryLayer) or not token.owner.startswith(OWNER_PREFIX + "."):
            raise NotFound("unknown session (its server process is gone)")
        owner = token.owner
        departed = owner in self._departed
        if departed or owner not in self._alive:  # a hand-off may be waiting: look first
            # (a process announces its departure after writing its hand-offs: no wait)
            answer = adopt(0.0)
            if answer is not None:
                return answer
        if not departed:
            outcome = self._ask(owner, request, self.forward_timeout)
            if isinstance(outcome, tuple):
                self._remember(self._alive, owner)
                return outcome
            if outcome == _MOVED:  # its hand-off message is written before it says so
                self._remember(self._departed, owner)
                self._alive.pop(owner, None)
            answer = adopt(0.5 if outcome == _MOVED else 0.0)
            if answer is not None:
                return answer
        answer = self.ask_adopter(token, request)
        if answer is not None:
            return answer
        raise NotFound("unknown session (the process holding it does not answer)")

    def ask_adopter(self, token: Token, request: Request) -> Answer | None:
        """Run ``request`` on the process that adopted ``token``'s session, if one answers."""
        outcome = self._ask(
            session_group(token.sid), request, min(2.0, self.forward_timeout), group=True
        )
        return outcome if isinstance(outcome, tuple) else None

    def _ask(
        self, target: str, request: Request, hold_timeout: float, *, group: bool = False
    ) -> Answer | str | None:
        """Send ``request`` to a channel (or a group): the answer, ``_MOVED``, or None (silence)."""
        rid = secrets.token_hex(8)
        replies: Queue = Queue()
        self._replies[rid] = replies
        message = {
            "type": "lp.request",
            "op": request.op,
            "body": request.body,
            "origin": request.origin,
            "user": request.user,
            "reply": self.owner,
            "rid": rid,
        }
        held = False
        try:
            if group:
                self.layer.group_send(target, message)
            else:
                self.layer.send(target, message)
            reply = replies.get(timeout=hold_timeout)
            while reply.get("hold") or reply.get("release"):
                if reply.get("release") and request.op == "poll":  # this process is leaving
                    return 200, {"messages": []}
                held = held or bool(reply.get("hold"))  # the owner is alive and working on it
                reply = replies.get(timeout=self.poll_timeout + self.forward_timeout)
        except (InvalidChannelName, TypeError):
            raise BadRequest("'token' or body cannot be forwarded") from None
        except ChannelFull:
            return 503, {"error": "the process holding this session is overloaded"}
        except Empty:
            if held and request.op == "poll":  # nothing acked, nothing lost: the next poll resends
                return 200, {"messages": []}
            return None
        finally:
            self._replies.pop(rid, None)
        if reply.get("moved"):
            return _MOVED
        return int(reply["status"]), reply["body"]

    # -- another process asks us -------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        """Layer callback (runs in the layer's greenlet: never block here)."""
        kind = message.get("type")
        if kind == "lp.request":
            gevent.spawn(self._serve, message)
        elif kind == "lp.reply":
            replies = self._replies.get(str(message.get("rid")))
            if replies is not None:
                replies.put(message)
        elif kind == "lp.departed":
            owner = str(message.get("owner") or "")
            if owner and owner != self.owner:
                self._remember(self._departed, owner)
                self._alive.pop(owner, None)

    def _serve(self, message: dict[str, Any]) -> None:
        reply_to, rid = str(message.get("reply")), message.get("rid")

        def reply(**fields: Any) -> None:
            try:
                self.layer.send(reply_to, {"type": "lp.reply", "rid": rid, **fields})
            except Exception:  # the forwarder times out and answers its client
                logger.warning("cannot answer forwarded long-poll request", exc_info=True)

        body = message.get("body")
        request = Request(
            str(message.get("op")),
            body if isinstance(body, dict) else {},
            str(message.get("origin") or ""),
            str(message.get("user") or ""),
        )
        # The answer may take up to a poll timeout (a held poll, or a send waiting on
        # a busy consumer): say at once that this process is alive and on it.
        reply(hold=True)
        try:
            token = TokenSigner.parse(request.body.get("token"))
            status, answer = self._run_local(token, request)
        except SessionMoved:
            reply(moved=True)
            return
        except HTTPError as exc:
            status, answer = exc.status, {"error": exc.reason}
        except LayerUnavailable as exc:
            status, answer = 503, {"error": f"channel layer unavailable: {exc}"}
        except Exception:  # a bug: answer it rather than let the forwarder time out
            logger.exception("forwarded long-poll %s request failed", request.op)
            status, answer = 500, {"error": "internal error"}
        reply(status=status, body=answer)
