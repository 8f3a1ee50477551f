"""Every message wsbridge could not deliver: counted per reason, and said out loud.

Wherever a message is lost (a full connection mailbox, a full queue, an
item that does not decode, a group member skipped, the layer unreachable,
a message that waited past its expiry), the code calls :func:`record_drop`
with one of :data:`REASONS`. That:

* adds to this process's counter for the reason (:func:`drop_counts`), which
  the heartbeat publishes through the layer so ``wsbridge status`` shows
  every process's counters (:mod:`wsbridge.heartbeat`), and which metrics
  exporters can read as they are;
* logs one WARNING line on the ``wsbridge.drops`` logger, at most once per
  reason every :data:`WARNING_INTERVAL` seconds, with the running count, so a
  flood of drops costs one line per interval and a single drop is never silent.

Nothing here does I/O; it is safe to call from any greenlet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

__all__ = [
    "REASONS",
    "WARNING_INTERVAL",
    "record_drop",
    "drop_counts",
    "reset_drop_counts",
    "warn_once",
]

logger = logging.getLogger("wsbridge.drops")

#: Why a message was not delivered, and what the operator can do about it.
REASONS: dict[str, str] = {
    "mailbox_full": "a connection's mailbox was full: its consumer is slower than its messages",
    "queue_full": "a channel's queue was full: nobody receives from it, or too slowly",
    "group_member_full": "a group send skipped a member whose channel was full",
    "undecodable": "an undecodable item in the layer (another format, a wrong key)",
    "layer_unavailable": "the channel layer was unreachable: the send raised LayerUnavailable",
    "expired": "a message waited longer than the layer's expiry before it was read",
    "callback_error": "delivering to a connection raised (the traceback was logged)",
    "slow_client_dropped": "a slow client's oldest messages of a drop_oldest group were "
    "dropped (it got a gap notice)",
    "coalesced": "a slow client's waiting message was replaced by a newer one with the same "
    "key (coalesce policy)",
    "rate_limited": "a client's inbound message over its per-user or per-IP rate was not "
    "delivered (the connection was closed with 4429)",
    "connection_closed": "a message for a connection that was already closing or closed was "
    "not sent (it arrived after the close began)",
}

#: Seconds between two WARNING lines for the same reason.
WARNING_INTERVAL = 10.0

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_last_warned: dict[str, float] = {}
_warned_once: set[str] = set()


def record_drop(reason: str, count: int = 1, *, detail: str = "") -> int:
    """Count ``count`` lost messages for ``reason``; warn if none was said for a while.

    Args:
        reason: one of :data:`REASONS` (an unknown one is counted as it is).
        count: how many messages this one event lost.
        detail: what was lost where (a channel or group name, a shard), for the log line.

    Returns:
        The running count for ``reason`` in this process.
    """
    if count <= 0:
        return _counts[reason]
    now = time.monotonic()
    with _lock:
        _counts[reason] += count
        total = _counts[reason]
        last = _last_warned.get(reason)
        due = last is None or now - last >= WARNING_INTERVAL
        if due:
            _last_warned[reason] = now
    if due:
        logger.warning(
            "wsbridge dropped %d message(s): %s%s [%d dropped for this reason in this "
            "process so far; the next such line comes after %g s at the earliest]",
            count,
            REASONS.get(reason, reason),
            f" ({detail})" if detail else "",
            total,
            WARNING_INTERVAL,
        )
    return total


def drop_counts() -> dict[str, int]:
    """This process's counters, reason -> messages lost (only reasons that happened)."""
    with _lock:
        return dict(_counts)


def reset_drop_counts() -> None:
    """Forget the counters and the rate limit (tests)."""
    with _lock:
        _counts.clear()
        _last_warned.clear()
        _warned_once.clear()


def warn_once(key: str, message: str, *args: object) -> bool:
    """Log ``message`` as a WARNING the first time ``key`` is seen in this process.

    Returns:
        True if it logged.
    """
    with _lock:
        if key in _warned_once:
            return False
        _warned_once.add(key)
    logger.warning(message, *args)
    return True
