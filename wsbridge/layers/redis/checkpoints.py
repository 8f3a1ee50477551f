"""Session checkpoints: state a process keeps in Redis so another can adopt it after a crash.

A long-poll session outlives a graceful restart through a hand-off message
(``transport/longpoll/handoff.py``); a process killed with -9 writes none.
So each process also keeps a *checkpoint* of each session it holds, one
hash per session (native layout)::

    P:1:ckpt:<sid>   HASH  owner -> the owner channel holding the session
                           data  -> the session, sealed like a message
                     expires ``ttl`` seconds after the last save

The owner field fences: a save or a drop applies only while the hash names
the caller (or is absent), and :meth:`RedisCheckpoints.take` moves it to a
new owner only from the owner the taker saw. So of two processes that find
an owner dead, one wins; and an owner that was only stalled (its lease
ended, another process took its sessions) learns so at its next save.

Whether an owner is dead is its process lease's answer (``lease.py``):
a checkpoint is taken only once the lease of the process holding it has
ended or was reaped, so never from a process that is still alive. A process
holds its lease before it saves its first checkpoint (a save renews it if
the reader has not yet), since no lease at all reads as dead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...exceptions import LayerUnavailable, MessageDecodeError
from ...logs import CountedWarning
from .native import process_of

if TYPE_CHECKING:
    from .lease import ProcessLeases
    from .shard import Shard

__all__ = ["RedisCheckpoints"]

logger = logging.getLogger("wsbridge.layers.redis")

# KEYS[1] the checkpoint; ARGV: owner, data, ttl_ms -> 1 saved | 0 another owner holds it
_SAVE = """
local cur = redis.call('HGET', KEYS[1], 'owner')
if cur and cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] the checkpoint; ARGV: the owner seen, the new owner, ttl_ms -> data | false
_TAKE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('HGET', KEYS[1], 'data')
"""

# KEYS[1] the checkpoint; ARGV: owner -> 1 deleted | 0 not ours (or gone)
_DROP = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class RedisCheckpoints:
    """The ``"checkpoints"`` capability of the Redis layer (native and cluster layouts).

    A session's hash lives on the shard ``ring.index("s:" + sid)`` (on a
    cluster, in its own slot).

    Args:
        leases: this process's lease and the layout it runs on; the lease
            table says whether an owner is alive.
    """

    def __init__(self, leases: ProcessLeases) -> None:
        self.layout = leases.layout
        self.ctx = leases.ctx
        self.process_leases = leases
        self.leases = leases.table
        self.prefix = f"{self.ctx.prefix}:1:ckpt:"
        self._failed_warning = CountedWarning(
            logger,
            "channel layer: %s; such a session cannot be adopted by another process if this "
            "one crashes",
        )

    def _key(self, sid: str) -> str:
        return self.prefix + self.layout.tag(sid)

    def _shard(self, sid: str) -> Shard:
        return self.ctx.shard_for("s:" + sid)

    def _seal(self, sid: str, message: dict[str, Any]) -> bytes:
        codec = self.ctx.codec
        return codec.seal(codec.dump_message(message), "s:" + sid)

    def save_many(
        self, owner: str, items: Sequence[tuple[str, dict[str, Any]]], ttl: float
    ) -> list[bool | None]:
        """Write each ``(sid, message)`` as held by ``owner``, one pipeline per shard.

        Returns:
            Per item: True saved; False another owner holds it now (the
            caller no longer owns that session); None not saved (Redis
            unreachable, or the message is too large: logged and counted
            as ``checkpoint_failed``).
        """
        results: list[bool | None] = [None] * len(items)
        if not self.process_leases.held:
            # A checkpoint of a process with no lease yet (its reader has not renewed
            # one) would look like a dead process's: another could adopt the session.
            self.process_leases.renew()
        by_shard: dict[int, list[int]] = {}
        sealed: dict[int, bytes] = {}
        for i, (sid, message) in enumerate(items):
            try:
                sealed[i] = self._seal(sid, message)
            except (ValueError, TypeError) as exc:  # MessageTooLarge is a ValueError too
                self._failed(f"session state not saved: {exc}")
                continue
            by_shard.setdefault(id(self._shard(sid)), []).append(i)
        ttl_ms = max(1, int(ttl * 1000))
        for indexes in by_shard.values():
            shard = self._shard(items[indexes[0]][0])
            calls = [(_SAVE, self._key(items[i][0]), owner, sealed[i], ttl_ms) for i in indexes]
            try:
                answers = self._run(shard, calls)
            except LayerUnavailable as exc:
                self._failed(f"{len(indexes)} session state(s) not saved: {exc}")
                continue
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = bool(answer)
        return results

    def owner(self, sid: str) -> str | None:
        """The owner channel holding session ``sid``'s checkpoint; None when there is none.

        Raises:
            LayerUnavailable: Redis cannot be reached.
        """
        shard = self._shard(sid)
        raw: Any = shard.call(shard.client.hget, self._key(sid), "owner")
        return None if raw is None else raw.decode()

    def alive(self, owner: str) -> bool:
        """Whether the process of owner channel ``owner`` still holds its lease.

        Raises:
            LayerUnavailable: Redis cannot be reached.
        """
        try:
            process = process_of(owner)
        except ValueError:
            return False  # not a process-specific channel: no process to wait for
        shard = self.leases.shard
        ends: Any = shard.call(shard.client.zscore, self.leases.key, process)
        return ends is not None and float(ends) > time.time() * 1000

    def take(self, sid: str, seen: str, new_owner: str, ttl: float) -> dict[str, Any] | None:
        """Move ``sid``'s checkpoint from ``seen`` to ``new_owner``; its message, or None.

        None when it no longer names ``seen`` (another process took it, or
        it was dropped) or its data does not decode (logged, counted).

        Raises:
            LayerUnavailable: Redis cannot be reached.
        """
        shard = self._shard(sid)
        ttl_ms = max(1, int(ttl * 1000))
        raw: Any = shard.call(shard.client.eval, _TAKE, 1, self._key(sid), seen, new_owner, ttl_ms)
        if raw is None:
            return None
        try:
            return self.ctx.codec.unseal(raw, "s:" + sid)
        except (MessageDecodeError, ValueError, TypeError) as exc:
            self._failed(f"a session checkpoint does not decode: {exc}")
            return None

    def drop_many(self, owner: str, sids: Sequence[str]) -> None:
        """Delete the checkpoints of ``sids`` that ``owner`` still holds (ended sessions).

        Raises:
            LayerUnavailable: Redis cannot be reached (they expire by themselves).
        """
        by_shard: dict[int, list[str]] = {}
        for sid in sids:
            by_shard.setdefault(id(self._shard(sid)), []).append(sid)
        for group in by_shard.values():
            shard = self._shard(group[0])
            self._run(shard, [(_DROP, self._key(sid), owner) for sid in group])

    def _run(self, shard: Shard, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Each ``(script, key, *args)`` as one EVAL, pipelined except on a cluster.

        A cluster pipeline takes no scripts; each session is in a slot of its own anyway.

        EVAL, not EVALSHA: these scripts are a few hundred bytes, and nothing has
        to be loaded on a node first (a failover, a new node).
        """
        if self.ctx.cluster:
            return [shard.call(shard.client.eval, script, 1, *rest) for script, *rest in calls]
        pipe = shard.client.pipeline(transaction=False)
        for script, *rest in calls:
            pipe.eval(script, 1, *rest)
        return list(shard.call(pipe.execute))

    def _failed(self, detail: str) -> None:
        self._failed_warning(detail, count=self.ctx.count("checkpoint_failed"))
