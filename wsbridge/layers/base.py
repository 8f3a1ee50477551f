"""The channel layer contract every backend implements, and its shared rules.

A channel layer carries messages (msgpack-typed dicts) to named *channels*
and to *groups* of channels. The contract follows Django Channels'
``channel_layer_spec`` with synchronous calls, plus two extensions that
wsbridge's servers rely on:

* ``attach(channel, callback)`` / ``detach(channel)``: push delivery of a
  process-specific channel (``specific.<process>!<connection>``) straight
  into a connection's mailbox, so no greenlet per connection waits in
  ``receive``;
* ``send(..., delay=seconds)``: deliver later.

See docs/topics/layers.rst for the written contract. The conformance suite
in ``tests/layers/conformance.py`` is what every backend must pass.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import secrets
import sys
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from re import Pattern
from typing import Any

from ..exceptions import InvalidChannelName

__all__ = [
    "BaseChannelLayer",
    "Message",
    "MAX_NAME_LENGTH",
    "validate_channel_name",
    "validate_group_name",
    "validate_message",
    "CapacityTable",
]

Message = dict[str, Any]
Callback = Callable[[Message], None]

#: Longest channel or group name accepted (Channels' rule).
MAX_NAME_LENGTH = 100

_CHANNEL_RE = re.compile(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?\Z")
_GROUP_RE = re.compile(r"^[a-zA-Z\d\-_.]+\Z")
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _check_name(name: object, kind: str, pattern: Pattern[str]) -> str:
    if not isinstance(name, str):
        raise InvalidChannelName(f"{kind} name must be a str, not {type(name).__name__}")
    if not name or len(name) >= MAX_NAME_LENGTH:
        raise InvalidChannelName(
            f"{kind} name must be 1 to {MAX_NAME_LENGTH - 1} characters long, got {len(name)}"
        )
    if not pattern.match(name):
        allowed = "ASCII letters, digits, '-', '_' and '.'"
        if kind == "channel":
            allowed += ", with at most one '!' for process-specific channels"
        raise InvalidChannelName(f"{kind} name {name!r} is invalid: use only {allowed}")
    return name


def validate_channel_name(name: object, *, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``InvalidChannelName``.

    With ``receive=True`` the name must also be receivable: a process-specific
    name must end right after its ``!`` or carry a connection part.
    """
    return _check_name(name, "channel", _CHANNEL_RE)


