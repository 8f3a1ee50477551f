"""One Redis instance of the ring: its clients, scripts and health.

A shard is *up* until a command fails with a connection error. It is then
*down*: the outage is logged once, callers get ``LayerUnavailable`` at once
(no piling up on a dead socket) until the next retry time, which backs off
exponentially with jitter. The first command that succeeds again marks it
up, logs the recovery once and calls the layer's ``on_recovered`` hook
(which restores group memberships).

A Redis that *restarted* (it comes back empty, its ``run_id`` changed) has
lost every process's group memberships; each process restores its own as
soon as it reconnects, which is not at the same moment for all. The first
connection that sees the new ``run_id`` sets a restore marker in Redis
(:attr:`Shard.restore_marker`, for ``restore_window`` seconds, renewed by
each process that notices) before anything else runs on it; group sends
refuse with ``LayerUnavailable`` while it is there, as during the outage,
instead of reaching an empty group in silence.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from ...exceptions import ConfigurationError, LayerUnavailable
from . import scripts
from .config import HostSpec, describe, make_pool

__all__ = ["Shard", "Backoff", "OUTAGE_ERRORS", "raise_restoring"]

logger = logging.getLogger("wsbridge.layers.redis")

T = TypeVar("T")

#: Exceptions that mean "this Redis cannot be used right now".
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a demoted master after a Sentinel failover
    redis.exceptions.BusyLoadingError,
    OSError,
)


def raise_restoring(shard: Shard) -> None:
    """Raise the ``LayerUnavailable`` of a group send refused by the restore marker."""
    raise LayerUnavailable(
        f"Redis shard {shard.name} restarted moments ago and came back empty; the processes "
        "are restoring their group memberships, so this group send was not made (retry in a "
        "moment, as during an outage)"
    )


class Backoff:
    """Exponential backoff with full jitter: ``base * 2**n``, capped at ``cap`` seconds."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap

    def delay(self, failures: int) -> float:
        ceiling = min(float(self.cap), float(self.base) * float(2 ** min(failures, 30)))
        return ceiling / 2 + random.random() * ceiling / 2


