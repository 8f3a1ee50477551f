"""An inbound SMS webhook (the shape SMS gateways use) mapped to a background channel.

The gateway POSTs ``application/x-www-form-urlencoded`` fields (``From``,
``To``, ``Body``, ``MessageSid``) to ``/hooks/sms/``, signed with a shared
secret: ``X-Sms-Signature: hex(HMAC-SHA256(secret, raw body))``. The
consumer checks the request, puts the message on the ``sms.received``
channel and answers 204 at once (gateways retry on anything but 2xx, and
must not wait for our processing). The background consumer of that
channel stores the message and tells the dashboard group.

Answers: 204 accepted, 403 bad or missing signature, 405 not a POST,
400 missing fields, 413 body over 16 KiB (checked while reading), 503 the
channel is full (the gateway retries later).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import deque
from typing import Any, ClassVar
from urllib.parse import parse_qs

from wsbridge import Channel, Group, Router
from wsbridge.consumers.http import HttpConsumer
from wsbridge.exceptions import ChannelFull

__all__ = ["router", "SmsWebhook", "sms_received", "INBOX", "sign"]

router = Router()

#: The last messages received (a real site would use its database).
INBOX: deque[dict[str, Any]] = deque(maxlen=100)


def sign(secret: str, body: bytes) -> str:
    """The signature a gateway sends for ``body`` (what tests and senders use)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@router.http("hooks/sms/")
class SmsWebhook(HttpConsumer):
    max_body_size = 16 * 1024
    #: The shared secret; the SMS_WEBHOOK_SECRET environment variable by default.
    secret: ClassVar[str | None] = None
    channel: ClassVar[str] = "sms.received"

    def handle(self, body: bytes) -> None:
        if self.method != "POST":
            self.send_response(405, "POST only", {"allow": "POST"})
            return
        secret = self.secret or os.environ.get("SMS_WEBHOOK_SECRET", "")
        given = self.get_header("x-sms-signature") or ""
        if not secret or not hmac.compare_digest(given, sign(secret, body)):
            self.send_response(403, "bad signature")
            return
        fields = parse_qs(body.decode("utf-8", "replace"))
        try:
            message = {
                "sid": fields["MessageSid"][0],
                "from": fields["From"][0],
                "to": fields["To"][0],
                "body": fields.get("Body", [""])[0][:1600],
            }
        except KeyError as exc:
            self.send_response(400, f"missing field {exc.args[0]}")
            return
        try:
            Channel(self.channel, channel_layer=self.channel_layer).send(message)
        except ChannelFull:
            self.send_response(503, "busy, retry later", {"retry-after": "5"})
            return
        self.send_response(204)


@router.channel("sms.received")
def sms_received(message: Any) -> None:
    """Background consumer: store the SMS, then tell every open dashboard."""
    sms = dict(message.content)
    INBOX.append(sms)
    Group("sms.inbox", channel_layer=message.channel_layer).send({"type": "sms.received", **sms})
