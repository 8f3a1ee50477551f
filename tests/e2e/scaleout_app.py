"""The scale-out test app: rooms (groups) and a background channel, served by many processes.

Served by ``wsbridge serve tests.e2e.scaleout_app --layer URL --layer URL2 --no-worker``
or ``gunicorn -k gevent -w 2 tests.e2e.scaleout_app:application`` (then the
shards come from ``SCALEOUT_LAYER``, space-separated URLs); background
messages run in ``wsbridge worker --routing tests.e2e.scaleout_app:router``.

WebSocket ``/ws/room/<room>/`` (JSON frames):

* on connect the consumer joins group ``<room>`` and sends
  ``{"hello": <pid>, "channel": <its channel name>}``;
* ``{"broadcast": text}`` -> ``group_send`` to the room; every member gets
  ``{"text": text, "via": <pid of the sending process>}``;
* ``{"job": id}`` -> ``Channel("scaleout.jobs").send(...)`` and the answer
  ``{"queued": id}``. The worker appends ``"<id> <worker pid> <sender pid>"``
  to the file ``$SCALEOUT_OUT`` and sends ``{"done": id, "pid": <worker
  pid>}`` to the room.

The same consumer is reachable over long-poll (``wrap()``'s endpoints under
``/_wsbridge/lp``, open with ``{"path": "/ws/room/<room>/"}``): a session
adopted by another process after a crash gets a new hello from there.

SSE ``GET /sse/room/<room>/`` (``text/event-stream``): joins group ``<room>``,
then sends an event ``hello`` with data ``{"hello": <pid>, "channel": ...}``
and one unnamed event ``{"text": text, "via": pid}`` per room message (the
soak's third transport).

Run as a script it is the plain (not monkey-patched, not serving) sender::

    python tests/e2e/scaleout_app.py group ROOM TEXT URL [URL...]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from wsbridge import Channel, Group, JsonWebsocketConsumer
from wsbridge.consumers.http import SseConsumer
from wsbridge.consumers.routing import Router
from wsbridge.transport.wsgi import wrap

JOBS = "scaleout.jobs"

router = Router()


@router.websocket("ws/room/<str:room>/")
class RoomConsumer(JsonWebsocketConsumer):
    """A member of one room; relays broadcasts and queues background jobs."""

    def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        # Joined before the hello goes out: a client that has its hello is a member.
        self.channel_layer.group_add(self.room, self.channel_name)
        self.accept()
        self.send_json({"hello": os.getpid(), "channel": self.channel_name})

    def receive_json(self, content: Any) -> None:
        if "broadcast" in content:
            self.channel_layer.group_send(
                self.room,
                {"type": "room.message", "text": content["broadcast"], "via": os.getpid()},
            )
        elif "job" in content:
            Channel(JOBS).send({"id": content["job"], "room": self.room, "from": os.getpid()})
            self.send_json({"queued": content["job"]})

    def room_message(self, event: dict[str, Any]) -> None:
        self.send_json({"text": event["text"], "via": event["via"]})

    def job_done(self, event: dict[str, Any]) -> None:
        self.send_json({"done": event["id"], "pid": event["pid"]})

    def disconnect(self, code: int) -> None:
        self.channel_layer.group_discard(self.room, self.channel_name)


@router.http("sse/room/<str:room>/")
class RoomStream(SseConsumer):
    """A member of one room over Server-Sent Events; relays the room's messages."""

    keepalive_interval = 1.0  # a client notices a dead stream within seconds

    def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        # Joined before the hello goes out, as RoomConsumer: a client that has it is a member.
        self.channel_layer.group_add(self.room, self.channel_name)
        hello = {"hello": os.getpid(), "channel": self.channel_name}
        self.send_event(json.dumps(hello), event="hello")

    def room_message(self, event: dict[str, Any]) -> None:
        self.send_event(json.dumps({"text": event["text"], "via": event["via"]}))

    def job_done(self, event: dict[str, Any]) -> None:
        self.send_event(json.dumps({"done": event["id"], "pid": event["pid"]}), event="done")

    def disconnect(self) -> None:
        if hasattr(self, "room"):
            self.channel_layer.group_discard(self.room, self.channel_name)


@router.channel(JOBS)
def run_job(message: Any) -> None:
    """The background work: record who ran it (one short append is atomic), tell the room."""
    line = f"{message['id']} {os.getpid()} {message['from']}\n"
    fd = os.open(os.environ["SCALEOUT_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    Group(message["room"], channel_layer=message.channel_layer).send(
        {"type": "job.done", "id": message["id"], "pid": os.getpid()}
    )


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The plain WSGI site beside the WebSockets: its pid, for the tests."""
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if os.environ.get("SCALEOUT_LAYER"):
    # Under gunicorn there is no --layer: the app sets the process's layer, as a
    # settings module would. Imported in each worker after the fork (no --preload),
    # so every process gets its own layer and its own reader.
    from wsbridge.layers import set_channel_layer
    from wsbridge.worker import layer_from_option

    set_channel_layer(layer_from_option(os.environ["SCALEOUT_LAYER"].split()))

# Long-poll sessions of a killed server are adopted by the other (the soak counts on it).
application = wrap(site, router=router)


def main(argv: list[str]) -> int:
    """``group ROOM TEXT URL...``: one Channels-1 style ``Group(ROOM).send`` from outside."""
    from wsbridge.worker import layer_from_option

    if len(argv) < 4 or argv[0] != "group":
        print(__doc__, file=sys.stderr)
        return 2
    room, text, urls = argv[1], argv[2], argv[3:]
    layer = layer_from_option(urls)
    try:
        # No "type": delivered to the client as is, a text frame (Channels 1.x).
        Group(room, channel_layer=layer).send({"text": json.dumps({"text": text, "via": "plain"})})
    finally:
        layer.close()
    print(f"sent to {room} from pid {os.getpid()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
