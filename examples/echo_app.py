"""A tiny echo app: ``wsbridge serve examples.echo_app`` then connect to ``ws://HOST:PORT/echo/``.

Plain HTTP requests go to ``site`` (a stand-in for an existing WSGI site);
``/echo/`` is a WebSocket that sends every message back. The tests use it
with the library's default limits.
"""

from __future__ import annotations

from wsbridge import Router, WebsocketConsumer, wrap

router = Router()


@router.websocket("echo/")
class Echo(WebsocketConsumer):
    """Echoes text and bytes; offers the first subprotocol the client asks for."""

    def connect(self) -> None:
        offered = self.scope["subprotocols"]
        self.accept(subprotocol=offered[0] if offered else None)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


def site(environ, start_response):
    """The 'existing site': answers every plain HTTP request."""
    body = f"site: {environ['REQUEST_METHOD']} {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = wrap(site, router=router)
