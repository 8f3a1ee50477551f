"""Turning Channels-style ``hosts`` entries into redis-py connection pools.

Accepted entries (the shapes ``channels_redis`` users already write)::

    "redis://:password@host:6379/0"          URL (rediss:// for TLS)
    "unix:///run/redis.sock?db=0"            unix socket URL
    "/run/redis.sock"                        unix socket path
    ("127.0.0.1", 6379)                      (host, port) pair
    {"address": "redis://host:6379", ...}    dict: an URL plus redis-py options
    {"host": "h", "port": 6379, "db": 1}     dict: redis-py connection options
    {"sentinels": [("s1", 26379)], "master_name": "mymaster", ...}   Sentinel

Every pool is created without redis-py's own retries: the layer decides
what an outage means (see ``shard.py``).

Plain TCP, unix-socket and Sentinel connections are opened with gevent's
socket, so the layer's blocking reads only block their own greenlet even
in a process gevent has not monkey-patched (a script, a test run, a
threaded server sending from a view). TLS (``rediss://``) is cooperative
only once the process is patched, as ``wsbridge serve`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from gevent import socket as gsocket
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from ...exceptions import ConfigurationError

__all__ = ["HostSpec", "decode_hosts", "make_pool", "describe"]

HostSpec = dict[str, Any]

#: Seconds to wait for a TCP connect before calling a shard unreachable.
CONNECT_TIMEOUT = 2.0
#: Seconds any single non-blocking command may take.
COMMAND_TIMEOUT = 5.0
#: Connections per shard and process; callers beyond it wait for a free one.
POOL_SIZE = 64


class _GeventTCP:
    """``_connect`` for TCP with gevent's socket (what redis-py does, cooperatively)."""

    host: str
    port: int
    socket_connect_timeout: float | None
    socket_timeout: float | None
    socket_keepalive: bool
    socket_keepalive_options: dict[int, Any]

    def _connect(self) -> Any:
        address = (self.host, self.port)
        sock = gsocket.create_connection(address, timeout=self.socket_connect_timeout)
        try:
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
            if self.socket_keepalive:
                sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_KEEPALIVE, 1)
                for option, value in (self.socket_keepalive_options or {}).items():
                    sock.setsockopt(gsocket.IPPROTO_TCP, option, value)
            sock.settimeout(self.socket_timeout)
        except OSError:
            sock.close()
            raise
        return sock


class GeventConnection(_GeventTCP, redis.Connection):
    """redis-py's TCP connection on a gevent socket."""


class GeventSentinelConnection(_GeventTCP, SentinelManagedConnection):
    """redis-py's Sentinel-managed connection on a gevent socket."""


