"""A plain WSGI site with wsbridge identity: cookie "uid" logins, connect tokens, admin URLs.

Served by ``wsbridge serve tests.identity.id_app:application`` in the tests, two
processes on one Redis. The site's own "session": a ``uid`` cookie, refused when
the user is in ``BANNED`` (which the ``/ban`` URL fills, as a site's database would).

HTTP URLs (plain WSGI, the site's "views"):

* ``/token?user=U`` -> a connect token for U (the site's login check is elided);
* ``/send?user=U&text=T`` -> ``send_to_user``; ``/revoke?user=U&reason=R``;
* ``/ban?user=U`` -> U fails the re-check from now on;
* ``/kick?user=U`` | ``?group=G``.
"""

from __future__ import annotations

import json
import os
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import wsbridge
from wsbridge import Router, SseConsumer, WebsocketConsumer, wrap
from wsbridge.identity import ConnectTokens, HmacTokenCodec, IdentityOptions

router = Router()
BANNED: set[str] = set()
SECRET = os.environ.get("ID_TEST_SECRET", "identity-test-secret-0123456789")
AUDIENCE = os.environ.get("ID_TEST_AUDIENCE", "id-test-site")


def load_user(user_id: str, claims: dict[str, Any]) -> str | None:
    """The site's user loader: ids are names; banned users are refused."""
    return None if user_id in BANNED else user_id


def cookie_user(scope: dict[str, Any]) -> str | None:
    uid = (scope.get("cookies") or {}).get("uid")
    return uid if uid and uid not in BANNED else None


def validator(scope: dict[str, Any]) -> str | None:
    uid = scope.get("wsbridge.user_id")
    return f"user {uid} is banned" if uid in BANNED else None


tokens = ConnectTokens(
    HmacTokenCodec(SECRET),
    audience=AUDIENCE,
    ttl=float(os.environ.get("ID_TEST_TTL", "60")),
    user_loader=load_user,
)
identity = IdentityOptions(
    tokens=tokens,
    validator=validator,
    recheck_interval=float(os.environ.get("ID_TEST_RECHECK", "0.5")),
)


@router.websocket("ws/me/")
class Me(WebsocketConsumer):
    """Accepts a logged-in user (token or cookie); echoes; 'whoami' answers the user id."""

    def connect(self) -> None:
        if self.scope.get("user") is None:
            self.scope["user"] = cookie_user(self.scope)
        if self.scope["user"] is None:
            self.close()
            return
        offered = [p for p in self.scope["subprotocols"] if p != "wsbridge.bearer"]
        self.accept(subprotocol=offered[0] if offered else None)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "whoami":
            self.send(text_data="you are " + str(self.scope["user"]))
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)

    def inbox_update(self, event: dict[str, Any]) -> None:
        self.send(text_data="inbox:" + event["n"])


@router.http("events/me/")
class MyEvents(SseConsumer):
    keepalive_interval = 1.0

    def connect(self) -> None:
        if self.scope.get("user") is None:
            self.scope["user"] = cookie_user(self.scope)
        if self.scope["user"] is None:
            self.send_response(403, b"login required\n")


PAGE = """<!doctype html><meta charset="utf-8"><title>identity</title>
<script type="module">
  const { WSBridge } = await import("/_wsbridge/wsbridge.js");
  const params = new URLSearchParams(location.search);
  window.events = []; window.received = []; window.fetched = 0;
  const bridge = new WSBridge("/ws/me/", {
    minDelay: 50, maxDelay: 200, transports: [params.get("transport") || "websocket"],
    tokenIn: params.get("in") || "protocol",
    token: () => { window.fetched += 1;
      return fetch("/token-json?user=" + params.get("user")).then((r) => r.json()); },
  });
  bridge.on("open", (e) => events.push("open:" + e.transport));
  bridge.on("close", (e) => events.push("close:" + e.code));
  bridge.on("refreshed", () => events.push("refreshed"));
  bridge.on("message", (e) => received.push(e.data));
  window.bridge = bridge;
</script>
"""


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ.get("PATH_INFO", "")
    answer: Any = "ok"
    if path == "/token":
        answer = tokens.issue(query["user"], session_ref=query.get("session"))
    elif path == "/send":
        answer = wsbridge.send_to_user(query["user"], query["text"])
    elif path == "/send-typed":
        answer = wsbridge.send_to_user(query["user"], {"type": "inbox.update", "n": query["n"]})
    elif path == "/revoke":
        wsbridge.revoke_user(query["user"], query.get("reason", "revoked"))
    elif path == "/ban":
        BANNED.add(query["user"])
    elif path == "/kick":
        wsbridge.kick(
            user=query.get("user"), group=query.get("group"), reason=query.get("reason", "kicked")
        )
    elif path == "/page":
        body = PAGE.encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]
    elif path == "/token-json":
        answer = {"token": tokens.issue(query["user"]), "expires_in": tokens.ttl}
    elif path == "/layer-url":
        answer = os.environ["ID_TEST_LAYER"]
    elif path == "/status":
        from wsbridge.consumers.identity_hooks import status

        answer = status() | {"tokens": tokens.counters}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = json.dumps(answer).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _cookies(environ: dict[str, Any]) -> dict[str, str]:
    jar = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    return {k: m.value for k, m in jar.items()}


application = wrap(
    site,
    router=router,
    identity=identity,
    limits=json.loads(os.environ["ID_TEST_LIMITS"]) if os.environ.get("ID_TEST_LIMITS") else None,
)
