"""A Flask app with a WebSocket room: its layer comes from ``WSBRIDGE_LAYER`` only."""

from __future__ import annotations

from flask import Flask, request

import wsbridge
from tests.e2e.one_layer_app import publish, router

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "ordinary page ok"


@app.get("/publish/")
def publish_view() -> str:
    return publish(request.args["text"])


application = wsbridge.wrap(app, router=router)
