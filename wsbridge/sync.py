"""``async_to_sync`` and ``sync_to_async`` for code written for Channels 4.

Channels' sync consumers wrap every layer call in asgiref's adapters::

    async_to_sync(self.channel_layer.group_send)("chat", {"type": "chat.message"})

In wsbridge every layer method is already synchronous, so these two call
what they are given directly. Porting is a change of import, from
``asgiref.sync`` to ``wsbridge`` (or ``wsbridge.sync``); the calls stay.
Keeping asgiref's own ``async_to_sync`` around a wsbridge layer method
raises a ``TypeError`` that names this import.

Nothing here runs an event loop: a coroutine function has no place to run,
and is refused with a message saying what to do instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["async_to_sync", "sync_to_async"]


def _refuse_coroutine(func: object, name: str) -> None:
    target = getattr(func, "__func__", func)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - a callable object's async __call__
    ):
        raise TypeError(
            f"{name}({getattr(func, '__qualname__', func)!r}): wsbridge runs no event loop, "
            "so a coroutine function cannot run here. Make it a plain function (drop "
            "async/await) and call it directly."
        )
    if not callable(func):
        raise TypeError(f"{name}() takes a callable, not {type(func).__name__}")


def async_to_sync(
    awaitable: Callable[..., Any], force_new_loop: bool = False
) -> Callable[..., Any]:
    """Return ``awaitable`` itself: wsbridge's layer methods are already synchronous.

    ``async_to_sync(self.channel_layer.group_send)(group, event)`` then is
    ``self.channel_layer.group_send(group, event)``. ``force_new_loop`` is
    accepted for asgiref's signature and ignored.

    Raises:
        TypeError: ``awaitable`` is a coroutine function (``async def``):
            make it a plain function; there is no event loop to run it on.
    """
    _refuse_coroutine(awaitable, "async_to_sync")
    return awaitable


def sync_to_async(func: Any = None, *, thread_sensitive: bool = True, executor: Any = None) -> Any:
    """Return ``func`` itself (it runs in the calling greenlet, which is what gevent wants).

    Works as a call (``sync_to_async(f)(x)``) and as a decorator, bare or
    with asgiref's keywords (``@sync_to_async(thread_sensitive=False)``);
    ``thread_sensitive`` and ``executor`` are accepted and ignored.

    Raises:
        TypeError: ``func`` is a coroutine function.
    """
    if func is None:
        return lambda f: sync_to_async(f)
    _refuse_coroutine(func, "sync_to_async")
    return func
