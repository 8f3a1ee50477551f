"""The test project behind a real ``wsbridge serve djtest.wsgi``: real sockets, real cookies.

The site's wsgi.py changed one line (djtest/wsgi.py); everything here goes
through the real handshake, the site's own login view and session table.
"""

from __future__ import annotations

import json

import pytest
from djclient import http_get, login_cookie, lp_post, ws_connect, ws_refusal
from djtest_server import DjangoServer, base_env, manage
from websockets.exceptions import ConnectionClosed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("djtest") / "db.sqlite3"
    env = base_env(WSBRIDGE_TEST_DB=f"sqlite:{db}")
    manage("migrate", "-v", "0", env=env)
    manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ada', password='pw')",
        env=env,
    )
    with DjangoServer.wsbridge_serve(env) as running:
        yield running


def test_ordinary_pages_are_served_by_django_untouched(server):
    assert http_get(server.url + "/")[:2] == (200, "ordinary page ok")
    assert http_get(server.url + "/nope/")[0] == 404


def test_the_sites_login_cookie_gives_the_socket_its_user(server):
    cookie = login_cookie(server.url, "ada", "pw")
    with ws_connect(server.ws_url + "/ws/whoami/", cookie=cookie, origin=server.url) as ws:
        assert json.loads(ws.recv(timeout=5))["user"] == "ada"
    with ws_connect(server.ws_url + "/ws/private/", cookie=cookie, origin=server.url) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"hello": "ada"}


def test_no_cookie_is_refused_by_a_login_required_consumer_with_a_log_line(server):
    assert ws_refusal(server.ws_url + "/ws/private/", origin=server.url) == 403
    server.wait_for_log("refused websocket /ws/private/: login required")


def test_tampered_cookie_is_refused_with_a_log_line(server):
    cookie = login_cookie(server.url, "ada", "pw")
    assert (
        ws_refusal(server.ws_url + "/ws/private/", cookie=cookie[:-3] + "xyz", origin=server.url)
        == 403
    )
    server.wait_for_log("session cookie present but no live session")


def test_logged_out_users_old_cookie_is_refused(server):
    cookie = login_cookie(server.url, "ada", "pw")
    assert http_get(server.url + "/logout/", cookie)[0] == 200
    assert ws_refusal(server.ws_url + "/ws/private/", cookie=cookie, origin=server.url) == 403


def test_foreign_origin_is_refused_with_a_log_line_and_the_site_goes_on(server):
    cookie = login_cookie(server.url, "ada", "pw")
    assert (
        ws_refusal(server.ws_url + "/ws/whoami/", cookie=cookie, origin="https://evil.example.com")
        == 403
    )
    server.wait_for_log("evil.example.com")
    assert http_get(server.url + "/")[0] == 200


def test_a_database_error_closes_only_that_connection_with_1011(server):
    with ws_connect(server.ws_url + "/ws/echo/", origin=server.url) as bystander:
        with ws_connect(server.ws_url + "/ws/db/", origin=server.url) as failing:
            failing.send(json.dumps({"fail": True}))
            with pytest.raises(ConnectionClosed) as closed:
                failing.recv(timeout=5)
            assert closed.value.rcvd.code == 1011
        server.wait_for_log("table_that_does_not_exist")
        bystander.send("still here")
        assert bystander.recv(timeout=5) == "still here"
    with ws_connect(server.ws_url + "/ws/db/", origin=server.url) as healthy:
        healthy.send(json.dumps({"create": "after the error"}))
        assert json.loads(healthy.recv(timeout=5))["notes"] >= 1
    assert http_get(server.url + "/")[0] == 200


def test_login_over_the_socket_is_seen_by_the_sites_pages(server):
    assert http_get(server.url + "/login/?u=ada&p=wrong")[0] == 403
    cookie = login_cookie(server.url, "ada", "pw")
    assert http_get(server.url + "/logout/", cookie)[0] == 200  # the cookie now names no session
    with ws_connect(server.ws_url + "/ws/whoami/", cookie=cookie, origin=server.url) as ws:
        assert json.loads(ws.recv(timeout=5))["user"] is None
        ws.send(json.dumps({"set": "basket"}))  # an anonymous session with data, like a shop's
        key = json.loads(ws.recv(timeout=5))["session_key"]
        ws.send(json.dumps({"login": "ada"}))
        assert json.loads(ws.recv(timeout=5))["user"] == "ada"
    page = http_get(server.url + "/whoami/", f"sessionid={key}")
    assert json.loads(page[1]) == {"user": "ada"}


def test_long_poll_gets_the_same_user_and_its_token_is_bound_to_that_user(server):
    cookie = login_cookie(server.url, "ada", "pw")
    status, opened = lp_post(
        server.url, "open", {"path": "/ws/whoami/"}, cookie=cookie, origin=server.url
    )
    assert status == 200, opened
    status, polled = lp_post(
        server.url, "poll", {"token": opened["token"], "ack": 0}, cookie=cookie, origin=server.url
    )
    assert status == 200, polled
    texts = [json.loads(m["text"]) for m in polled["messages"] if "text" in m]
    assert texts and texts[0]["user"] == "ada"
    # Someone else's cookie (here: none) cannot use ada's token.
    status, _ = lp_post(server.url, "poll", {"token": opened["token"], "ack": 1}, origin=server.url)
    assert status in (403, 404)
    lp_post(server.url, "close", {"token": opened["token"]}, cookie=cookie, origin=server.url)
