"""A dashboard fed by two other event sources: UDP datagrams and an SMS webhook.

Run it (from the repository root)::

    python examples/event_sources/app.py            # --port 8000 --udp-port 9999

then open http://127.0.0.1:8000/ and, in a shell::

    echo -n "alerts disk almost full" | nc -u -w0 127.0.0.1 9999

The page is an ``EventSource`` on ``/events/?topics=alerts``: an
:class:`~wsbridge.SseConsumer` in the groups ``udp.alerts`` (fed by
:mod:`.udp`) and ``sms.inbox`` (fed by the ``sms.received`` background
channel, itself fed by the webhook in :mod:`.sms`).
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import wsbridge  # noqa: E402
from examples.event_sources import sms  # noqa: E402
from examples.event_sources.udp import DatagramSource  # noqa: E402
from wsbridge import Router, SseConsumer, path  # noqa: E402

#: The webhook and its background channel come from sms.py; the dashboard is here.
router = Router(routes=[path("", sms.router)])

_TOPIC = re.compile(r"[a-zA-Z0-9_-]{1,50}\Z")


@router.http("events/")
class Dashboard(SseConsumer):
    """One browser's stream: datagrams of the topics it asked for, and every SMS."""

    def connect(self) -> None:
        topics = ",".join(self.query.get("topics", ["alerts"])).split(",")
        self.joined = ["sms.inbox"] + [f"udp.{t}" for t in topics if _TOPIC.match(t)][:10]
        for group in self.joined:
            self.channel_layer.group_add(group, self.channel_name)

    def udp_datagram(self, event: dict[str, Any]) -> None:
        self.send_event(json.dumps({"topic": event["topic"], "text": event["text"]}), event="udp")

    def sms_received(self, event: dict[str, Any]) -> None:
        payload = {"from": event["from"], "body": event["body"]}
        self.send_event(json.dumps(payload), event="sms", id=event["sid"])

    def disconnect(self) -> None:
        for group in getattr(self, "joined", ()):
            self.channel_layer.group_discard(group, self.channel_name)


PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>event sources</title></head>
<body>
<h1>Events</h1>
<ul id="log"></ul>
<script>
const source = new EventSource("/events/?topics=alerts");
function show(kind, e) {
  const item = document.createElement("li");
  item.textContent = kind + ": " + e.data;   // never innerHTML: the data is untrusted
  document.getElementById("log").append(item);
}
source.addEventListener("udp", (e) => show("udp", e));
source.addEventListener("sms", (e) => show("sms", e));
</script>
</body></html>
"""

StartResponse = Callable[..., Any]


def site(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The site's own WSGI app: the page, and 404 for the rest."""
    if environ.get("PATH_INFO", "/") == "/":
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
        )
        return [PAGE]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


application = wsbridge.wrap(site, router=router)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--udp-port", type=int, default=9999)
    args = parser.parse_args(argv)
    # The datagram listener shares this process's layer (the in-memory one by
    # default); with Redis it may run anywhere: python -m examples.event_sources.udp
    source = DatagramSource((args.host, args.udp_port), application.layer)
    source.start()

    def ready(server: Any) -> None:
        print(
            f"event sources: open http://{args.host}:{server.server_port}/ "
            f"udp://{args.host}:{source.server_port}",
            flush=True,
        )

    try:
        wsbridge.serve(application, host=args.host, port=args.port, ready=ready)
    finally:
        source.stop()


if __name__ == "__main__":
    main()
