"""A UDP datagram listener that feeds consumers through the channel layer.

Anything that can call ``layer.group_send`` or ``layer.send`` is an event
source for wsbridge consumers; this one turns datagrams of the form
``<topic> <text>`` (UTF-8) into group messages::

    echo -n "alerts disk almost full" | nc -u -w0 127.0.0.1 9999
    # -> group "udp.alerts" gets {"type": "udp.datagram", "topic": "alerts",
    #                              "text": "disk almost full", "sender": [host, port]}

A consumer in that group handles it in ``udp_datagram(self, event)``. The
listener runs in the serving process (``app.py`` starts it), or as its own
process next to any number of servers when the layer is Redis::

    python -m examples.event_sources.udp --port 9999 --layer redis://127.0.0.1:6379/0

Bad datagrams (not UTF-8, no topic, a topic that is not a valid group name,
too long) are counted in ``dropped`` and logged at debug level; they never
stop the listener. A group whose members are full skips them (at-most-once,
as every group send).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from typing import Any

from gevent.server import DatagramServer

from wsbridge.exceptions import LayerError
from wsbridge.layers.base import BaseChannelLayer

__all__ = ["DatagramSource", "parse_datagram", "MAX_DATAGRAM"]

logger = logging.getLogger("examples.event_sources.udp")

#: Longest datagram accepted, in bytes (larger ones are dropped, not truncated).
MAX_DATAGRAM = 8192
_TOPIC = re.compile(r"[a-zA-Z0-9_-]{1,50}\Z")

#: ``(datagram, sender) -> (group, message)``, or None to drop it.
Mapper = Callable[[bytes, tuple[str, int]], "tuple[str, dict[str, Any]] | None"]


def parse_datagram(data: bytes, sender: tuple[str, int]) -> tuple[str, dict[str, Any]] | None:
    """Map ``b"<topic> <text>"`` to ``("udp.<topic>", message)``; None for a bad datagram."""
    if len(data) > MAX_DATAGRAM:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    topic, _, body = text.strip().partition(" ")
    if not _TOPIC.match(topic):
        return None
    message = {"type": "udp.datagram", "topic": topic, "text": body, "sender": list(sender[:2])}
    return f"udp.{topic}", message


class DatagramSource(DatagramServer):
    """Listens for UDP datagrams and sends each one to a group through ``layer``.

    Args:
        address: where to listen, e.g. ``("127.0.0.1", 9999)`` (port 0: any free
            one; read ``server_port`` after ``start()``).
        layer: the channel layer the consumers use.
        mapper: turns a datagram into ``(group, message)``; the default is
            :func:`parse_datagram`.

    Call ``start()`` (or ``serve_forever()``), and ``stop()`` at the end.
    """

    def __init__(
        self,
        address: tuple[str, int],
        layer: BaseChannelLayer,
        mapper: Mapper = parse_datagram,
    ) -> None:
        super().__init__(address)
        self.layer = layer
        self.mapper = mapper
        self.delivered = 0
        self.dropped = 0

    def do_read(self) -> tuple[bytes, tuple[str, int]] | None:
        # gevent reads 8192 bytes and silently truncates longer datagrams;
        # reading one byte more than the limit shows an oversized datagram as
        # such, so it is refused instead of delivered cut short.
        try:
            return self._socket.recvfrom(MAX_DATAGRAM + 1)
        except BlockingIOError:
            return None

    def handle(self, data: bytes, address: tuple[str, int]) -> None:
        # Runs in its own greenlet per datagram; must never raise for bad input.
        mapped = self.mapper(data, address)
        if mapped is None:
            self.dropped += 1
            logger.debug("dropped a bad datagram of %d bytes from %s", len(data), address)
            return
        group, message = mapped
        try:
            self.layer.group_send(group, message)
        except (LayerError, ValueError, TypeError) as exc:
            self.dropped += 1
            logger.warning("datagram for %s not delivered: %s", group, exc)
            return
        self.delivered += 1


def main(argv: list[str] | None = None) -> None:
    """Run the listener alone (for a Redis layer shared with the servers)."""
    from gevent import monkey

    monkey.patch_all()
    from wsbridge.worker import layer_from_option

    parser = argparse.ArgumentParser(description="UDP datagrams -> wsbridge groups")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--layer", default=None, help="memory, a redis:// URL, or module:attr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    source = DatagramSource((args.host, args.port), layer_from_option(args.layer))
    source.start()
    logger.info("listening for datagrams on udp://%s:%d", args.host, source.server_port)
    source.serve_forever()


if __name__ == "__main__":
    main()
