"""What a connection leaves behind once it has ended (used by the runner's ``_finish``).

* :func:`leave_groups`: a consumer that crashed never ran its
  ``disconnect()``, so its channel leaves the groups it declared here, or
  group sends would keep aiming at it.
* :func:`send_after_close` and :func:`no_output`: what the runner puts in
  place of the transport's sinks and of the consumer's ``base_send`` once
  the connection contract is CLOSED (it gives no more outputs then). That
  leaves no reference cycle between transport, runner and consumer, so a
  connection's objects (about 50 for a WebSocket) are freed as soon as the
  last reference goes instead of waiting for a full pass of the cyclic
  collector (tests/consumers/test_release.py).
"""

from __future__ import annotations

import logging
from typing import Any

from .. import drops
from ..exceptions import LayerError
from ..layers.base import BaseChannelLayer

logger = logging.getLogger("wsbridge.consumers")


def leave_groups(consumer: Any, layer: BaseChannelLayer | None, channel_name: str | None) -> None:
    """Discard ``channel_name`` from ``consumer.groups`` (outages are the layer's to log)."""
    if layer is None or channel_name is None:
        return
    for group in getattr(consumer, "groups", None) or ():
        try:
            layer.group_discard(group, channel_name)
        except (LayerError, ValueError):
            logger.debug("could not discard %s from %r", channel_name, group)


def no_output(output: Any) -> None:
    """The transport's sink after the end: a CLOSED contract gives no outputs."""


def send_after_close(channel_name: str | None, event: dict[str, Any]) -> None:
    """The consumer's ``base_send`` after the end: a frame or a stream piece is lost, so counted."""
    if event.get("type") == "websocket.send" or event.get("body"):
        drops.record_drop("connection_closed", detail=f"{channel_name}")
