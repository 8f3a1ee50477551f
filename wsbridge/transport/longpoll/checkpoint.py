"""Long-poll sessions that survive a crash: each session's state kept in the layer.

A graceful restart hands sessions over (``handoff.py``); a process killed
with -9 cannot. With a layer that has ``"checkpoints"`` (the Redis layer,
whose process leases tell a dead process from a live one), this process
keeps a copy of each session it holds in the layer, in the hand-off
format, and another process adopts it from there once this one's lease
has ended (``SessionMover.adopt_crashed``).

When a copy is written:

* before the answer to an ``open``, to a ``send`` (what the client is told
  is applied is in the copy) and to a ``poll`` that returns frames (so an
  adopter never numbers a new frame with a ``seq`` the client has seen);
  those requests wait for the write, which is batched with every other
  session's waiting at the same moment (one pipeline);
* by the sweeper, about once a second, for every session that changed
  since (frames queued while no poll was held) and, every ``ttl / 3``,
  for every session, to keep its copy from expiring;
* deleted once the session ends or moves.

So a crash loses at most the frames a consumer queued in the last second
for a client that was not polling, and those only when the group has no
history to recover them from. The cost is one Redis write per request that
changed a session (batched), and one per session per ``ttl / 3``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gevent
from gevent.event import AsyncResult, Event

from ...exceptions import LayerUnavailable
from ...protocol.longpoll import SessionState
from .sessions import Session

__all__ = ["Checkpoints", "CheckpointStore", "BATCH"]

logger = logging.getLogger("wsbridge.transport.longpoll")

#: Sessions written per pipeline.
BATCH = 500

_LIVE = (SessionState.OPEN, SessionState.CLOSING)


class CheckpointStore(Protocol):
    """What a layer with ``"checkpoints"`` offers as ``layer.checkpoints``.

    :class:`wsbridge.layers.redis.checkpoints.RedisCheckpoints` is the one
    implementation; its docstring says how the owner field fences.
    """

    def save_many(
        self, owner: str, items: Sequence[tuple[str, dict[str, Any]]], ttl: float
    ) -> list[bool | None]: ...

    def owner(self, sid: str) -> str | None: ...

    def alive(self, owner: str) -> bool: ...

    def take(self, sid: str, seen: str, new_owner: str, ttl: float) -> dict[str, Any] | None: ...

    def drop_many(self, owner: str, sids: Sequence[str]) -> None: ...


def _mark(session: Session) -> tuple[Any, ...]:
    return (*session.state.version, session.token)


class Checkpoints:
    """Writes this process's sessions to the layer, batched; remembers what is written.

    Args:
        store: the layer's checkpoint store.
        owner: this process's owner channel (the copies name it).
        ttl: seconds a copy lasts without being written again.
        snapshot: a session -> its hand-off message.
    """

    def __init__(
        self,
        store: CheckpointStore,
        owner: str,
        ttl: float,
        snapshot: Callable[[Session], dict[str, Any]],
    ) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self._snapshot = snapshot
        #: Session id -> (the mark written, when).
        self._saved: dict[bytes, tuple[tuple[Any, ...], float]] = {}
        self._queue: dict[bytes, Session] = {}
        self._waiters: dict[bytes, list[AsyncResult]] = {}
        self._drops: set[bytes] = set()
        #: Sessions another process took from us (we stalled past our lease): the
        #: caller stops serving them (:meth:`pop_taken`).
        self._taken: list[Session] = []
        self._wake = Event()
        self._flusher = gevent.spawn(self._run)

    def save(self, session: Session, timeout: float) -> bool | None:
        """Write ``session`` now unless its copy is current; waits up to ``timeout`` s.

        Returns:
            True written (or already current); False another process holds
            it now; None not written (the layer is down, or time ran out:
            the sweeper tries again).
        """
        sid = session.state.sid
        saved = self._saved.get(sid)
        if saved is not None and saved[0] == _mark(session):
            return True
        waiter: AsyncResult = AsyncResult()
        self._queue[sid] = session
        self._waiters.setdefault(sid, []).append(waiter)
        self._wake.set()
        try:
            result: bool | None = waiter.get(timeout=timeout)
        except gevent.Timeout:
            return None
        return result

    def sweep(self, sessions: Sequence[Session], now: float) -> None:
        """Queue what changed (or is due a refresh) and the copies of sessions gone from here."""
        held = {session.state.sid: session for session in sessions}
        for sid in [sid for sid in self._saved if sid not in held]:
            del self._saved[sid]
            self._drops.add(sid)
        refresh = self.ttl / 3
        for sid, session in held.items():
            if session.state.state not in _LIVE:
                continue
            saved = self._saved.get(sid)
            if saved is None or saved[0] != _mark(session) or now - saved[1] >= refresh:
                self._queue[sid] = session
        if self._queue or self._drops:
            self._wake.set()

    def sync(self, sessions: Sequence[Session]) -> None:
        """Sweep and write at once (a hand-off: no copy of a moved session may stay)."""
        self.sweep(sessions, time.monotonic())
        self._flush()

    def pop_taken(self) -> list[Session]:
        """The sessions found held by another process since the last call."""
        taken, self._taken = self._taken, []
        return taken

    def forget(self, sid: bytes) -> None:
        """A session adopted here: its copy names us from now on, as if written."""
        self._saved.pop(sid, None)

    def stop(self) -> None:
        self._flusher.kill(block=False)

    # -- the flusher --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._flush()
            except Exception:  # a bug: say it, keep the flusher alive
                logger.exception("long-poll checkpoints: writing failed; going on")

    def _flush(self) -> None:
        if self._drops:
            drops = [sid.hex() for sid in self._drops]
            self._drops.clear()
            try:
                self.store.drop_many(self.owner, drops)
            except LayerUnavailable:
                logger.debug("long-poll checkpoints not deleted: they expire by themselves")
        while self._queue:
            batch = [self._queue.pop(sid) for sid in list(self._queue)[:BATCH]]
            try:
                self._write(batch)
            except BaseException:
                for session in batch:  # nobody waits for an answer that will not come
                    self._answer(session.state.sid, None)
                raise

    def _write(self, batch: list[Session]) -> None:
        items, marks, written = [], [], []
        for session in batch:
            if session.state.state in _LIVE:
                items.append((session.state.sid.hex(), self._snapshot(session)))
                marks.append(_mark(session))
                written.append(session)
            else:  # ended meanwhile: nothing to write, its waiters go on
                self._answer(session.state.sid, True)
        if not items:
            return
        results = self.store.save_many(self.owner, items, self.ttl)
        now = time.monotonic()
        for session, mark, result in zip(written, marks, results, strict=True):
            sid = session.state.sid
            if result:
                self._saved[sid] = (mark, now)
            else:
                self._saved.pop(sid, None)  # the sweeper writes it again (None)
                if result is False:
                    self._taken.append(session)
            self._answer(sid, result)

    def _answer(self, sid: bytes, result: bool | None) -> None:
        for waiter in self._waiters.pop(sid, ()):
            waiter.set(result)