class GeventUnixConnection(redis.UnixDomainSocketConnection):
    """redis-py's unix-socket connection on a gevent socket."""

    def _connect(self) -> Any:
        sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
        sock.settimeout(self.socket_connect_timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        sock.settimeout(self.socket_timeout)
        return sock


def decode_hosts(hosts: Any) -> list[HostSpec]:
    """Normalise a ``hosts`` setting to a list of dicts (one per shard).

    Raises:
        ConfigurationError: for a bare string (a list is needed), an empty
            list, or an entry of an unknown shape.
    """
    if hosts is None:
        return [{"address": "redis://127.0.0.1:6379/0"}]
    if isinstance(hosts, (str, bytes)):
        raise ConfigurationError(
            f"hosts must be a list of Redis hosts, even for one: write hosts=[{hosts!r}]"
        )
    specs = []
    for entry in hosts:
        if isinstance(entry, Mapping):
            specs.append(dict(entry))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            specs.append({"host": str(entry[0]), "port": int(entry[1])})
        elif isinstance(entry, str) and entry.startswith("/"):
            specs.append({"unix_socket_path": entry})
        elif isinstance(entry, str) and "://" in entry:
            specs.append({"address": entry})
        else:
            raise ConfigurationError(
                f"cannot read Redis host {entry!r}: use a redis://, rediss:// or unix:// URL, "
                "a socket path, a (host, port) pair or a dict of redis-py options"
            )
    if not specs:
        raise ConfigurationError("hosts is empty: give at least one Redis host")
    return specs


def describe(spec: HostSpec) -> str:
    """A short, password-free name for a shard, for logs and ``wsbridge status``."""
    if "address" in spec:
        url = str(spec["address"])
        scheme, _, rest = url.partition("://")
        if "@" in rest:
            rest = rest.split("@", 1)[1]
        return f"{scheme}://{rest}"
    if "master_name" in spec:
        return f"sentinel:{spec['master_name']}"
    if "unix_socket_path" in spec:
        return f"unix://{spec['unix_socket_path']}"
    return f"redis://{spec.get('host', 'localhost')}:{spec.get('port', 6379)}/{spec.get('db', 0)}"


def make_pool(
    spec: HostSpec, *, blocking: bool = False, on_connect: Any = None
) -> redis.ConnectionPool:
    """A connection pool for one shard.

    Args:
        spec: one entry from :func:`decode_hosts`.
        blocking: for BLPOP-style commands: no command timeout (their own
            timeout bounds them), the socket still times out when the peer
            vanishes without closing.
        on_connect: ``f(connection)`` run on every new connection, in place
            of redis-py's own set-up (it must call ``connection.on_connect()``).
    """
    options = dict(spec)
    if on_connect is not None:
        options["redis_connect_func"] = on_connect
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    options.setdefault("socket_keepalive", True)
    options["socket_timeout"] = None if blocking else options.get("socket_timeout", COMMAND_TIMEOUT)
    options["retry"] = Retry(NoBackoff(), 0)
    if "master_name" in options:
        return _sentinel_pool(options)
    # A burst of layer calls (thousands of sockets joining groups at once, a
    # mass long-poll hand-off) must wait for a free connection, not fail as
    # if Redis were down: a blocking pool queues callers (a gevent-friendly
    # wait once patched) up to the command timeout.
    options.setdefault("max_connections", POOL_SIZE)
    options.setdefault("timeout", options["socket_timeout"] or COMMAND_TIMEOUT)
    # redis-py's constructors are untyped: typed here, once, by what they return.
    pool_class: Any = redis.BlockingConnectionPool
    pool: redis.ConnectionPool
    if "address" in options:
        address = str(options.pop("address"))
        scheme = address.partition("://")[0]
        if scheme == "redis":
            options.setdefault("connection_class", GeventConnection)
        elif scheme == "unix":
            options.pop("socket_keepalive", None)
            options.setdefault("connection_class", GeventUnixConnection)
        pool = pool_class.from_url(address, **options)
    elif "unix_socket_path" in options:
        options.pop("socket_keepalive", None)
        pool = pool_class(connection_class=GeventUnixConnection, **options)
    elif options.pop("ssl", False):
        pool = pool_class(connection_class=redis.SSLConnection, **options)
    else:
        pool = pool_class(connection_class=GeventConnection, **options)
    return pool


def _sentinel_pool(options: dict[str, Any]) -> redis.ConnectionPool:
    master_name = options.pop("master_name")
    sentinels = options.pop("sentinels", None)
    if not sentinels or not isinstance(sentinels, Sequence):
        raise ConfigurationError(
            f"Sentinel master {master_name!r} needs sentinels=[(host, port), ...] in the same dict"
        )
    sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
    sentinel_kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    sentinel_kwargs.setdefault("socket_timeout", COMMAND_TIMEOUT)
    sentinel_class: Any = Sentinel
    pool_class: Any = SentinelConnectionPool
    sentinel = sentinel_class([tuple(s) for s in sentinels], sentinel_kwargs=sentinel_kwargs)
    options.setdefault("connection_class", GeventSentinelConnection)
    pool: redis.ConnectionPool = pool_class(master_name, sentinel, **options)
    return pool
