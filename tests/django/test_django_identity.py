"""Live revocation on a Django site: two processes on Redis, real db sessions on PostgreSQL.

Logout, password change, deactivation and a session that disappears without a
signal each close the user's sockets in the *other* process; the old cookie or
token is refused afterwards.
"""

from __future__ import annotations

import re
import secrets
import time

import pytest
from djclient import http_get, login_cookie, ws_connect, ws_refusal
from djtest_server import DjangoServer, base_env, manage, postgres_database
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.redis, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def site():
    with postgres_database() as name:
        env = base_env(
            WSBRIDGE_TEST_DB=f"postgres:{name}",
            WSBRIDGE_TEST_REDIS_PREFIX="wsbridge-djid-" + secrets.token_hex(4),
            WSBRIDGE_TEST_RECHECK="0.5",
        )
        manage("migrate", "-v", "0", env=env)
        with DjangoServer.wsbridge_serve(env) as a, DjangoServer.wsbridge_serve(env) as b:
            a.database = name
            a.env = env
            yield a, b


def make_user(site_env, name: str) -> None:
    manage(
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; User.objects.create_user({name!r}, "
        f"password='pw')",
        env=site_env,
    )


def closed(ws, timeout: float = 5.0) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "no close frame"
        return exc.rcvd.code, exc.rcvd.reason, time.monotonic() - start
    except TimeoutError:
        raise AssertionError("the socket stayed open") from None


def private(server, **kwargs):
    ws = ws_connect(server.ws_url + "/ws/private/", origin=server.url, **kwargs)
    assert "hello" in ws.recv(timeout=10)
    return ws


def test_logout_in_a_closes_the_sessions_sockets_in_b_within_a_second(site):
    a, b = site
    name = "u" + secrets.token_hex(3)
    make_user(a.env, name)
    cookie = login_cookie(a.url, name, "pw")
    other = login_cookie(a.url, name, "pw")  # a second device: stays logged in
    sockets = [private(b, cookie=cookie), private(a, cookie=cookie)]
    keep = private(b, cookie=other)
    status, token_body, _ = http_get(a.url + "/wsbridge/token/", cookie)
    import json

    token = json.loads(token_body)["token"]
    t0 = time.monotonic()
    assert http_get(a.url + "/logout/", cookie)[0] == 200
    for ws in sockets:
        assert closed(ws)[:2] == (4403, "logged out")
    assert time.monotonic() - t0 < 1.0
    keep.send('{"ping": 1}')  # the other session's socket is untouched
    with pytest.raises(TimeoutError):
        keep.recv(timeout=0.3)
    keep.close()
    # the old cookie, and a token the logged-out session had fetched, are refused
    assert ws_refusal(b.ws_url + "/ws/private/", cookie=cookie, origin=b.url) == 403
    assert ws_refusal(b.ws_url + "/ws/private/?access_token=" + token, origin=b.url) == 403


def test_a_token_sets_the_user_and_is_refused_when_replayed_or_forged(site):
    import json

    a, b = site
    name = "t" + secrets.token_hex(3)
    make_user(a.env, name)
    cookie = login_cookie(a.url, name, "pw")
    token = json.loads(http_get(a.url + "/wsbridge/token/", cookie)[1])["token"]
    ws = ws_connect(b.ws_url + "/ws/private/?access_token=" + token)  # no cookie, no Origin
    assert json.loads(ws.recv(timeout=10)) == {"hello": name}
    ws.close()
    assert ws_refusal(a.ws_url + "/ws/private/?access_token=" + token) == 403  # replayed
    # in Sec-WebSocket-Protocol: only RFC 7230 token characters (browsers refuse others)
    fresh = json.loads(http_get(a.url + "/wsbridge/token/", cookie)[1])["token"]
    assert re.fullmatch(r"[A-Za-z0-9._~!#$%&'*+^`|-]+", fresh), fresh
    ws = ws_connect(
        b.ws_url + "/ws/private/", subprotocols=["wsbridge.bearer", "wsbridge.token." + fresh]
    )
    assert ws.subprotocol == "wsbridge.bearer"
    assert json.loads(ws.recv(timeout=10)) == {"hello": name}
    ws.close()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert ws_refusal(b.ws_url + "/ws/private/?access_token=" + forged) == 403
    assert http_get(a.url + "/wsbridge/token/")[0] == 403  # anonymous: no token
    assert token not in b.log() and token not in a.log()


def test_password_change_and_deactivation_close_every_socket_of_the_user(site):
    a, b = site
    name = "p" + secrets.token_hex(3)
    make_user(a.env, name)
    first, second = login_cookie(a.url, name, "pw"), login_cookie(a.url, name, "pw")
    ws = private(b, cookie=second)
    status, _, renewed = http_get(a.url + "/setpw/?p=new", first)
    assert status == 200
    assert closed(ws)[:2] == (4403, "password changed")
    assert ws_refusal(b.ws_url + "/ws/private/", cookie=second, origin=b.url) == 403
    # the session that changed it stays logged in (under the key Django cycled to)
    ws = private(b, cookie=f"sessionid={renewed['sessionid']}")
    assert http_get(a.url + f"/deactivate/?u={name}")[0] == 200
    assert closed(ws)[:2] == (4403, "account deactivated")


def test_a_session_removed_without_a_signal_ends_at_the_next_recheck(site):
    import psycopg

    a, b = site
    name = "s" + secrets.token_hex(3)
    make_user(a.env, name)
    cookie = login_cookie(a.url, name, "pw")
    ws = private(b, cookie=cookie)
    key = cookie.split("=", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={a.database}") as conn:
        conn.execute("DELETE FROM django_session WHERE session_key = %s", [key])
    code, reason, waited = closed(ws, timeout=10)
    assert (code, reason) == (4403, "session ended")
    assert waited < 5  # RECHECK_INTERVAL is 0.5 s here
