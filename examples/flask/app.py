"""Live news on a Flask app: Flask keeps its views, wsbridge adds the sockets.

A page subscribes over WebSocket (``/ws/news/``); any Flask view can publish
to the subscribers with one ``group_send`` (``POST /news`` here). Run it from
the repository root with::

    wsbridge serve examples.flask.app
    gunicorn -k gevent -w 1 examples.flask.app:application

then open http://127.0.0.1:8000/ and publish with
``curl -d text=hello http://127.0.0.1:8000/news``.
"""

from __future__ import annotations

from flask import Flask, abort, request

import wsbridge
from examples.flask.consumers import NEWS_GROUP, router
from wsbridge import get_channel_layer

#: Longest news item accepted, in characters.
MAX_TEXT = 500

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Live news</title></head>
<body>
<h1>Live news</h1>
<form id="publish" method="post" action="/news">
  <input name="text" size="50" maxlength="500" required> <button>Publish</button>
</form>
<ul id="news"></ul>
<script>
const socket = new WebSocket(`ws://${location.host}/ws/news/`);
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = JSON.parse(event.data).text;   // never innerHTML: untrusted text
  document.getElementById("news").prepend(item);
};
document.getElementById("publish").onsubmit = (event) => {
  event.preventDefault();
  fetch("/news", { method: "POST", body: new FormData(event.target) });
  event.target.reset();
};
</script>
</body></html>
"""

app = Flask(__name__)


@app.get("/")
def index() -> str:
    """The page: a form to publish and the live list."""
    return PAGE


@app.post("/news")
def publish() -> tuple[dict[str, object], int]:
    """Send one item to every subscriber; 400 for an empty or too long text."""
    text = request.form.get("text", "").strip()
    if not text or len(text) > MAX_TEXT:
        abort(400, f"text must be 1 to {MAX_TEXT} characters")
    get_channel_layer().group_send(NEWS_GROUP, {"type": "news.item", "text": text})
    return {"published": text}, 202


#: What the server runs: Flask for every request wsbridge does not claim.
application = wsbridge.wrap(app, router=router)
