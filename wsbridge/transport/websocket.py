"""WebSocket over gevent: the ``websockets`` sans-I/O ServerProtocol on a socket.

:class:`websockets.server.ServerProtocol` parses every frame (masking,
fragmentation rules, control frames, close codes, permessage-deflate, the
size limit) and writes every frame but one kind: a data frame on a
connection without extensions is a header and the payload (RFC 6455
section 5.2, :mod:`.wsframes`), written here while the protocol is OPEN and
has nothing of its own waiting. Sending a data frame changes no protocol
state, so the two stay consistent; control frames and the closing handshake
always go through the protocol. This module moves bytes between the
protocol and a gevent socket and turns frames into consumer events.

The read loop feeds the protocol at most ``_FEED_SLICE`` bytes at a time
and yields to the hub after a bounded amount of work
(:class:`~wsbridge.transport.limits.InboundBudget`), whatever the frames
are: control frames never pass through the consumer's mailbox (whose
backpressure paces data messages), so without this a PONG flood would keep
the reader running and freeze every other connection of the process.

One connection costs one greenlet: the WSGI request greenlet that handed
the socket over becomes the reader. A write with nothing queued before it
goes straight to the kernel (a non-blocking ``send``); what the kernel does
not take goes to a bounded outbound queue drained by a writer greenlet that
exists only while bytes are waiting. Keepalive pings and the closing
timeout are hub timers, not greenlets.

The protocol object is only touched under the transport's lock and no
application code ever runs under it (STYLE rule 2): the reader feeds data,
collects events and queues writes under the lock, then releases it before
pushing messages into the consumer's mailbox.

The modules: this one serves a handed-over socket (:func:`serve_websocket`)
and re-exports the public names; :mod:`.ws_connection` is the transport
(:class:`WebSocketTransport`: read loop, handshake flow, timers, the
consumer's outputs), :mod:`.ws_handshake` the opening handshake's pieces,
:mod:`.ws_outbound` the way out, :mod:`.ws_messages` message assembly. What
the consumer decides arrives as connection-contract outputs
(:mod:`wsbridge.protocol.connection`), which also choose the HTTP status of
a refused handshake: 403, 500 after a crash, 503 on shutdown.

Close codes chosen by wsbridge (RFC 6455 section 7.4.1), all
:class:`~wsbridge.protocol.closecodes.CloseCode` members:

* 1009 message too big (``max_message_size``, checked while reading and after
  decompression), 1007 invalid UTF-8 in a text message, 1002 protocol error;
* 1011 keepalive ping not answered within ``ping_timeout``, or the consumer
  crashed;
* :data:`SLOW_CLIENT_CLOSE_CODE` (1013, try again later) when a client does
  not read and its outbound queue passes ``max_outbound_bytes``: what was
  queued is dropped (but the frame being written), the close frame is
  written with a ``slow_close_timeout`` deadline, then the socket is
  aborted (RST), so memory never grows without bound;
* ``CONTROL_FLOOD_CLOSE_CODE`` (1008, policy violation) when a client
  sends PING/PONG frames faster than ``control_frame_rate``;
* 1001 going away when the server shuts down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import metrics as _metrics
from ..consumers.runner import Connection
from ..layers.base import BaseChannelLayer
from ..logs import CONNECTION_ID, new_connection_id
from ..policies import active as policies_active
from ..protocol.closecodes import CloseCode
from .ws_connection import WebSocketTransport, active_connections, close_all
from .wsoptions import GOING_AWAY, SLOW_CLIENT_CLOSE_CODE, Handover, WebSocketOptions

__all__ = [
    "WebSocketOptions",
    "Handover",
    "WebSocketTransport",
    "serve_websocket",
    "active_connections",
    "close_all",
    "SLOW_CLIENT_CLOSE_CODE",
    "GOING_AWAY",
]


@dataclass
class _Outcome:
    status: int
    bytes_sent: int
    transport: WebSocketTransport | None = field(default=None, repr=False)


def serve_websocket(
    handover: Handover,
    environ: dict[str, Any],
    scope: dict[str, Any],
    consumer_class: Any,
    *,
    layer: BaseChannelLayer | None,
    options: WebSocketOptions,
) -> _Outcome:
    """Run one WebSocket connection on a handed-over socket until it is over.

    Validates the handshake (answering 400/405/426 as websockets decides),
    lets the consumer accept (101), refuse (403) or fail (500), then reads
    frames into the consumer's mailbox until the connection closes.

    Returns:
        The handshake status and bytes written, for the server's access log.
    """
    context = CONNECTION_ID.set(new_connection_id())  # on every log record of this connection
    try:
        return _serve(handover, environ, scope, consumer_class, layer, options)
    finally:
        CONNECTION_ID.reset(context)


def _serve(
    handover: Handover,
    environ: dict[str, Any],
    scope: dict[str, Any],
    consumer_class: Any,
    layer: BaseChannelLayer | None,
    options: WebSocketOptions,
) -> _Outcome:
    transport = WebSocketTransport(handover.sock, scope, options, upgraded=handover.upgraded)

    def start() -> Connection:
        conn = Connection(
            scope,
            consumer_class,
            layer,
            outputs=transport.consumer_output,
            messages=transport.send_message,
        )
        if policies_active():
            conn.set_backlog(lambda: transport.out.pending_bytes, options.max_outbound_bytes // 2)
        return conn

    if handover.upgraded:  # the server (gevent-websocket) already answered 101
        transport.conn = start()
        transport.conn.push({"type": "websocket.connect"})
        _metrics.record_handshake("accepted")
        opened = True
    else:
        opened = transport.handshake(environ, start)
    if opened:
        transport.run(handover.preread)
    else:
        transport.finish_rejected()
        if transport.conn is not None:
            transport.conn.disconnected(CloseCode.ABNORMAL)  # harmless if the runner knows
    return _Outcome(transport.status, transport.bytes_sent, transport)