def validate_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``InvalidChannelName``."""
    return _check_name(name, "group", _GROUP_RE)


def validate_message(message: object) -> Message:
    """Check that ``message`` holds msgpack types only and return a private copy.

    The copy converts tuples to lists (as msgpack would), so a message looks
    the same whichever layer carried it, and later changes by the sender do
    not reach receivers.

    Raises:
        TypeError: naming the offending key path, for anything that is not a
            dict with str keys at the top, or holds a value that is not a
            dict, list, str, bytes, int, float, bool or None.
    """
    if not isinstance(message, dict):
        raise TypeError(f"a message must be a dict, not {type(message).__name__}")
    copy: Message = _copy_value(message, "message")
    return copy


def _copy_value(value: object, where: str) -> Any:
    # bool is an int subclass; both are fine. Exact type checks keep out
    # subclasses such as enums that would not survive a round trip.
    kind = type(value)
    if value is None or kind in (str, bytes, bool, float):
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            raise TypeError(f"{where}: integer {value} is out of msgpack's 64-bit range")
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise TypeError(
                    f"{where}: key {key!r} is a {type(key).__name__}; message keys must be str"
                )
            out[key] = _copy_value(item, f"{where}[{key!r}]")
        return out
    if kind is list or kind is tuple:
        items: list[Any] | tuple[Any, ...] = value  # type: ignore[assignment]
        return [_copy_value(item, f"{where}[{i}]") for i, item in enumerate(items)]
    if kind is bytearray or kind is memoryview:
        return bytes(value)  # type: ignore[call-overload]
    raise TypeError(
        f"{where} is a {kind.__name__}, which is not a msgpack type; "
        "use dict, list, str, bytes, int, float, bool or None (convert it before sending)"
    )


class CapacityTable:
    """Capacity per channel: a default plus glob (or compiled regex) overrides.

    ``{"http.request": 200, "http.response!*": 10, re.compile(r"^tasks\\."): 1000}``;
    the first matching override wins, in the order given.
    """

    def __init__(self, default: int, overrides: Mapping[str | Pattern[str], int] | None = None):
        if default < 1:
            raise ValueError("capacity must be at least 1")
        self.default = default
        self._rules: list[tuple[Pattern[str], int]] = []
        for pattern, capacity in (overrides or {}).items():
            if isinstance(pattern, str):
                pattern = re.compile(fnmatch.translate(pattern))
            self._rules.append((pattern, int(capacity)))
        self._cache: dict[str, int] = {}

    @property
    def has_overrides(self) -> bool:
        """True when some channel may have another capacity than the default."""
        return bool(self._rules)

    def __call__(self, channel: str) -> int:
        if not self._rules:  # the usual case: nothing to match (and no cache to fill)
            return self.default
        try:
            return self._cache[channel]
        except KeyError:
            pass
        value = self.default
        for pattern, capacity in self._rules:
            if pattern.match(channel):
                value = capacity
                break
        if len(self._cache) < 10_000:
            self._cache[channel] = value
        return value


#: The Channels layer API: methods Channels code wraps in ``async_to_sync``.
CHANNELS_API = (
    "send",
    "receive",
    "new_channel",
    "group_add",
    "group_discard",
    "group_send",
    "flush",
)

_ASGIREF_SYNC = os.path.join("asgiref", "sync.py")


def _tag_policy_groups(func: Callable[..., Any]) -> Callable[..., Any]:
    """``group_send`` that names the group in messages of groups with a slow-client policy."""
    from ..policies import tag

    @functools.wraps(func)
    def group_send(self: BaseChannelLayer, group: str, message: Message) -> int:
        skipped: int = func(
            self, group, tag(group, message) if isinstance(message, dict) else message
        )
        return skipped

    return group_send


def _refuse_asgiref(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a layer method so that asgiref's ``async_to_sync`` gets a clear error.

    asgiref calls the method, then awaits what it returned; a wsbridge method
    returns a plain value, and the user would see ``object NoneType can't be
    used in 'await' expression``. The direct caller is asgiref's own frame in
    that case (``AsyncToSync.__call__``, or ``main_wrap`` in older asgiref),
    so the check is one frame lookup, and the method does not run.
    """

    @functools.wraps(func)
    def method(self: BaseChannelLayer, *args: Any, **kwargs: Any) -> Any:
        # f_back is None when C code calls the method (a greenlet started on it).
        caller = sys._getframe().f_back
        if caller is not None and caller.f_code.co_filename.endswith(_ASGIREF_SYNC):
            raise TypeError(
                f"channel_layer.{func.__name__}() is synchronous in wsbridge, and asgiref's "
                "async_to_sync would await its result. Change the import to "
                "`from wsbridge import async_to_sync` (it calls the method directly), or drop "
                f"async_to_sync and call channel_layer.{func.__name__}(...) directly."
            )
        return func(self, *args, **kwargs)

    return method


