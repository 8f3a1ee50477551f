"""Channels 1.x routing entries: ``route()``, ``route_class()`` and content filters.

A 1.x routing list (``channel_routing = [route("websocket.receive", ws_message,
path=r"^/chat/$"), ...]``) becomes registrations on a :class:`~wsbridge.consumers.routing.Router`:
socket events register function consumers (as ``Router.on``), other names background
channels (as ``Router.channel``), and keyword filters choose among a channel's consumers
by the message's content (:class:`ContentFilter`). Every name here is also importable
from :mod:`wsbridge.consumers.routing`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import RoutingError
from .routing import WEBSOCKET_EVENTS, Route, Router, describe

__all__ = ["Registration", "ContentFilter", "route", "route_class"]

logger = logging.getLogger("wsbridge.consumers")


@dataclass
class Registration:
    """A Channels 1.x ``route()`` entry: applied to the Router it is listed in."""

    channel: str
    consumer: Callable[..., Any]
    path: str | None
    filters: dict[str, str] = field(default_factory=dict)

    def apply(self, target: Router) -> None:
        if self.channel in WEBSOCKET_EVENTS:
            target.on(self.channel, path=self.path)(self.consumer)
        elif self.channel.startswith(("http.", "websocket.")):
            raise RoutingError(
                f"route({self.channel!r}, ...): wsbridge routes websocket.connect/receive/"
                "disconnect and background channels; plain HTTP stays with the WSGI app "
                "(or use @router.http)"
            )
        else:
            if self.path is not None:
                raise RoutingError(f"route({self.channel!r}): a background channel has no path")
            if not self.filters:
                target.channel(self.channel)(self.consumer)
                return
            existing = target._channels.get(self.channel)
            if existing is None:
                existing = ContentFilter(self.channel)
                target.channel(self.channel)(existing)
            elif not isinstance(existing, ContentFilter):
                raise RoutingError(
                    f"route({self.channel!r}, ..., {', '.join(self.filters)}=...): the channel "
                    f"already has an unfiltered consumer, {describe(existing)}"
                )
            existing.add(self.filters, self.consumer)


class ContentFilter:
    """The consumers of one background channel, chosen by Channels 1.x route filters.

    ``route("chat.receive", chat_join, command="^join$")``: the first route
    whose regexes all match (``re.match``) the message's content keys runs;
    named groups become keyword arguments, as in 1.x. A message no route
    matches is dropped with a WARNING (at most one a minute, with a count).
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.__name__ = self.__qualname__ = f"ContentFilter[{channel}]"
        self.routes: list[tuple[dict[str, re.Pattern[str]], Callable[..., Any]]] = []
        self._unmatched = 0
        self._last_warning = -_UNMATCHED_INTERVAL

    def add(self, filters: Mapping[str, str], consumer: Callable[..., Any]) -> None:
        try:
            compiled = {key: re.compile(regex) for key, regex in filters.items()}
        except re.error as exc:
            raise RoutingError(f"route({self.channel!r}): bad filter regex: {exc}") from None
        self.routes.append((compiled, consumer))

    def __call__(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        content = getattr(message, "content", message)
        for filters, consumer in self.routes:
            captured: dict[str, Any] = {}
            for key, regex in filters.items():
                value = content.get(key)
                found = regex.match(value) if isinstance(value, str) else None
                if found is None:
                    break
                captured.update(found.groupdict())
            else:
                return consumer(message, *args, **{**captured, **kwargs})
        self._warn_unmatched(content)
        return None

    def _warn_unmatched(self, content: Mapping[str, Any]) -> None:
        import time

        self._unmatched += 1
        now = time.monotonic()
        if now - self._last_warning < _UNMATCHED_INTERVAL:
            return
        self._last_warning = now
        logger.warning(
            "dropped a message on %r: no route filter matched (keys %s; %d unmatched so far); "
            "check the route(..., key=regex) entries of this channel",
            self.channel,
            sorted(content),
            self._unmatched,
        )


_UNMATCHED_INTERVAL = 60.0


def route(
    channel: str, consumer: Callable[..., Any] | str, path: str | None = None, **filters: str
) -> Any:
    """Channels 1.x ``route(channel, consumer, path=regex, **filters)``.

    ``websocket.connect`` / ``receive`` / ``disconnect`` register a function
    consumer (as :meth:`~wsbridge.consumers.routing.Router.on`), matched by
    ``path``; any other name registers a background channel (as
    :meth:`~wsbridge.consumers.routing.Router.channel`), where other
    keyword filters choose among several consumers by the message's content
    (``command="^join$"``, see ``ContentFilter``). ``consumer`` is the
    function or its dotted path (``"chat.consumers.ws_connect"``, imported
    now, as 1.x did).
    """
    if isinstance(consumer, str):
        from .loading import import_target

        consumer = import_target(consumer)
    if filters and channel.startswith(("websocket.", "http.")):
        raise RoutingError(
            f"route({channel!r}): unsupported filters {sorted(filters)}; socket events are "
            "routed by path (filter inside the consumer on message.content)"
        )
    if not callable(consumer):
        raise RoutingError(f"route({channel!r}) needs a function, got {consumer!r}")
    return Registration(channel, consumer, path, dict(filters))


def route_class(consumer_class: Any, path: str | None = None) -> Route:
    """Channels 1.x ``route_class(Consumer, path=regex)``: a WebSocket class consumer.

    ``consumer_class`` may be its dotted path (``"chat.consumers.Chat"``).
    """
    if isinstance(consumer_class, str):
        from .loading import import_target

        consumer_class = import_target(consumer_class, "consumer class")
    route_ = Route(path if path is not None else ".*", consumer_class, is_regex=True)
    route_.fallback = path is None
    return route_
