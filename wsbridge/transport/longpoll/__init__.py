"""HTTP long-poll transport: WebSocket semantics over plain POST requests.

Four endpoints under a prefix (``/_wsbridge/lp`` by default) on the wrapped
app's own port; every request and answer is a JSON object::

    POST {prefix}/open   {"path": "/ws/chat/lobby/", "subprotocols": []}
                         -> {"token", "subprotocol", "poll_timeout", "session_timeout"}
    POST {prefix}/poll   {"token", "ack": n}  -> {"messages": [frame, ...]}
    POST {prefix}/send   {"token", "messages": [{"seq", "text"|"bytes"}]} -> {"ack": n}
    POST {prefix}/close  {"token", "code", "reason"} -> {"closed": true}

The consumer runs behind the same :class:`~wsbridge.consumers.runner.Connection`
as a WebSocket's, routed with ``router.resolve("websocket", path)``; only
``scope["transport"] == "longpoll"`` tells them apart. Session state is the
sans-I/O :class:`~wsbridge.protocol.longpoll.LongPollSession`; this package
adds the I/O: a poll parks its request greenlet until a frame is queued or
``poll_timeout`` passes; a second poll replaces the first, which is answered
409. A sweeper greenlet expires silent sessions (the consumer gets
``websocket.disconnect`` with 1006).

No sticky sessions: the token names the layer channel of the process that
holds the session (the *owner*). A request that reaches another process is
forwarded over the channel layer; graceful restarts keep sessions when the
layer is shared, by handing them to the next process that sees them. The
parts, one module each:

``transport``
    ``LongPollTransport``, the WSGI side: Origin, method, body, JSON.
``process``
    ``LongPollProcess``: the per-process state, built at once, which runs
    poll, send and close.
``sessions``
    the session table.
``consumer``
    each session's consumer: start it, apply what it emits, end it.
``relay``
    asks the process holding a session and returns a ``Result``
    (forwarded, moved, gone) for its caller to act on.
``handoff``
    hands sessions over on shutdown and adopts others'.
``options``
    :class:`LongPollOptions`.

The messages between processes are in
:mod:`wsbridge.protocol.longpoll_messages`; see ``docs/topics/protocol.rst``.
"""

from __future__ import annotations

from .options import LongPollOptions, default_user_key, origin_allowed
from .transport import LongPollTransport, endpoints

__all__ = [
    "LongPollTransport",
    "LongPollOptions",
    "origin_allowed",
    "default_user_key",
    "endpoints",
]
