"""Limits per connection, user and IP: connections, handshakes/s, inbound messages and bytes/s.

One abusive client (or one user with many tabs, or one address opening
sockets in a loop) must not cost the others anything. The transport keeps
the per-connection frame budgets (control frames, message size); this
module adds the per-connection message rates and what spans connections,
per process. A connection's own rates are checked first and are lower than
its user's and its IP's, so one flooding connection is closed before it has
spent what the other connections of its user or of its NAT address need:

=============================  ====================  ====================================
Limit (``LimitOptions``)       Default               When it trips
=============================  ====================  ====================================
``connection_messages``        (500/s, 2500)         close 4429 (rate limited), final
``connection_bytes``           (8 MiB/s, 32 MiB)     close 4429
``max_connections_per_ip``     10,000                handshake / long-poll open / SSE: 429
``handshakes_per_ip``          (500/s, burst 2000)   HTTP 429 with ``Retry-After: 1``
``max_connections_per_user``   256                   the handshake is refused (HTTP 403)
``user_messages``              (1000/s, 5000)        close 4429 (rate limited), final
``user_bytes``                 (16 MiB/s, 64 MiB)    close 4429
``ip_messages``                (10,000/s, 50,000)    close 4429
``ip_bytes``                   (64 MiB/s, 256 MiB)   close 4429
``rate_limit_penalty``         10 s                  see below: HTTP 429 / 403
=============================  ====================  ====================================

After a connection is closed for its inbound rate (4429) or for a control
frame flood (1008), its user (or its address, for an anonymous connection)
may not open another for ``rate_limit_penalty`` seconds: an address gets
HTTP 429 with ``Retry-After`` (WebSocket, long-poll open, SSE), a user's
handshake is refused (403). A client that floods again within twice its
last penalty after it ended gets twice as long (up to 32 times
``rate_limit_penalty``). Without it a flooder that reconnects at once
gets a fresh burst on every connection (2,500 messages, echoed by the
consumer) and its neighbours pay for each one; wsbridge.js does not
reconnect after 4429 anyway. Keyed by user where there is one, so one
logged-in flooder behind a NAT address does not lock out the others.

Rates are token buckets ``(per second, burst)``: a client may send ``burst``
at once, then ``rate`` per second. The defaults are far above what a page
does, and leave room for many users behind one NAT address. A site behind a
proxy must make sure ``scope["client"]`` is the real peer (its proxy
settings), or every user shares one IP's budget. Counts are
per process: with N processes a client can reach N times a limit.
Every trip is counted per reason (``counters``) and logged at WARNING at
most once per ``WARN_INTERVAL`` with the running count.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .protocol.closecodes import CloseCode

__all__ = [
    "LimitOptions",
    "TokenBucket",
    "ConnectionRates",
    "Admission",
    "RATE_LIMITED",
    "counters",
    "configure",
    "current",
]

logger = logging.getLogger("wsbridge.limits")

#: Close code when a per-user or per-IP inbound rate trips (final for wsbridge.js).
RATE_LIMITED = CloseCode.RATE_LIMITED
#: Seconds between two WARNING lines of one reason.
WARN_INTERVAL = 10.0
#: Buckets kept per table; the least recently used go first (a bucket refills anyway).
MAX_TRACKED = 100_000
#: A penalty doubles for each flood soon after the last one ended, up to 2**5 times.
MAX_PENALTY_LEVEL = 5

#: Every reason a limit trips (the keys of :data:`counters`).
REASONS = (
    "connection_messages",
    "connection_bytes",
    "handshakes_per_ip",
    "connections_per_ip",
    "connections_per_user",
    "user_messages",
    "user_bytes",
    "ip_messages",
    "ip_bytes",
    "penalised",
)
counters: dict[str, int] = {}
_warned: dict[str, float] = {}


def _trip(reason: str, detail: str) -> None:
    count = counters.get(reason, 0) + 1
    counters[reason] = count
    now = time.monotonic()
    if now - _warned.get(reason, -WARN_INTERVAL) >= WARN_INTERVAL:
        _warned[reason] = now
        logger.warning(
            "%s: %s (%d so far; at most one line per %gs)", reason, detail, count, WARN_INTERVAL
        )


Rate = tuple[float, float]  # (per second, burst)


@dataclass(frozen=True)
class LimitOptions:
    """``wrap(app, limits=LimitOptions(...))`` or ``WSBRIDGE["LIMITS"] = {...}``.

    None disables one limit. See the module docstring for what a client sees.
    """

    connection_messages: Rate | None = (500.0, 2500.0)
    connection_bytes: Rate | None = (8.0 * 2**20, 32.0 * 2**20)
    max_connections_per_ip: int | None = 10_000
    handshakes_per_ip: Rate | None = (500.0, 2000.0)
    max_connections_per_user: int | None = 256
    user_messages: Rate | None = (1000.0, 5000.0)
    user_bytes: Rate | None = (16.0 * 2**20, 64.0 * 2**20)
    ip_messages: Rate | None = (10_000.0, 50_000.0)
    ip_bytes: Rate | None = (64.0 * 2**20, 256.0 * 2**20)
    rate_limit_penalty: float | None = 10.0

    def __post_init__(self) -> None:
        if self.rate_limit_penalty is not None and not self.rate_limit_penalty > 0:
            raise ValueError(
                f"rate_limit_penalty must be seconds > 0 or None, not {self.rate_limit_penalty!r}"
            )
        for name in (
            "connection_messages",
            "connection_bytes",
            "handshakes_per_ip",
            "user_messages",
            "user_bytes",
            "ip_messages",
            "ip_bytes",
        ):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not (value[0] > 0 and value[1] >= 1)):
                raise ValueError(f"{name} must be (rate > 0 per second, burst >= 1), not {value!r}")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; :meth:`take` spends them."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, amount: float = 1.0, now: float | None = None) -> bool:
        """Spend ``amount`` if there is that much; False (nothing spent) otherwise."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class ConnectionRates:
    """One connection's own inbound buckets (messages and bytes per second)."""

    __slots__ = ("messages", "bytes")

    def __init__(self, messages: Rate | None, nbytes: Rate | None) -> None:
        self.messages = TokenBucket(*messages) if messages else None
        self.bytes = TokenBucket(*nbytes) if nbytes else None

    def take(self, nbytes: int, now: float) -> str | None:
        """Spend one message of ``nbytes``; None if within the rates, else the limit's name."""
        if self.messages is not None and not self.messages.take(1.0, now):
            return "connection_messages"
        if self.bytes is not None and not self.bytes.take(float(nbytes), now):
            return "connection_bytes"
        return None


