"""A room chat on a plain WSGI app: no Django, no ASGI, one process.

Run it (from the repository root) with either::

    python examples/plain_wsgi/app.py            # --host, --port
    wsbridge serve examples.plain_wsgi.app

then open http://127.0.0.1:8000/ in two browser tabs.
"""

if __name__ == "__main__":
    # Patch first, before anything else imports socket or threading.
    from gevent import monkey

    monkey.patch_all()
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import argparse  # noqa: E402
import os  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import wsbridge  # noqa: E402
from examples.plain_wsgi.consumers import router  # noqa: E402
from wsbridge.worker import layer_from_option  # noqa: E402

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsbridge room chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em; }
  .notice { color: #777; } .error { color: #b00; }
</style>
</head>
<body>
<h1>Room chat</h1>
<form id="join">
  Room <input id="room" value="lobby" pattern="[-a-zA-Z0-9_]+" required>
  Name <input id="name" value="guest" maxlength="40">
  <button>Join</button>
</form>
<div id="log" aria-live="polite"></div>
<form id="say"><input id="text" size="50" autocomplete="off" disabled> <button>Send</button></form>
<script>
let socket = null;
const $ = (id) => document.getElementById(id);
function show(text, cls) {
  const line = document.createElement("div");
  line.textContent = text;               // never innerHTML: chat text is untrusted
  if (cls) line.className = cls;
  $("log").append(line);
  $("log").scrollTop = $("log").scrollHeight;
}
$("join").onsubmit = (event) => {
  event.preventDefault();
  if (socket) socket.close();
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + "/ws/chat/" + encodeURIComponent($("room").value) +
              "/?name=" + encodeURIComponent($("name").value);
  socket = new WebSocket(url);
  socket.onopen = () => {
    $("text").disabled = false;
    show("connected to " + $("room").value, "notice");
  };
  socket.onclose = (e) => {
    $("text").disabled = true;
    show("disconnected (" + e.code + ")", "notice");
  };
  socket.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "message") show(m.user + ": " + m.text);
    else if (m.type === "error") show(m.error, "error");
    else show(m.user + " " + m.type, "notice");
  };
};
$("say").onsubmit = (event) => {
  event.preventDefault();
  if (socket && socket.readyState === WebSocket.OPEN && $("text").value) {
    socket.send(JSON.stringify({text: $("text").value}));
    $("text").value = "";
  }
};
</script>
</body>
</html>
"""

StartResponse = Callable[..., Any]


def site(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The site's own WSGI app: plain HTTP only, it knows nothing of WebSockets."""
    if environ.get("PATH_INFO", "/") == "/":
        body = PAGE.encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


#: The in-memory layer by default (one process); WSBRIDGE_LAYER=redis://...?prefix=chat
#: shares the rooms between processes (gunicorn -w 4, several hosts).
layer = layer_from_option(os.environ.get("WSBRIDGE_LAYER"))

#: What a server runs: WebSocket requests on routed paths go to the consumers.
application = wsbridge.wrap(site, router=router, layer=layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    def ready(server: Any) -> None:
        print(f"room chat: open http://{args.host}:{server.server_port}/", flush=True)

    wsbridge.serve(application, host=args.host, port=args.port, ready=ready)


if __name__ == "__main__":
    main()