class Shard:
    """A Redis instance, its connection pools and its up/down state.

    Args:
        index: position in the ``hosts`` list.
        spec: the decoded host entry.
        backoff: retry pacing while down.
        on_recovered: called (in the recovering greenlet) after an outage ends.
    """

    def __init__(
        self,
        index: int,
        spec: HostSpec,
        backoff: Backoff,
        on_recovered: Callable[[Shard], None] | None = None,
    ) -> None:
        self.index = index
        self.spec = spec
        self.name = describe(spec)
        self.backoff = backoff
        self.on_recovered = on_recovered
        self.run_id: bytes | None = None
        self.pool = make_pool(spec, on_connect=self._on_connect)
        self.blocking_pool = make_pool(spec, blocking=True, on_connect=self._on_connect)
        self.client = redis.Redis(connection_pool=self.pool)
        self.blocking = redis.Redis(connection_pool=self.blocking_pool)
        self.up = True
        self.failures = 0
        self.retry_at = 0.0
        self.outages = 0
        self.last_error = ""
        #: (key, milliseconds): set on a restarted Redis before anything else (see above).
        self.restore_marker: tuple[str, int] | None = None
        self._checked_cluster = False
        self.push_list = self.client.register_script(scripts.PUSH_LIST)
        self.push_zset = self.client.register_script(scripts.PUSH_ZSET)
        self.group_send_native = self.client.register_script(scripts.GROUP_SEND_NATIVE)
        self.group_send_cr = self.client.register_script(scripts.GROUP_SEND_CHANNELS_REDIS)
        self.group_members = self.client.register_script(scripts.GROUP_MEMBERS)
        self.move_due = self.client.register_script(scripts.MOVE_DUE)

    def __repr__(self) -> str:
        return f"<Shard {self.index} {self.name} {'up' if self.up else 'down'}>"

    # -- running commands ----------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` (a redis-py call) with outage handling.

        Raises:
            LayerUnavailable: the shard is down (now or already).
        """
        if not self.up and time.monotonic() < self.retry_at:
            raise LayerUnavailable(
                f"Redis shard {self.name} is unreachable ({self.last_error}); "
                f"retrying in {self.retry_at - time.monotonic():.1f}s"
            )
        try:
            if not self._checked_cluster:
                self._refuse_cluster()
            result = func(*args, **kwargs)
        except OUTAGE_ERRORS as exc:
            self.mark_down(exc)
            raise LayerUnavailable(f"Redis shard {self.name} is unreachable: {exc}") from exc
        if not self.up:
            self.mark_up()
        return result

    def ping(self) -> bool:
        """Try the shard now (ignoring the backoff); True when it answers."""
        self.retry_at = 0.0
        try:
            self.call(self.client.ping)
        except LayerUnavailable:
            return False
        return True

    def wait_time(self) -> float:
        """Seconds until the next retry is due (0 when up)."""
        return 0.0 if self.up else max(0.0, self.retry_at - time.monotonic())

    # -- state ----------------------------------------------------------------------

    def mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        self.retry_at = time.monotonic() + self.backoff.delay(self.failures)
        # Pooled sockets are dead too; drop them so nothing reuses them.
        try:
            self.pool.disconnect(inuse_connections=False)
        except TypeError:
            # redis-py 5.0's BlockingConnectionPool.disconnect() takes no argument and
            # drops the borrowed connections too: they are as dead as the pooled ones.
            self.pool.disconnect()
        if self.up:
            self.up = False
            self.outages += 1
            logger.warning(
                "channel layer: Redis shard %s unreachable (%s); retrying with backoff, "
                "sends to it raise LayerUnavailable until it is back",
                self.name,
                self.last_error,
            )

    def mark_up(self) -> None:
        was_down = not self.up
        self.up = True
        self.failures = 0
        self.retry_at = 0.0
        if was_down:
            logger.warning("channel layer: Redis shard %s is reachable again", self.name)
            if self.on_recovered is not None:
                self.on_recovered(self)

    def _on_connect(self, connection: Any) -> None:
        # redis-py reconnects a pooled connection silently, so a Redis that
        # restarted (empty) between two commands would go unnoticed. Each new
        # connection reads the server's run_id: a new one means a new server
        # session, and this process's memberships must be restored.
        connection.on_connect()
        connection.send_command("INFO", "server")
        info = connection.read_response()
        run_id = None
        for line in bytes(info).splitlines():
            if line.startswith(b"run_id:"):
                run_id = line[7:].strip()
        if run_id is None or run_id == self.run_id:
            return
        restarted = self.run_id is not None
        self.run_id = run_id
        if restarted and self.restore_marker is not None:
            # On this very connection, before the command that opened it: a group
            # send must not reach the groups before their members are back.
            key, ttl_ms = self.restore_marker
            connection.send_command("SET", key, "1", "PX", ttl_ms)
            connection.read_response()
        if restarted and self.up and self.on_recovered is not None:
            logger.warning("channel layer: Redis shard %s restarted; restoring state", self.name)
            self.on_recovered(self)

    def _refuse_cluster(self) -> None:
        info = self.client.info("cluster")
        # Checked on every command until it passes: a cluster stays refused.
        self._checked_cluster = not info.get("cluster_enabled")
        if info.get("cluster_enabled"):
            raise ConfigurationError(
                f"Redis at {self.name} runs in cluster mode: configure the layer with "
                "cluster=True (CONFIG {'cluster': True}) and the cluster's nodes in hosts, "
                "or list independent Redis instances. See docs/topics/scaling.rst."
            )

    def after_fork(self) -> None:
        """In a forked child: give the pool its new owner now.

        redis-py 5.0 does it lazily under a plain Lock that a copied greenlet
        may hold (ChildDeadlockedError after 5 s under gunicorn --preload);
        newer releases use an RLock.
        """
        self.pool.reset()

    def close(self) -> None:
        self.pool.disconnect()
        self.blocking_pool.disconnect()