class _Buckets:
    """One bucket per key (an IP, a user), least recently used dropped past MAX_TRACKED."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.table: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, amount: float, now: float) -> bool:
        bucket = self.table.get(key)
        if bucket is None:
            bucket = self.table[key] = TokenBucket(*self.rate)
            if len(self.table) > MAX_TRACKED:
                self.table.popitem(last=False)
        else:
            self.table.move_to_end(key)
        return bucket.take(amount, now)


class Admission:
    """This process's counts and buckets for one :class:`LimitOptions`."""

    def __init__(self, options: LimitOptions | None = None) -> None:
        self.options = options or LimitOptions()
        opts = self.options
        self.per_ip: dict[str, int] = {}
        self.per_user: dict[str, int] = {}
        self._handshakes = _Buckets(opts.handshakes_per_ip) if opts.handshakes_per_ip else None
        self._tables = {
            "user_messages": _Buckets(opts.user_messages) if opts.user_messages else None,
            "user_bytes": _Buckets(opts.user_bytes) if opts.user_bytes else None,
            "ip_messages": _Buckets(opts.ip_messages) if opts.ip_messages else None,
            "ip_bytes": _Buckets(opts.ip_bytes) if opts.ip_bytes else None,
        }
        #: "ip:<addr>" / "user:<id>" -> (monotonic time its penalty ends, level).
        self._penalties: OrderedDict[str, tuple[float, int]] = OrderedDict()

    # -- penalties ----------------------------------------------------------------------

    def penalise(self, ip: str, user: str | None) -> None:
        """A connection of ``user`` (or from ``ip``, if anonymous) was closed for flooding."""
        penalty = self.options.rate_limit_penalty
        if penalty is None:
            return
        key = f"user:{user}" if user else f"ip:{ip}"
        now = time.monotonic()
        level = 0
        previous = self._penalties.get(key)
        if previous is not None:
            until, last = previous
            if now - until < penalty * 2**last:  # flooded again soon after: twice as long
                level = min(last + 1, MAX_PENALTY_LEVEL)
        self._penalties[key] = (now + penalty * 2**level, level)
        self._penalties.move_to_end(key)
        if len(self._penalties) > MAX_TRACKED:
            self._penalties.popitem(last=False)

    def penalty_left(self, key: str) -> float:
        """Seconds left of ``key``'s penalty ("ip:<addr>" or "user:<id>"), 0.0 if none."""
        entry = self._penalties.get(key)
        if entry is None:
            return 0.0
        # An ended penalty is kept (its level doubles the next one if the client
        # floods again soon); the table is bounded by MAX_TRACKED.
        return max(0.0, entry[0] - time.monotonic())

    def retry_after(self, ip: str) -> int:
        """The ``Retry-After`` seconds for a refused handshake from ``ip`` (at least 1)."""
        return max(1, math.ceil(self.penalty_left(f"ip:{ip}")))

    # -- opening --------------------------------------------------------------------

    def admit(self, ip: str, transport: str) -> str | None:
        """Count a new connection from ``ip``; None if admitted, else the refusal reason.

        An admitted connection must call :meth:`release` with the same ``ip`` when over.
        """
        opts = self.options
        if self._penalties and self.penalty_left(f"ip:{ip}"):
            _trip("penalised", f"{transport} from {ip}, closed for flooding lately: answered 429")
            return "this address was closed for flooding lately"
        if self._handshakes is not None and not self._handshakes.take(ip, 1.0, time.monotonic()):
            _trip("handshakes_per_ip", f"{transport} from {ip}: answered 429")
            return "too many handshakes from this address"
        count = self.per_ip.get(ip, 0)
        if opts.max_connections_per_ip is not None and count >= opts.max_connections_per_ip:
            _trip("connections_per_ip", f"{transport} from {ip} has {count} open: answered 429")
            return "too many connections from this address"
        self.per_ip[ip] = count + 1
        return None

    def release(self, ip: str) -> None:
        """A connection admitted by :meth:`admit` is over."""
        count = self.per_ip.get(ip, 0) - 1
        if count > 0:
            self.per_ip[ip] = count
        else:
            self.per_ip.pop(ip, None)

    def admit_user(self, user: str) -> bool:
        """Count a connection of ``user`` (at accept); False when at its limit."""
        if self._penalties and self.penalty_left(f"user:{user}"):
            _trip("penalised", f"user {user}, closed for flooding lately: refused")
            return False
        limit = self.options.max_connections_per_user
        count = self.per_user.get(user, 0)
        if limit is not None and count >= limit:
            _trip("connections_per_user", f"user {user} has {count} open: refused")
            return False
        self.per_user[user] = count + 1
        return True

    def release_user(self, user: str) -> None:
        count = self.per_user.get(user, 0) - 1
        if count > 0:
            self.per_user[user] = count
        else:
            self.per_user.pop(user, None)

    # -- inbound ----------------------------------------------------------------------

    def connection_rates(self) -> ConnectionRates | None:
        """New buckets for one connection (None when both per-connection rates are off)."""
        opts = self.options
        if not (opts.connection_messages or opts.connection_bytes):
            return None
        return ConnectionRates(opts.connection_messages, opts.connection_bytes)

    def inbound(
        self, ip: str, user: str | None, nbytes: int, own: ConnectionRates | None = None
    ) -> str | None:
        """Spend one message of ``nbytes``; None if within the rates, else the reason.

        ``own`` (from :meth:`connection_rates`) is checked first, so a flooding
        connection trips its own limit before its user's or its IP's.
        """
        now = time.monotonic()
        if own is not None:
            name = own.take(nbytes, now)
            if name is not None:
                _trip(name, f"{ip}: closing with {RATE_LIMITED}")
                return name.replace("_", " ") + " per second over the limit"
        tables = self._tables
        checks: list[tuple[str, str, float]] = []
        if user is not None:
            checks += [("user_messages", user, 1.0), ("user_bytes", user, float(nbytes))]
        checks += [("ip_messages", ip, 1.0), ("ip_bytes", ip, float(nbytes))]
        for name, key, amount in checks:
            table = tables[name]
            if table is not None and not table.take(key, amount, now):
                _trip(
                    name,
                    f"{'user ' + key if name.startswith('user') else key}: "
                    f"closing with {RATE_LIMITED}",
                )
                return name.replace("_", " ") + " per second over the limit"
        return None

    def status(self) -> dict[str, Any]:
        """Open connections per IP and user (the top 10) and trips per reason, for status."""
        top = sorted(self.per_ip.items(), key=lambda kv: -kv[1])[:10]
        users = sorted(self.per_user.items(), key=lambda kv: -kv[1])[:10]
        return {
            "connections_by_ip": dict(top),
            "connections_by_user": dict(users),
            "tripped": dict(counters),
        }


