"""The long-poll transport's settings (``wrap(app, longpoll={...})``) and their defaults."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import origin as _origins

__all__ = ["LongPollOptions", "UserKey", "default_user_key", "origin_allowed"]

UserKey = Callable[[dict[str, Any]], str]


def default_user_key(scope: dict[str, Any]) -> str:
    """The user a token is bound to: ``scope["user"]``'s pk (or id, or str), "" for none."""
    user = scope.get("user")
    if user is None or getattr(user, "is_authenticated", True) is False:
        return ""
    if isinstance(user, (str, int)):
        return str(user)
    for attr in ("pk", "id"):
        value = getattr(user, attr, None)
        if value is not None:
            return str(value)
    return ""


def origin_allowed(origin: str, host: str, allowed: Iterable[str]) -> bool:
    """Same host as the request, or listed in ``allowed``: :mod:`wsbridge.transport.origin`'s rule.

    Kept for its 0.1 import path and argument order; the patterns are those
    of :func:`wsbridge.transport.origin.origin_allowed`. A request without
    Origin (not from a browser, or an empty header) is allowed: the token
    binding still applies to it.
    """
    return _origins.origin_allowed(origin or None, tuple(allowed), host=host or None)


@dataclass
class LongPollOptions:
    """Settings of the long-poll transport (``wrap(app, longpoll={...})``).

    Attributes:
        prefix: URL prefix of the endpoints.
        poll_timeout: seconds a poll is held when nothing is waiting.
        batch_wait: seconds at most a held poll, once a message came for it,
            waits for the server to have nothing else to run before it
            answers, so that the messages of one burst (a broadcast of
            several, sent by a loop) go in one answer instead of one answer
            each; an idle server answers at once. 0 answers at once always.
        session_timeout: seconds of silence before a session expires.
        handshake_timeout: seconds the consumer has to accept an open.
        max_body: request body limit in bytes (413 beyond, and the connection
            is closed without reading the rest).
        body_timeout: seconds a request body may take to arrive (408 beyond,
            and the connection is closed).
        max_buffer: unacked frames held per session; past it the session
            closes with 1013.
        max_buffer_bytes: the same limit in bytes.
        allowed_origins: cross-origin pages allowed (besides the same host).
        secret: token key; ``WSBRIDGE_SECRET`` or a per-process random one
            (with a warning when the layer is shared) when unset.
        forward_timeout: seconds to wait for another process holding a session.
        user_key: scope -> the user id a token is bound to.
        handoff: on shutdown, hand sessions over to the process that sees
            their next request instead of closing them; None (the default)
            does so when the layer is shared across processes (its
            ``extensions`` has ``"shared"``: not the in-memory layer).
        checkpoints: keep each session's state in the layer so that another
            process adopts it when this one crashes (``kill -9``, OOM), not
            only on a graceful hand-off. None (the default) does so when the
            layer has ``"checkpoints"`` (the Redis layer with its process
            leases on) and sessions move (``handoff``); True insists
            (``ConfigurationError`` without the capability); False turns it
            off (a crash then loses the sessions: 404). Costs one batched
            layer write per request that changed a session
            (docs/topics/protocol.rst, "Crashes").
    """

    prefix: str = "/_wsbridge/lp"
    poll_timeout: float = 25.0
    batch_wait: float = 0.5
    session_timeout: float = 60.0
    handshake_timeout: float = 10.0
    max_body: int = 1 << 20
    body_timeout: float = 10.0
    max_buffer: int = 1000
    max_buffer_bytes: int = 4 << 20
    allowed_origins: tuple[str, ...] = ()
    secret: str | bytes | None = None
    forward_timeout: float = 5.0
    user_key: UserKey = default_user_key
    handoff: bool | None = None
    checkpoints: bool | None = None