class BaseChannelLayer(ABC):
    """What every channel layer offers. All methods are synchronous and greenlet-safe.

    ``extensions`` names the capabilities a layer has; callers ask for a
    name, never for a layer's type (docs/topics/layers.rst, "Capabilities"):

    * ``groups``, ``flush``, ``attach``, ``delay``: every layer (this contract);
    * ``marks``: ``claim`` / ``put_mark`` / ``get_mark``;
    * ``shared``: other processes see the same groups and channels;
    * ``handoff``: a long-poll session may move to another process (its
      state travels through the layer);
    * ``presence``: ``presence_track`` / ``presence`` (:mod:`.presence`);
    * ``history``: per-group history and recovery (:mod:`.history`);
    * ``at_least_once``: ``reserve`` / ``ack`` on named channels.

    Args:
        expiry: seconds a message waits in a channel before it is dropped.
        group_expiry: seconds a group membership lasts unless renewed by
            another ``group_add``.
        capacity: default number of messages a channel holds; a send beyond
            it raises ``ChannelFull``.
        channel_capacity: overrides per channel, keyed by glob or regex.
    """

    extensions: tuple[str, ...] = ("groups", "flush", "attach", "delay")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in CHANNELS_API:
            own = cls.__dict__.get(name)
            if callable(own) and not getattr(own, "__isabstractmethod__", False):
                if name == "group_send":
                    own = _tag_policy_groups(own)
                setattr(cls, name, _refuse_asgiref(own))

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[str | Pattern[str], int] | None = None,
    ) -> None:
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = capacity
        self.get_capacity = CapacityTable(capacity, channel_capacity)
        #: Identifies this process's layer instance in process-specific names.
        self.client_prefix = self._make_client_prefix()
        # A layer built before a fork (``gunicorn --preload`` imports the app
        # in the master) must not share its identity with its siblings: each
        # child takes a new one, or they would read one another's inbox.
        ref = weakref.ref(self)

        def renew_in_child() -> None:
            layer = ref()
            if layer is not None:
                layer._after_fork()

        os.register_at_fork(after_in_child=renew_in_child)

    @property
    def closed(self) -> bool:
        """True once ``close()`` ended a layer that cannot be used again (the Redis layer).

        ``get_channel_layer()`` then builds the process's layer afresh.
        """
        return bool(getattr(self, "_closed", False))

    @staticmethod
    def _make_client_prefix() -> str:
        return f"{os.getpid():x}{secrets.token_hex(6)}"

    def _after_fork(self) -> None:
        """Called in a forked child: take a new process identity.

        Subclasses that run background greenlets or hold per-process
        registrations extend this to drop what belonged to the parent.
        """
        self.client_prefix = self._make_client_prefix()

    # -- the contract ------------------------------------------------------

    @abstractmethod
    def send(self, channel: str, message: Message, *, delay: float | None = None) -> None:
        """Put ``message`` on ``channel``; raise ``ChannelFull`` at capacity.

        With ``delay`` the message is delivered that many seconds later
        (capacity is checked at delivery time then; a full channel drops it
        with a log line).
        """

    @abstractmethod
    def receive(self, channel: str, timeout: float | None = None) -> Message | None:
        """Take the next message from ``channel``, waiting up to ``timeout`` seconds.

        Returns None when the timeout passes with nothing to take. A
        process-specific channel attached with ``attach`` cannot be received.
        """

    @abstractmethod
    def new_channel(self, prefix: str = "specific") -> str:
        """Return a new, unguessable process-specific channel name to receive on."""

    @abstractmethod
    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership)."""

    @abstractmethod
    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error when it is not a member."""

    @abstractmethod
    def group_send(self, group: str, message: Message) -> int:
        """Send ``message`` to every member of ``group``.

        Members at capacity are skipped (at-most-once delivery); the number
        skipped is returned and counted in the layer's stats.
        """

    def group_channels(self, group: str) -> list[str]:
        """The live (unexpired) members of ``group``, for status pages and tests.

        Backends that cannot list members raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list group members")

    @abstractmethod
    def flush(self) -> None:
        """Drop every channel, group and message this layer holds (for tests)."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release connections and background greenlets."""

    # -- process-local push delivery ----------------------------------------

    @abstractmethod
    def attach(self, channel: str, callback: Callback) -> None:
        """Deliver messages for the process-specific ``channel`` by calling ``callback``.

        The callback runs in the layer's greenlet and must not block; it may
        raise ``ChannelFull`` to refuse a message (the sender then sees
        ``ChannelFull``, or the group send counts a skipped member).
        """

    @abstractmethod
    def detach(self, channel: str) -> None:
        """Stop push delivery for ``channel`` and forget anything queued for it."""

    # -- process heartbeats (wsbridge status) ---------------------------------

    def publish_process(self, name: str, info: Mapping[str, Any], ttl: float) -> None:
        """Publish one process's heartbeat ``info`` under ``name``; it vanishes after ``ttl`` s.

        The default keeps it in this process (all an unshared layer can do);
        a shared layer stores it where every process reads it
        (:mod:`wsbridge.heartbeat` calls this; ``wsbridge status`` reads
        :meth:`processes`).
        """
        table = self.__dict__.setdefault("_heartbeats", {})
        table[name] = (time.monotonic() + ttl, dict(info))

    def processes(self) -> list[dict[str, Any]]:
        """The heartbeats published and not yet expired, one dict per process."""
        table = self.__dict__.get("_heartbeats", {})
        now = time.monotonic()
        for name in [n for n, (until, _) in table.items() if until < now]:
            del table[name]
        return [info for _, info in table.values()]

    # -- helpers for subclasses --------------------------------------------

    def _new_channel_name(self, prefix: str) -> str:
        validate_group_name(prefix)  # same character rules, no '!'
        return f"{prefix}.{self.client_prefix}!{secrets.token_hex(12)}"

    def stats(self) -> dict[str, Any]:
        """Counters for ``wsbridge status`` (backend-specific keys)."""
        return {}

    # -- marks: small shared facts with a lifetime (extension "marks") ---------

    def claim(self, key: str, ttl: float) -> bool:
        """Set ``key`` unless it is already set; True when this call set it.

        Shared by every process on the layer (Redis: ``SET NX PX``), kept for
        ``ttl`` seconds. wsbridge uses it to spend a connect token's id once.
        """
        raise NotImplementedError(f"{type(self).__name__} has no marks")

    def put_mark(self, key: str, value: float, ttl: float) -> None:
        """Store a number under ``key`` for ``ttl`` seconds (last write wins)."""
        raise NotImplementedError(f"{type(self).__name__} has no marks")

    def get_mark(self, key: str) -> float | None:
        """The number stored under ``key``, or None when unset or expired."""
        raise NotImplementedError(f"{type(self).__name__} has no marks")
