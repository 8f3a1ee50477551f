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
empty poll answer, which loses nothing since nothing was acked. See
``docs/topics/protocol.rst``.
"""

from __future__ import annotations

import logging
import secrets
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
    LayerUnavailable,
    NotFound,
)
from ..layers.base import BaseChannelLayer
from ..protocol.longpoll import Token, TokenSigner

__all__ = ["Relay", "Request", "OWNER_PREFIX"]

logger = logging.getLogger("wsbridge.transport.longpoll")

#: Prefix of the per-process channel that receives forwarded requests.
OWNER_PREFIX = "wsbridge.lp"

Answer = tuple[int, dict[str, Any]]


@dataclass
class Request:
    """One long-poll request (poll, send or close), local or forwarded."""

    op: str
    body: dict[str, Any]
    origin: str
    user: str


class Relay:
    """Forwards requests for other processes' sessions, and serves theirs for ours.

    Args:
        layer: the shared channel layer (Redis across processes).
        owner: this process's channel (from ``layer.new_channel(OWNER_PREFIX)``).
        run_local: runs a request for a session this process owns.
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

    def attach(self) -> None:
        """Start receiving forwarded requests and replies on this process's channel."""
        self.layer.attach(self.owner, self.on_message)

    def detach(self) -> None:
        self.layer.detach(self.owner)

    # -- this process asks the owner ---------------------------------------------------

    def forward(self, token: Token, request: Request) -> Answer:
        """Run ``request`` on the process that owns ``token``'s session; its (status, body).

        Raises:
            Forbidden: the token is forged (only when the secret is shared).
            NotFound: the owner is gone (or, with the in-memory layer, elsewhere).
            BadRequest: the token names no valid channel.
        """
        from ..layers.memory import MemoryLayer

        if self._verify is not None:  # refuse forgeries here, without bothering the owner
            self._verify(token, origin=request.origin, user=request.user)
        if isinstance(self.layer, MemoryLayer) or not token.owner.startswith(OWNER_PREFIX + "."):
            raise NotFound("unknown session (its server process is gone)")
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
            self.layer.send(token.owner, message)
            reply = replies.get(timeout=self.forward_timeout)
            if reply.get("hold"):  # the owner is alive and working on it
                held = True
                reply = replies.get(timeout=self.poll_timeout + self.forward_timeout)
        except (InvalidChannelName, TypeError):
            raise BadRequest("'token' or body cannot be forwarded") from None
        except ChannelFull:
            return 503, {"error": "the process holding this session is overloaded"}
        except Empty:
            if held and request.op == "poll":  # nothing acked, nothing lost: the next poll resends
                return 200, {"messages": []}
            raise NotFound("unknown session (the process holding it does not answer)") from None
        finally:
            self._replies.pop(rid, None)
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
            if token.owner != self.owner:
                raise NotFound("unknown session")
            status, answer = self._run_local(token, request)
        except HTTPError as exc:
            status, answer = exc.status, {"error": exc.reason}
        except LayerUnavailable as exc:
            status, answer = 503, {"error": f"channel layer unavailable: {exc}"}
        except Exception:  # a bug: answer it rather than let the forwarder time out
            logger.exception("forwarded long-poll %s request failed", request.op)
            status, answer = 500, {"error": "internal error"}
        reply(status=status, body=answer)