_current: list[Admission] = [Admission()]


def configure(options: LimitOptions | dict[str, Any] | None) -> Admission:
    """Make ``options`` this process's limits (``wrap(limits=...)`` calls it)."""
    if isinstance(options, dict):
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
        }
        options = LimitOptions(**fields)
    _current[0] = Admission(options)
    return _current[0]


def current() -> Admission:
    """This process's :class:`Admission`."""
    return _current[0]


def client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client") or ("?", 0)
    return str(client[0])


class InboundGuard:
    """One connection's inbound limits: its own rates first, then its user's and its IP's.

    The transport keeps the frame budgets (control frames, sizes); this
    counts messages and bytes. Built by the connection runner.
    """

    __slots__ = ("ip", "_own", "_tripped")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.ip = client_ip(scope)
        self._own = current().connection_rates()
        self._tripped = False

    def check(self, event: dict[str, Any], user: str | None) -> str | None:
        """Spend one ``websocket.receive`` event; None if within the rates.

        Otherwise the message is dropped (counted in :mod:`wsbridge.drops`) and
        the result is the reason to close with :data:`RATE_LIMITED` the first
        time, ``""`` after (the close is already on its way).
        """
        payload = event.get("text")
        size = len(payload) if payload is not None else len(event.get("bytes") or b"")
        reason = current().inbound(self.ip, user, size, self._own)
        if reason is None:
            return None
        from .drops import record_drop

        record_drop("rate_limited", detail=f"{reason} ({self.ip})")
        if self._tripped:
            return ""
        self._tripped = True
        penalise_flooder(self.ip, user)
        return reason


def penalise_flooder(ip: str, user: Any) -> None:
    """A connection from ``ip`` of ``user`` (``scope["wsbridge.user_id"]``) was closed for flooding.

    Its user (or its address, when anonymous) may not open another for
    ``rate_limit_penalty`` seconds; see the module docstring.
    """
    from .identity import _safe  # the key admit_user() counts the user under

    current().penalise(ip, _safe(str(user)) if user is not None else None)
