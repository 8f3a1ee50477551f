"""Background channels: run ``@router.channel`` consumers for every message.

``Channel("thumbnails").send({"id": 42})`` from a view, a signal handler or
a script puts a message on the layer; a :class:`Worker` takes each message
off exactly once and runs the consumer registered for the channel in a
bounded pool of greenlets. It runs inside the serving process by default
(:func:`start_embedded`), or in separate ``wsbridge worker`` processes that
share a Redis layer with the servers::

    wsbridge worker --layer redis://127.0.0.1:6379/0 --consumers myapp.consumers \\
        --only-channels 'thumbnails.*' --concurrency 20

Delivery is at-most-once by default, like the rest of the layer: a
consumer that raises is logged with its traceback and the message is not
retried. Channels listed in ``at_least_once`` (``--at-least-once GLOBS``)
are reserved instead of taken, on a layer that can (``"at_least_once"`` in
``layer.extensions``: the Redis layer): the message is acknowledged when
the consumer returns or raises, and delivered again after
``visibility_timeout`` seconds if the worker died (or froze) holding it.
Consumers of those channels must be idempotent.
SIGTERM (or SIGINT) stops taking messages, finishes those in hand, then exits.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool

from .consumers.consumer import BaseConsumer
from .consumers.message import Message
from .consumers.routing import Router, build_router
from .exceptions import (
    ConfigurationError,
    ConsumerError,
    LayerError,
    StopConsumer,
    WSBridgeError,
)
from .layers import get_channel_layer
from .layers.base import BaseChannelLayer

__all__ = [
    "Worker",
    "start_embedded",
    "select_channels",
    "layer_from_option",
    "add_worker_arguments",
    "run_worker",
]

logger = logging.getLogger("wsbridge.worker")

DEFAULT_CONCURRENCY = 10
#: Seconds each channel's receive waits; bounds how long a stop takes to be noticed.
DEFAULT_POLL_TIMEOUT = 1.0


def select_channels(
    names: Iterable[str],
    only: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> list[str]:
    """Filter channel names with shell-style globs (``thumbnails.*``).

    Args:
        names: the registered background channels.
        only: keep names matching any of these (all names when empty or None).
        exclude: then drop names matching any of these.
    """
    only = [g for g in (only or ()) if g]
    exclude = [g for g in (exclude or ()) if g]
    chosen = []
    for name in names:
        if only and not any(fnmatch.fnmatchcase(name, g) for g in only):
            continue
        if any(fnmatch.fnmatchcase(name, g) for g in exclude):
            continue
        chosen.append(name)
    return chosen


def _no_client(event: dict[str, Any]) -> None:
    raise ConsumerError(
        "a background channel consumer has no client to send to; "
        "send with Channel(name).send(...) or the channel layer instead"
    )


class Worker:
    """Receives from background channels and runs their consumers, each message once.

    Args:
        layer: the channel layer to receive from (``None``: ``get_channel_layer()``).
        router: where ``@router.channel`` consumers are registered
            (``None``: ``wsbridge.router``).
        only_channels: globs; run only the channels matching one.
        exclude_channels: globs; skip the channels matching one.
        concurrency: greenlets running consumers at once.
        poll_timeout: seconds each receive waits before checking for a stop.
        at_least_once: globs; channels whose messages are redelivered when
            a worker dies holding them (the consumer must be idempotent).
        visibility_timeout: seconds a reserved message may run before it
            is delivered again; longer than the slowest consumer run.

    Call :meth:`start` (returns at once) or :meth:`run` (blocks until
    :meth:`stop`). ``processed`` and ``failed`` count finished messages.
    """

    def __init__(
        self,
        layer: BaseChannelLayer | None = None,
        router: Router | None = None,
        *,
        only_channels: Iterable[str] | None = None,
        exclude_channels: Iterable[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_timeout: float = DEFAULT_POLL_TIMEOUT,
        at_least_once: Iterable[str] | None = None,
        visibility_timeout: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
        from .consumers.routing import router as default_router

        self.layer = layer if layer is not None else get_channel_layer()
        self.router = router if router is not None else default_router
        self.channels = select_channels(
            self.router.channel_names(), only_channels, exclude_channels
        )
        self.concurrency = concurrency
        self.poll_timeout = poll_timeout
        self.visibility_timeout = visibility_timeout
        self.reliable = self._reliable_channels(list(at_least_once or ()))
        self.processed = 0
        self.failed = 0
        self._pool = Pool(concurrency)
        self._receivers: list[gevent.Greenlet] = []
        self._stopping = Event()
        self._stopped = Event()
        self._outage_since: float | None = None

    def __repr__(self) -> str:
        return f"<Worker channels={self.channels} concurrency={self.concurrency}>"

    # -- running ---------------------------------------------------------------

    def start(self) -> Worker:
        """Start one receiving greenlet per channel; return at once."""
        if self._receivers:
            return self
        self._stopping.clear()
        self._stopped.clear()
        self._receivers = [gevent.spawn(self._receive_loop, name) for name in self.channels]
        if self.channels:
            from .heartbeat import start_heartbeat
            from .process import mark_serving

            mark_serving()
            start_heartbeat(self.layer, "worker")
        logger.log(
            logging.INFO if self.channels else logging.DEBUG,
            "worker running %d background channel(s): %s (concurrency %d)",
            len(self.channels),
            ", ".join(self.channels) or "-",
            self.concurrency,
        )
        return self

    def run(self) -> None:
        """Start, then block until :meth:`stop` is called (from a signal handler, say)."""
        self.start()
        self._stopped.wait()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop taking messages, finish those in hand, and return.

        Args:
            timeout: seconds to wait for running consumers; past it they are
                killed with a warning. None waits for ever.

        Returns:
            True if every message in hand finished.
        """
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Receivers notice the stop within poll_timeout; one holding a message
        # waits for a pool slot first, so that message runs too.
        gevent.joinall(self._receivers, timeout=_remaining(deadline))
        clean = self._pool.join(timeout=_remaining(deadline))
        if not clean:
            logger.warning(
                "worker stop: %d consumer(s) still running after %s s; killing them",
                len(self._pool),
                timeout,
            )
            self._pool.kill(block=True, timeout=1)
        for receiver in self._receivers:
            receiver.kill(block=False)
        self._receivers = []
        self._stopped.set()
        logger.log(
            logging.INFO if self.channels else logging.DEBUG,
            "worker stopped: %d processed, %d failed",
            self.processed,
            self.failed,
        )
        return bool(clean)

    def stop_soon(self, timeout: float | None = 30.0) -> None:
        """Begin :meth:`stop` in another greenlet and return (safe from a signal handler).

        Calling it again while stopping does nothing; wait for :meth:`run` to return.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        gevent.spawn(self.stop, timeout)

    @property
    def stopped(self) -> bool:
        return bool(self._stopped.is_set())

    def drain(self, timeout: float = 1.0) -> int:
        """Run every message already waiting, here and now; return how many ran.

        For tests: no greenlets stay behind. Waits at most ``timeout`` for a
        first message on each channel.
        """
        count = 0
        for name in self.channels:
            wait = timeout
            while True:
                content = self.layer.receive(name, timeout=wait)
                if content is None:
                    break
                self._run(name, content)
                count += 1
                wait = 0
        return count

    # -- inside ----------------------------------------------------------------

    def _reliable_channels(self, globs: list[str]) -> frozenset[str]:
        chosen = {c for c in self.channels if any(fnmatch.fnmatchcase(c, g) for g in globs)}
        if chosen and "at_least_once" not in self.layer.extensions:
            logger.warning(
                "worker: %s cannot redeliver messages (no 'at_least_once' extension); "
                "channels %s run at-most-once",
                type(self.layer).__name__,
                ", ".join(sorted(chosen)),
            )
            return frozenset()
        return frozenset(chosen)

    def _receive_loop(self, channel: str) -> None:
        while not self._stopping.is_set():
            # Take a message only when a greenlet is free to run it.
            self._pool.wait_available(timeout=self.poll_timeout)
            if self._stopping.is_set() or self._pool.full():
                continue
            receipt = None
            try:
                if channel in self.reliable:
                    reserved = self.layer.reserve(  # type: ignore[attr-defined]
                        channel, timeout=self.poll_timeout, visibility=self.visibility_timeout
                    )
                    content, receipt = reserved if reserved is not None else (None, None)
                else:
                    content = self.layer.receive(channel, timeout=self.poll_timeout)
            except LayerError as exc:
                self._outage(exc)
                continue
            if self._outage_since is not None:
                logger.warning(
                    "worker: channel layer back after %.1f s", time.monotonic() - self._outage_since
                )
                self._outage_since = None
            if content is not None:
                # May wait for a slot: the message is in hand and will run.
                self._pool.spawn(self._run, channel, content, receipt)

    def _outage(self, exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.error("worker: channel layer unavailable (%s); retrying", exc)
        self._stopping.wait(min(5.0, self.poll_timeout))

    def _run(self, channel: str, content: dict[str, Any], receipt: bytes | None = None) -> None:
        try:
            self._run_consumer(channel, content)
        finally:
            if receipt is not None:
                self._ack(channel, receipt)

    def _ack(self, channel: str, receipt: bytes) -> None:
        try:
            if not self.layer.ack(channel, receipt):  # type: ignore[attr-defined]
                logger.warning(
                    "worker: a message of %r ran longer than visibility_timeout "
                    "(%.0f s); it may have run twice",
                    channel,
                    self.visibility_timeout,
                )
        except LayerError as exc:
            logger.warning(
                "worker: could not acknowledge a message of %r (%s); it will be delivered again",
                channel,
                exc,
            )

    def _run_consumer(self, channel: str, content: dict[str, Any]) -> None:
        consumer = self.router.channel_consumer(channel)
        started = time.monotonic()
        try:
            if consumer is None:
                raise ConfigurationError(f"no consumer is registered for channel {channel!r}")
            _call_consumer(consumer, channel, content, self.layer)
        except StopConsumer:
            pass
        except Exception:
            self.failed += 1
            logger.exception(
                "background consumer %s failed on a message from %r",
                getattr(consumer, "__qualname__", consumer),
                channel,
            )
            return
        self.processed += 1
        logger.debug("ran %r in %.1f ms", channel, (time.monotonic() - started) * 1000)


def _call_consumer(
    consumer: Any, channel: str, content: dict[str, Any], layer: BaseChannelLayer
) -> None:
    if isinstance(consumer, type) and issubclass(consumer, BaseConsumer):
        # Channels 4 style: a consumer class whose methods are message types.
        scope = {"type": "channel", "channel": channel}
        instance = consumer.build(scope, send=_no_client, channel_layer=layer, channel_name=channel)
        instance.dispatch(content)
    else:
        consumer(Message(content, channel, layer))


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def start_embedded(
    layer: BaseChannelLayer | None = None, router: Router | None = None, **options: Any
) -> Worker:
    """Run background channels inside this (serving) process; return the worker.

    This is the default deployment: ``Channel(name).send(...)`` from a view
    runs the consumer in the same process. Call ``stop()`` on the result at
    shutdown. With no background channel registered nothing runs.
    """
    return Worker(layer, router, **options).start()


# -- the `wsbridge worker` command -------------------------------------------------


def layer_from_option(value: str | Sequence[str] | None) -> BaseChannelLayer:
    """Build a layer from ``--layer``: ``memory``, Redis URLs, or ``module:attr``.

    ``redis://host:port/db?prefix=myapp&capacity=200`` passes ``prefix``,
    ``expiry``, ``group_expiry``, ``capacity``, ``compat``, ``cluster`` and
    ``lease`` to the Redis layer and the rest of the URL to redis-py. Several
    URLs (``--layer`` repeated) are one shard each, in the order given, or
    with ``?cluster=1`` seed nodes of one Redis Cluster; options may sit on
    any of them (put them on the first). ``module:attr`` names a layer instance,
    or a callable returning one. Nothing given: ``get_channel_layer()`` (the
    process's layer: ``WSBRIDGE_LAYER``, else the settings, else in-memory).
    One parser serves every command: :func:`wsbridge.layers.urls.from_url`.

    Raises:
        ConfigurationError: a value that is none of these, or several values
            that are not all Redis URLs.
    """
    from .layers.urls import from_url

    return from_url(value)


def _split(values: Sequence[str] | None) -> list[str]:
    return [p.strip() for v in values or () for p in v.split(",") if p.strip()]


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``wsbridge worker``."""
    parser.add_argument(
        "--layer",
        action="append",
        metavar="URL",
        help="'memory', a redis:// URL (?prefix=...; repeat once per shard), "
        "or module:attr (default: $WSBRIDGE_LAYER, else the configured "
        "layer)",
    )
    parser.add_argument(
        "--routing",
        default=None,
        metavar="DOTTED",
        help="a routing module (router/routes list) or module:name",
    )
    parser.add_argument(
        "--consumers",
        action="append",
        metavar="MODULES",
        help="consumer modules to import, comma-separated; repeatable",
    )
    parser.add_argument(
        "--only-channels",
        action="append",
        metavar="GLOBS",
        help="run only channels matching these globs (comma-separated)",
    )
    parser.add_argument(
        "--exclude-channels",
        action="append",
        metavar="GLOBS",
        help="skip channels matching these globs (comma-separated)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"consumers running at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--at-least-once",
        action="append",
        metavar="GLOBS",
        help="channels (globs, comma-separated) whose messages are delivered "
        "again if a worker dies holding them; consumers must be idempotent",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --at-least-once: seconds before an unfinished message is "
        "delivered again (default 60)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long to let messages in hand finish (default 30)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"]
    )


