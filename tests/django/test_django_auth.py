"""scope["session"] and scope["user"] from the cookie, login/logout, login_required (in-process)."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.test import Client, TestCase, override_settings
from djtest.consumers import Private, WhoAmI
from wsbridge_django.testing import DjangoCommunicator, session_cookie_for


def connect_whoami(**kwargs):
    comm = DjangoCommunicator(WhoAmI, "/ws/whoami/", **kwargs)
    accepted, _ = comm.connect()
    assert accepted
    return comm, comm.receive_json_from()


class SessionUserTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.ada = get_user_model().objects.create_user("ada", password="pw")

    def test_no_cookie_gives_an_anonymous_user_and_an_empty_session(self):
        comm, hello = connect_whoami()
        assert (hello["user"], hello["session_key"]) == (None, None)
        comm.disconnect()

    def test_force_login_user_reaches_the_scope_through_a_real_session_cookie(self):
        comm, hello = connect_whoami(user=self.ada)
        assert hello["user"] == "ada"
        assert hello["session_key"]
        comm.disconnect()

    def test_cookies_of_a_test_client_are_used(self):
        client = Client()
        assert client.login(username="ada", password="pw")
        comm, hello = connect_whoami(client=client)
        assert hello["user"] == "ada"
        comm.disconnect()

    def test_tampered_cookie_is_anonymous_with_a_log_line(self):
        cookie = session_cookie_for(self.ada)
        with self.assertLogs("wsbridge.django", logging.INFO) as logs:
            comm, hello = connect_whoami(cookies={"sessionid": cookie[:-4] + "zzzz"})
        assert hello["user"] is None
        assert any("names no live session" in line for line in logs.output)
        comm.disconnect()

    def test_expired_session_is_anonymous(self):
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        cookie = session_cookie_for(self.ada)
        Session.objects.filter(session_key=cookie).update(expire_date=timezone.now())
        comm, hello = connect_whoami(cookies={"sessionid": cookie})
        assert hello["user"] is None
        comm.disconnect()

    def test_user_logged_out_on_the_site_is_anonymous_on_the_next_handshake(self):
        client = Client()
        client.force_login(self.ada)
        cookie = client.cookies["sessionid"].value
        client.get("/logout/")
        comm, hello = connect_whoami(cookies={"sessionid": cookie})
        assert hello["user"] is None
        comm.disconnect()

    def test_login_over_the_socket_persists_for_the_sites_pages(self):
        client = Client()
        client.get("/whoami/")  # no session yet: make one with some data
        session = client.session
        session["visited"] = True
        session.save()
        client.cookies["sessionid"] = session.session_key
        comm, hello = connect_whoami(client=client)
        assert hello["user"] is None
        comm.send_json_to({"login": "ada"})
        assert comm.receive_json_from()["user"] == "ada"
        assert client.get("/whoami/").json() == {"user": "ada"}
        comm.send_json_to({"logout": True})
        assert comm.receive_json_from()["user"] is None
        assert client.get("/whoami/").json() == {"user": None}
        comm.disconnect()

    def test_session_changes_saved_by_a_consumer_reach_the_store(self):
        from django.contrib.sessions.backends.db import SessionStore

        comm, hello = connect_whoami(user=self.ada)
        comm.send_json_to({"set": "from the socket"})
        comm.receive_json_from()
        assert SessionStore(hello["session_key"])["note"] == "from the socket"
        comm.disconnect()


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
class SignedCookieSessionTests(TestCase):
    def test_signed_cookie_session_gives_the_user(self):
        ada = get_user_model().objects.create_user("ada")
        comm, hello = connect_whoami(user=ada)
        assert hello["user"] == "ada"
        comm.disconnect()

    def test_tampered_signed_cookie_is_anonymous(self):
        ada = get_user_model().objects.create_user("ada")
        cookie = session_cookie_for(ada)
        comm, hello = connect_whoami(cookies={"sessionid": cookie.replace(":", ":x", 1)})
        assert hello["user"] is None
        comm.disconnect()


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache")
class CacheSessionTests(TestCase):
    def test_cache_session_gives_the_user(self):
        ada = get_user_model().objects.create_user("ada")
        comm, hello = connect_whoami(user=ada)
        assert hello["user"] == "ada"
        comm.disconnect()


class LoginRequiredTests(TestCase):
    def test_anonymous_handshake_is_refused_with_a_log_line(self):
        with self.assertLogs("wsbridge.django", logging.INFO) as logs:
            comm = DjangoCommunicator(Private, "/ws/private/")
            accepted, _ = comm.connect()
        assert not accepted
        assert any("login required" in line for line in logs.output)

    def test_logged_in_user_is_accepted(self):
        ada = get_user_model().objects.create_user("ada")
        comm = DjangoCommunicator(Private, "/ws/private/", user=ada)
        assert comm.connect()[0]
        assert comm.receive_json_from() == {"hello": "ada"}
        comm.disconnect()


class OriginTests(TestCase):
    def test_foreign_origin_is_refused_with_a_log_line(self):
        with self.assertLogs("wsbridge.django", logging.WARNING) as logs:
            comm = DjangoCommunicator(WhoAmI, "/ws/whoami/", origin="https://evil.example.com")
            accepted, _ = comm.connect()
        assert not accepted
        assert any("evil.example.com" in line and "not allowed" in line for line in logs.output)

    def test_allowed_host_origins_are_accepted(self):
        for origin in ("http://testserver", "https://app.example.test", "http://127.0.0.1:8000"):
            comm = DjangoCommunicator(WhoAmI, "/ws/whoami/", origin=origin)
            assert comm.connect()[0], origin
            comm.disconnect()

    @override_settings(WSBRIDGE={"ALLOWED_ORIGINS": ["https://partner.example.org"]})
    def test_allowed_origins_setting_replaces_allowed_hosts(self):
        comm = DjangoCommunicator(WhoAmI, "/ws/whoami/", origin="https://partner.example.org")
        assert comm.connect()[0]
        comm.disconnect()
        comm = DjangoCommunicator(WhoAmI, "/ws/whoami/", origin="http://testserver")
        assert not comm.connect()[0]
