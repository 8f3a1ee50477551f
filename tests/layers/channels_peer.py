"""A Channels 4 site in a subprocess, for the interop tests (asyncio, no gevent).

python channels_peer.py consumer <redis_url> <prefix> <group>
    runs a real AsyncJsonWebsocketConsumer (groups = [group]) through
    asgiref's ApplicationCommunicator, prints READY once it joined,
    then prints every JSON frame the consumer sends (one per line) and
    exits after the first.
python channels_peer.py group_send <redis_url> <prefix> <group> <text>
python channels_peer.py send <redis_url> <prefix> <channel> <text>
python channels_peer.py receive <redis_url> <prefix> <channel>
    prints the received message as JSON.
python channels_peer.py new_channel <redis_url> <prefix>
    prints a new specific channel name, then the first message it receives.
python channels_peer.py fill <redis_url> <prefix> <channel> <n>
    sends n messages, prints {"sent": accepted, "full": ChannelFull raised} as JSON.
python channels_peer.py group_add <redis_url> <prefix> <group> <channel>
python channels_peer.py poll <redis_url> <prefix> <channel> <seconds>
    prints the message received within that time as JSON, or NONE.

PEER_CONFIG (JSON in the environment) is merged into the layer's CONFIG
(capacity, channel_capacity, expiry, group_expiry), to compare semantics.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import django
from django.conf import settings


def setup(url: str, prefix: str) -> None:
    settings.configure(
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [url],
                    "prefix": prefix,
                    **json.loads(os.environ.get("PEER_CONFIG", "{}")),
                },
            }
        },
    )
    django.setup()


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def run_consumer(group: str) -> None:
    # asgiref's ApplicationCommunicator drives the consumer as an ASGI server
    # would (channels.testing itself needs daphne, which is not needed here).
    from asgiref.testing import ApplicationCommunicator
    from channels.generic.websocket import AsyncJsonWebsocketConsumer

    class ChatConsumer(AsyncJsonWebsocketConsumer):
        groups = [group]

        async def chat_message(self, event):
            await self.send_json({"text": event["text"], "via": "channels"})

    scope = {"type": "websocket", "path": "/ws/chat/", "headers": [], "subprotocols": []}
    app = ApplicationCommunicator(ChatConsumer.as_asgi(), scope)
    await app.send_input({"type": "websocket.connect"})
    accepted = await app.receive_output(10)
    assert accepted["type"] == "websocket.accept", accepted
    say("READY")
    frame = await app.receive_output(20)
    say(frame["text"])
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait(5)


async def main(argv: list[str]) -> None:
    mode, url, prefix, *rest = argv
    setup(url, prefix)
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if mode == "consumer":
        await run_consumer(rest[0])
    elif mode == "group_send":
        await layer.group_send(rest[0], {"type": "chat.message", "text": rest[1]})
        say("SENT")
    elif mode == "send":
        await layer.send(rest[0], {"type": "chat.message", "text": rest[1]})
        say("SENT")
    elif mode == "receive":
        message = await asyncio.wait_for(layer.receive(rest[0]), 20)
        say(json.dumps(message))
    elif mode == "fill":
        from channels.exceptions import ChannelFull

        sent = full = 0
        for i in range(int(rest[1])):
            try:
                await layer.send(rest[0], {"type": "fill", "i": i})
                sent += 1
            except ChannelFull:
                full += 1
        say(json.dumps({"sent": sent, "full": full}))
    elif mode == "group_add":
        await layer.group_add(rest[0], rest[1])
        say("ADDED")
    elif mode == "poll":
        try:
            message = await asyncio.wait_for(layer.receive(rest[0]), float(rest[1]))
        except asyncio.TimeoutError:
            say("NONE")
        else:
            say(json.dumps(message))
    elif mode == "new_channel":
        name = await layer.new_channel()
        say(name)
        message = await asyncio.wait_for(layer.receive(name), 20)
        say(json.dumps(message))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
