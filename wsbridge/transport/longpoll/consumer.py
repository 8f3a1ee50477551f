"""The consumer's side of every long-poll session: start it, apply what it emits, end it.

A session's consumer runs behind the same
:class:`~wsbridge.consumers.runner.Connection` as a WebSocket's. What it
emits (``websocket.accept``, ``.send``, ``.close``) arrives in
:meth:`ConsumerSide.emit`, in the connection's mailbox greenlet, which must
never block: frames go into the session's buffer and wake its held poll.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent

from ... import metrics as _metrics
from ...consumers.runner import Connection
from ...exceptions import LayerError
from ...layers.base import BaseChannelLayer
from ...logs import CONNECTION_ID, new_connection_id
from ...policies import active as policies_active
from ...protocol.envelope import CLOSE_ABNORMAL, CLOSE_POLICY, CLOSE_SERVER_ERROR
from ...protocol.longpoll import SessionState
from ...protocol.longpoll_messages import session_group
from .sessions import Session, SessionTable

__all__ = ["ConsumerSide"]

logger = logging.getLogger("wsbridge.transport.longpoll")


class ConsumerSide:
    """Runs the consumers of the sessions in ``table``.

    Args:
        layer: the channel layer the consumers use.
        owner: this process's owner channel (an adopted session's group member).
        table: the sessions held by this process.
    """

    def __init__(self, layer: BaseChannelLayer, owner: str, table: SessionTable) -> None:
        self.layer = layer
        self.owner = owner
        self.table = table

    def start(self, session: Session, consumer: Any, *, backlog: bool = False) -> None:
        """Give ``session`` a consumer instance and send it ``websocket.connect``.

        Args:
            backlog: with slow-client policies active, the consumer waits
                while the session's buffer is half full.
        """
        context = CONNECTION_ID.set(new_connection_id())  # the session's id on its log records
        try:
            conn = Connection(
                session.scope, consumer, self.layer, lambda event: self.emit(session, event)
            )
        finally:
            CONNECTION_ID.reset(context)
        session.conn = conn
        if backlog and policies_active():
            state = session.state
            conn.set_backlog(lambda: state.fill, 500)
        conn.push({"type": "websocket.connect"})

    def emit(self, session: Session, event: dict[str, Any]) -> None:
        """Apply one event the consumer emitted (runs in its mailbox greenlet: never blocks)."""
        kind = event.get("type")
        if kind == "websocket.accept":
            if session.state.state is SessionState.CONNECTING:
                session.state.accept(event.get("subprotocol"))
            session.accepted = True
            session.handshake.set()
        elif kind == "websocket.send":
            self._send(session, event)
        elif kind == "websocket.close":
            self._close(session, event)

    def _send(self, session: Session, event: dict[str, Any]) -> None:
        state = session.state
        if state.state is SessionState.CONNECTING:  # sending implies accepting (ASGI)
            state.accept(None)
        session.accepted = True
        session.handshake.set()
        frame = state.queue(text=event.get("text"), data=event.get("bytes"))
        stats = _metrics.STATS
        stats.longpoll_messages_out += 1
        payload = event.get("text") if event.get("text") is not None else event.get("bytes")
        stats.longpoll_bytes_out += len(payload or b"")
        if frame is not None:
            session.wake()
            if frame.is_close:  # buffer overflow: the client is too slow
                gevent.spawn(self.disconnect, session, frame.close)

    def _close(self, session: Session, event: dict[str, Any]) -> None:
        if session.moving is not None:
            return  # the consumer is ending because of the hand-off: the session goes on
        state = session.state
        code = int(event.get("code") or 1000)
        if state.state is SessionState.CONNECTING:
            session.refusal = 500 if event.get("error") else 403
            state.refuse(session.refusal)
            session.handshake.set()
            gevent.spawn(self.disconnect, session, code)
            return
        if session.resumed and not session.accepted:
            # Refused on resume: the client holds an open session, so this is a close
            # frame; a plain refusal means "not any more" (1008, as a refused open).
            code = CLOSE_SERVER_ERROR if event.get("error") else code
            code = CLOSE_POLICY if code == 1000 else code
        session.handshake.set()
        if event.get("revoked"):
            # Revoked or kicked (wsbridge.identity): the session ends now; its
            # pending and later polls get 410 with the reason.
            reason = str(event.get("reason") or "revoked")
            self.table.revoke(state.sid, f"connection closed ({code}): {reason}")
            state.queue_close(code, reason)
            gevent.spawn(self.end, session, code=code)
            return
        if state.queue_close(code, str(event.get("reason") or "")) is not None:
            session.wake()
            gevent.spawn(self.disconnect, session, code)

    @staticmethod
    def disconnect(session: Session, code: int | None) -> None:
        """Tell the consumer ``websocket.disconnect`` with ``code`` (1006 for None)."""
        if session.conn is not None:
            session.conn.disconnected(code or CLOSE_ABNORMAL)

    def end(self, session: Session, *, code: int | None) -> None:
        """Forget ``session``; tell its consumer ``websocket.disconnect(code)`` unless None."""
        if not session.state.closed:
            session.state.expire()
        session.wake("gone")
        session.handshake.set()
        self.forget(session)
        if code is not None:
            self.disconnect(session, code)

    def forget(self, session: Session, *, moved: bool = False) -> None:
        """Stop holding ``session`` (ended, or handed over when ``moved``)."""
        if self.table.remove(session, moved=moved) and session.resumed:
            gevent.spawn(self._leave_session_group, session.state.sid)

    def _leave_session_group(self, sid: bytes) -> None:
        try:
            self.layer.group_discard(session_group(sid), self.owner)
        except LayerError:  # the membership expires with the layer's group_expiry
            logger.debug("could not leave the group of an adopted session", exc_info=True)