def run_worker(args: argparse.Namespace) -> int:
    """Run ``wsbridge worker`` until SIGTERM or SIGINT; return the exit status."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    from .runtime import require_monkey_patched

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not put the cwd there
    try:
        require_monkey_patched()
        router = build_router(args.routing, _split(args.consumers))
        layer = layer_from_option(args.layer)  # none given: WSBRIDGE_LAYER, then settings
        worker = Worker(
            layer,
            router,
            only_channels=_split(args.only_channels),
            exclude_channels=_split(args.exclude_channels),
            concurrency=args.concurrency,
            at_least_once=_split(args.at_least_once),
            visibility_timeout=args.visibility_timeout,
        )
    except (WSBridgeError, ValueError) as exc:
        print(f"wsbridge worker: {exc}", file=sys.stderr)
        return 2
    if not worker.channels:
        print(
            f"wsbridge worker: no background channel to run (registered: "
            f"{', '.join(router.channel_names()) or 'none'}); list consumer modules "
            f"with --consumers, and check --only-channels/--exclude-channels",
            file=sys.stderr,
        )
        return 2
    _install_signals(worker, args.shutdown_timeout)
    print(
        f"wsbridge worker {os.getpid()} ready: channels {', '.join(worker.channels)}; "
        f"concurrency {worker.concurrency}; layer {type(layer).__name__}",
        flush=True,
    )
    worker.run()
    layer.close()
    return 0


def _install_signals(worker: Worker, timeout: float) -> None:
    def on_signal() -> None:
        logger.info("signal received: finishing messages in hand, then exiting")
        worker.stop_soon(timeout)

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, on_signal)


#: ``wsbridge.cli`` looks these up by name.
add_arguments: Callable[[argparse.ArgumentParser], None] = add_worker_arguments
run: Callable[[argparse.Namespace], int] = run_worker
