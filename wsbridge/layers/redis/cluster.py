"""Running the Redis layer on a Redis Cluster (``cluster=True``).

The whole cluster is one *shard* of the layer: redis-py's
:class:`~redis.cluster.RedisCluster` finds the node owning each slot,
follows ``MOVED`` (a slot moved for good) and ``ASK`` (a slot being
migrated) redirections, retries ``TRYAGAIN`` and re-reads the topology after
a connection error, which is how a master failover (a replica promoted) is
followed without restarting anything.

What the layer adds for a cluster:

* **Hash tags.** Every Lua script touches the keys of one slot only. Names
  inside keys are wrapped in ``{...}``: a group's three keys
  (``P:1:group:{room}``, ``P:1:gproc:{room}``, ``P:1:gplain:{room}``) share
  one slot; each process inbox (``P:1:proc:{<process>}``) and each named
  channel (``P:1:chan:{<channel>}``) is in a slot of its own name.
* **No cross-slot pushes in Lua.** ``group_send`` runs the group script on
  the group's slot, which returns the processes holding members; the item
  is then pushed to each process's inbox through one cluster pipeline
  (redis-py groups it per node). Delayed messages are claimed with ``ZREM``
  (only one process wins a member) and pushed from Python.
* **Outages per call.** A failed master makes the calls touching its slots
  raise :class:`~wsbridge.exceptions.LayerUnavailable` while the other
  slots keep working: the cluster is never marked down as a whole (no
  fast-fail window). The outage is logged as a WARNING at most once per
  :data:`LOG_INTERVAL` with a running count; when calls succeed again after
  an outage the process re-adds its group memberships (a promoted replica
  may have missed the last writes: replication is asynchronous).

Not supported on a cluster: the channels_redis compatibility layout
(its keys have no hash tags; channels_redis itself cannot run there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import gevent
import redis
from redis.backoff import FullJitterBackoff  # in every redis-py setup.py allows (5.0+)
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from ...drops import record_drop
from ...exceptions import ConfigurationError, LayerUnavailable
from . import scripts
from .config import COMMAND_TIMEOUT, CONNECT_TIMEOUT, GeventConnection, HostSpec
from .native import NativeLayout
from .shard import OUTAGE_ERRORS, Backoff, Shard

__all__ = ["ClusterShard", "ClusterLayout", "cluster_options", "CLUSTER_OUTAGE_ERRORS"]

logger = logging.getLogger("wsbridge.layers.redis")

T = TypeVar("T")

#: Seconds between two WARNINGs about the same kind of cluster error.
LOG_INTERVAL = 10.0
#: Seconds between two restores of memberships after calls fail then succeed.
RESTORE_DEBOUNCE = 1.0
#: Attempts redis-py makes for one command through a failover (with backoff).
CLUSTER_RETRIES = 6

#: What a cluster raises while a master is failing over or a slot is moving.
CLUSTER_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    *OUTAGE_ERRORS,
    redis.exceptions.ClusterError,  # includes ClusterDownError, MasterDownError
    redis.exceptions.RedisClusterException,  # includes SlotNotCoveredError
    redis.exceptions.TryAgainError,  # a multi-key command during a slot migration
    redis.exceptions.AskError,  # includes MovedError: redirections exhausted
)


def cluster_options(specs: Sequence[HostSpec]) -> tuple[list[ClusterNode], dict[str, Any]]:
    """Seed nodes and client options from the decoded ``hosts`` entries.

    Every entry is a seed node (``redis://`` / ``rediss://`` URL, ``(host,
    port)`` pair or dict with ``host``/``port``); credentials and TLS come
    from the first entry that has them, other dict keys are passed to
    redis-py. A cluster has one database: a URL naming another is refused.

    Raises:
        ConfigurationError: a unix socket, a Sentinel entry or a database
            other than 0.
    """
    nodes: list[ClusterNode] = []
    options: dict[str, Any] = {}
    for spec in specs:
        spec = dict(spec)
        if "unix_socket_path" in spec or "master_name" in spec:
            raise ConfigurationError(
                "a Redis Cluster is reached over TCP: give its nodes as redis:// or "
                "rediss:// URLs (or (host, port) pairs), not a unix socket or Sentinel"
            )
        if "address" in spec:
            host, port, url_options = _parse_url(str(spec.pop("address")))
        else:
            host, port, url_options = (
                str(spec.pop("host", "127.0.0.1")),
                int(spec.pop("port", 6379)),
                {},
            )
        if int(spec.pop("db", 0) or 0) != 0:
            raise ConfigurationError("a Redis Cluster has only database 0: drop the /db part")
        node_class: Any = ClusterNode  # untyped in redis-py
        nodes.append(node_class(host, port))
        for key, value in {**url_options, **spec}.items():
            options.setdefault(key, value)
    return nodes, options


def _parse_url(url: str) -> tuple[str, int, dict[str, Any]]:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"Redis Cluster node {url!r}: use a redis:// or rediss:// URL")
    path = parsed.path.strip("/")
    if path and path != "0":
        raise ConfigurationError(
            f"Redis Cluster node {url!r}: a cluster has only database 0: drop the /{path}"
        )
    options: dict[str, Any] = {}
    if parsed.password:
        options["password"] = unquote(parsed.password)
    if parsed.username:
        options["username"] = unquote(parsed.username)
    if parsed.scheme == "rediss":
        options["ssl"] = True
    return parsed.hostname or "127.0.0.1", parsed.port or 6379, options


def _make_client(
    nodes: list[ClusterNode], options: dict[str, Any], *, blocking: bool
) -> RedisCluster:
    options = dict(options)
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    options.setdefault("socket_keepalive", True)
    # BLPOP-style reads are bounded by their own timeout; a dead node
    # closes the socket (or keepalive finds it gone).
    options["socket_timeout"] = None if blocking else options.get("socket_timeout", COMMAND_TIMEOUT)
    if not options.get("ssl"):
        # Cooperative sockets even in a process gevent has not patched.
        options.setdefault("connection_class", GeventConnection)
    # The retries are redis-py's cluster handling: MOVED/ASK/TRYAGAIN and a
    # topology refresh after a connection error, paced so that a failover
    # (cluster-node-timeout plus the election) is ridden through.
    options.setdefault("retry", Retry(FullJitterBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES))
    options.setdefault("require_full_coverage", False)
    # Given a url, redis-py builds each node's pool from the options (the
    # only way it takes a connection_class); the url is the first seed node.
    scheme = "rediss" if options.pop("ssl", False) else "redis"
    url = f"{scheme}://{nodes[0].host}:{nodes[0].port}/0"
    return RedisCluster(url=url, startup_nodes=list(nodes[1:]), **options)


class ClusterShard(Shard):
    """A whole Redis Cluster seen as one shard of the layer.

    Args:
        index: always 0 (the only shard).
        specs: the decoded ``hosts`` entries: seed nodes.
        backoff: how long the reader waits between attempts while calls fail.
        on_recovered: called after calls succeed again following an outage.
    """

    def __init__(
        self,
        index: int,
        specs: Sequence[HostSpec],
        backoff: Backoff,
        on_recovered: Callable[[Shard], None] | None = None,
    ) -> None:
        nodes, options = cluster_options(specs)
        self.index = index
        self.spec = {"cluster": [f"{n.host}:{n.port}" for n in nodes]}
        self.name = "cluster:" + ",".join(self.spec["cluster"])
        self.backoff = backoff
        self.on_recovered = on_recovered
        self.run_id = None
        self._nodes, self._options = nodes, options
        self._client: RedisCluster | None = None
        self._blocking: RedisCluster | None = None
        self.up = True
        self.failures = 0
        self.retry_at = 0.0
        self.outages = 0
        self.last_error = ""
        self._checked_cluster = True
        self.error_counts: dict[str, int] = {}
        self.recoveries = 0
        self._restore_pending = False
        self._last_restore = -RESTORE_DEBOUNCE
        self._last_logged: dict[str, float] = {}
        # Called as Shard's redis-py Script objects are: (keys=, args=, client=).
        self.push_list = _LazyScript(self, scripts.PUSH_LIST)  # type: ignore[assignment]
        self.push_zset = _LazyScript(self, scripts.PUSH_ZSET)  # type: ignore[assignment]
        self.group_members = _LazyScript(self, scripts.GROUP_MEMBERS)  # type: ignore[assignment]
        self._group_send = _LazyScript(self, scripts.GROUP_SEND_NATIVE)

    # The clients are made on first use: making one reads the topology, and
    # a layer is often built (settings, fork) long before it is used.

    @property
    def client(self) -> RedisCluster:  # type: ignore[override]
        if self._client is None:
            self._client = _make_client(self._nodes, self._options, blocking=False)
        return self._client

    @property
    def blocking(self) -> RedisCluster:  # type: ignore[override]
        if self._blocking is None:
            self._blocking = _make_client(self._nodes, self._options, blocking=True)
        return self._blocking

    def __repr__(self) -> str:
        return f"<ClusterShard {self.name} {'up' if self.up else 'failing'}>"

    # -- running commands ----------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a redis-py call on the cluster; a failure fails this call only.

        Raises:
            LayerUnavailable: the slot's master is unreachable (failing over),
                the slot is not served, or redirections did not settle.
        """
        try:
            result = func(*args, **kwargs)
        except CLUSTER_OUTAGE_ERRORS as exc:
            self.mark_down(exc)
            raise LayerUnavailable(f"Redis Cluster {self.name}: {exc}") from exc
        if not self.up:
            self.mark_up()
        return result

    def group_send_native(self, keys: list[str], args: list[Any]) -> Any:  # type: ignore[override]
        """The group script, told never to push (inboxes are in other slots)."""
        return self._group_send(keys=keys, args=[*args[:5], "0"])

    def move_due(self, keys: list[str], args: list[Any]) -> list[Any]:  # type: ignore[override]
        """Move due delayed messages: the MOVE_DUE script's work, from Python.

        Each due member is claimed with ``ZREM`` (one process wins it), then
        pushed to its destination list, which lives in another slot.
        Returns ``[moved, dropped_full, next_due_ms or -1]`` as the script does.
        """
        key = keys[0]
        now_ms, limit, expiry_ms = int(args[0]), int(args[1]), int(args[2])
        moved = dropped = 0
        due: list[bytes] = self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)  # type: ignore[assignment]
        for member in due:
            if not self.client.zrem(key, member):
                continue  # another process claimed it
            parts = member.split(b"|", 4)
            if len(parts) != 5 or parts[1] != b"l":
                continue
            _nonce, _kind, capacity, destination, payload = parts
            pushed = self.push_list(
                keys=[destination.decode()],
                args=[payload, int(capacity), int(time.time() * 1000), expiry_ms],
            )
            moved, dropped = (moved + 1, dropped) if pushed else (moved, dropped + 1)
        head = self.client.zrange(key, 0, 0, withscores=True)
        return [moved, dropped, head[0][1] if head else -1]

    def ping(self) -> bool:
        """Always True: whether the cluster serves a slot is learnt by using it."""
        self.retry_at = 0.0
        return True

    def wait_time(self) -> float:
        return 0.0 if self.up else self.backoff.delay(min(self.failures, 4))

    # -- state ------------------------------------------------------------------

    def mark_down(self, exc: BaseException) -> None:
        reason = type(exc).__name__
        self.last_error = f"{reason}: {exc}"
        self.failures += 1
        self.error_counts[reason] = self.error_counts.get(reason, 0) + 1
        if self.up:
            self.up = False
            self.outages += 1
        now = time.monotonic()
        if now - self._last_logged.get(reason, -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_logged[reason] = now
            logger.warning(
                "channel layer: Redis Cluster %s: a call failed (%s) [%d %s so far]; "
                "calls touching the slot raise LayerUnavailable until it is served again",
                self.name,
                self.last_error,
                self.error_counts[reason],
                reason,
            )

    def mark_up(self) -> None:
        # During a failover calls to other slots succeed between failures:
        # the log line is rate-limited and the restore debounced (at most
        # one per RESTORE_DEBOUNCE seconds, and always one after the last).
        self.up = True
        self.failures = 0
        self.recoveries += 1
        now = time.monotonic()
        if now - self._last_logged.get("up", -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_logged["up"] = now
            logger.warning(
                "channel layer: Redis Cluster %s answers again [%d recoveries so far]",
                self.name,
                self.recoveries,
            )
        if self.on_recovered is None or self._restore_pending:
            return
        self._restore_pending = True
        gevent.spawn_later(max(0.0, self._last_restore + RESTORE_DEBOUNCE - now), self._restore)

    def _restore(self) -> None:
        self._restore_pending = False
        self._last_restore = time.monotonic()
        if self.on_recovered is not None:
            self.on_recovered(self)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's clients; new ones connect on first use.

        Scripts registered on them go too (a redis-py ``Script`` runs on the
        client it was registered with): the child registers its own.
        """
        self._client = self._blocking = None
        for name, value in list(vars(self).items()):
            if isinstance(value, _LazyScript):
                value._script = None
            elif name.endswith("_scripts") and isinstance(value, dict):
                value.clear()  # presence.py's and history.py's per-shard caches

    def close(self) -> None:
        for client in (self._client, self._blocking):
            if client is not None:
                client.close()
        self._client = self._blocking = None


class _LazyScript:
    """A Lua script registered on the cluster client when first run."""

    def __init__(self, shard: ClusterShard, source: str) -> None:
        self.shard = shard
        self.source = source
        self._script: Any = None

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> Any:
        if self._script is None:
            self._script = self.shard.client.register_script(self.source)
        return self._script(keys=keys, args=args, client=client)


class ClusterLayout(NativeLayout):
    """The native layout with hash tags, for a Redis Cluster."""

    name = "wsbridge/1+cluster"

    def tag(self, name: str) -> str:
        # Names are validated: they never contain braces themselves.
        return "{" + name + "}"

    def restore_key_for(self, group: str) -> str:
        # The script's keys must share the group's slot. The restart marker
        # is for a standalone Redis that came back empty; a cluster master
        # is replaced by its replica (with the data), so no marker is set
        # and this key, in the group's slot, stays absent.
        return self.restore_key + ":" + self.tag(group)

    def untag(self, name: str) -> str:
        return name[1:-1] if name.startswith("{") and name.endswith("}") else name

    def push_to_homes(self, processes: list[str], item: bytes) -> int:
        """Push the group item to each process inbox: one pipeline, split per node."""
        shard = self.ctx.shards[0]
        now_ms = int(time.time() * 1000)
        capacity, expiry = self.ctx.process_capacity, self.expiry_ms
        pipe: Any = shard.client.pipeline(transaction=False)
        for process in processes:
            # ClusterPipeline has no eval(); EVAL (not EVALSHA) needs no script cache on
            # a replica just promoted (Redis 7 does not replicate SCRIPT LOAD).
            pipe.execute_command(
                "EVAL", scripts.PUSH_LIST, 1, self.proc_key(process), item, capacity, now_ms, expiry
            )
        try:
            results = shard.call(pipe.execute, raise_on_error=False)
        except LayerUnavailable:  # not "full": the nodes are down (counted and said so)
            record_drop("layer_unavailable", len(processes), detail="a group item to inboxes")
            return 0
        full = 0
        for process, result in zip(processes, results, strict=True):
            if isinstance(result, BaseException):
                record_drop("layer_unavailable", detail=f"a group item to process {process}")
                shard.mark_down(result)
                logger.debug("group item to process %s not pushed: %s", process, result)
            elif not result:
                full += 1
        return full
