"""The consumer's side of every long-poll session: start it, apply what it emits, end it.

A session's consumer runs behind the same
:class:`~wsbridge.consumers.runner.Connection` as a WebSocket's. What it
emits goes through the runner's connection contract
(:mod:`wsbridge.protocol.connection`), whose typed outputs arrive in
:meth:`ConsumerSide.apply`, in the connection's mailbox greenlet, which must
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
from ...protocol.closecodes import CloseCode
from ...protocol.connection import (
    CloseFrame,
    Message,
    Opened,
    Output,
    Refused,
)
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
                session.scope,
                consumer,
                self.layer,
                outputs=lambda output: self.apply(session, output),
                messages=lambda text, data: self._queue(session, text, data),
            )
        finally:
            CONNECTION_ID.reset(context)
        session.conn = conn
        if backlog and policies_active():
            state = session.state
            conn.set_backlog(lambda: state.fill, 500)
        conn.push({"type": "websocket.connect"})

    def apply(self, session: Session, output: Output) -> None:
        """Put one output of the connection contract on the wire (runs in the consumer's
        mailbox greenlet: never blocks).

        The runner's contract (:mod:`wsbridge.protocol.connection`) decides what
        the consumer's calls mean (an accept, an implicit accept, a refusal and
        its status, a close frame and its code); this applies the result.
        """
        if session.moving is not None and isinstance(output, (Refused, CloseFrame)):
            return  # the consumer is ending because of the hand-off: the session goes on
        if isinstance(output, Message):
            self._queue(session, output.text, output.data)
        elif isinstance(output, Opened):
            if session.state.state is SessionState.CONNECTING:
                session.state.accept(output.subprotocol)
            session.handshake.set()
        elif isinstance(output, Refused):
            self._refused(session, output)
        else:
            session.handshake.set()
            self._close(session, output.code, output.reason, revoked=output.revoked)

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close ``session`` from the server's side (a restart, a shutdown) with ``code``."""
        self.apply(session, CloseFrame(int(code), reason))

    def _queue(self, session: Session, text: str | None, data: bytes | None) -> None:
        # A message for the client (the contract's (OPEN, Send), also given to the
        # runner as its ``messages`` sink: the hot path, and the fastlane's).
        frame = session.state.queue(text=text, data=data)
        stats = _metrics.STATS
        stats.longpoll_messages_out += 1
        payload = text if text is not None else data
        stats.longpoll_bytes_out += len(payload or b"")
        if frame is not None:
            session.wake()
            if frame.is_close:  # buffer overflow: the client is too slow
                gevent.spawn(self.disconnect, session, frame.close)

    def _refused(self, session: Session, refusal: Refused) -> None:
        state = session.state
        session.handshake.set()
        if state.state is SessionState.CONNECTING:  # the open is answered with the status
            session.refusal = refusal.status
            state.refuse(refusal.status)
            gevent.spawn(self.disconnect, session, refusal.code)
            return
        # Refused on resume: the client holds an open session, so this is a close
        # frame; a plain refusal means "not any more" (1008, as a refused open).
        self._close(session, refusal.close_code, refusal.reason, revoked=refusal.revoked)

    def _close(self, session: Session, code: int, reason: str, *, revoked: bool) -> None:
        state = session.state
        if revoked:
            # Revoked or kicked (wsbridge.identity): the session ends now; its
            # pending and later polls get 410 with the reason.
            reason = reason or "revoked"
            self.table.revoke(state.sid, f"connection closed ({code}): {reason}")
            state.queue_close(code, reason)
            gevent.spawn(self.end, session, code=code)
            return
        if state.queue_close(code, reason) is not None:
            session.wake()
            gevent.spawn(self.disconnect, session, code)

    @staticmethod
    def disconnect(session: Session, code: int | None) -> None:
        """Tell the consumer ``websocket.disconnect`` with ``code`` (1006 for None)."""
        code = int(code or CloseCode.ABNORMAL)
        if session.conn is not None:
            session.conn.disconnected(code)

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
