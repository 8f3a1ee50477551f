"""Signals around consumer calls: the twins of ``request_started`` / ``request_finished``.

Connect to them for per-call set-up and clean-up (a logging context, an
error tracker's scope...)::

    from wsbridge_django.signals import consumer_finished

    @receiver(consumer_finished)
    def forget_context(sender, scope, message_type, **kwargs):
        ...

``sender`` is the consumer class (or the background channel's function);
``scope`` the connection's scope (None for a background channel);
``message_type`` the type of the message handled. ``consumer_finished``
is sent even when the consumer raised. Database connections are handled
by wsbridge_django itself (:mod:`wsbridge_django.db`), not through these.
"""

from django.dispatch import Signal

__all__ = ["consumer_started", "consumer_finished"]

#: Sent before each consumer call (a connection's event or a background message).
consumer_started = Signal()
#: Sent after each consumer call, even when the consumer raised.
consumer_finished = Signal()
