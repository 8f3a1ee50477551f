"""The metrics view: staff or the bearer token only; the numbers of wsbridge.metrics."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import Client, TestCase, override_settings
from djtest.consumers import WhoAmI
from wsbridge_django.testing import DjangoCommunicator


class MetricsViewTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        users = get_user_model().objects
        cls.staff = users.create_user("boss", password="pw", is_staff=True)
        cls.plain = users.create_user("bob", password="pw")

    def test_anonymous_and_plain_users_are_refused(self):
        assert Client().get("/metrics/").status_code == 403
        client = Client()
        client.force_login(self.plain)
        assert client.get("/metrics/").status_code == 403

    @override_settings(WSBRIDGE={"METRICS_TOKEN": "t0ken-for-tests"})
    def test_the_bearer_token_reads_and_a_wrong_one_does_not(self):
        wrong = Client().get("/metrics/", HTTP_AUTHORIZATION="Bearer nope")
        assert wrong.status_code == 403
        answer = Client().get("/metrics/", HTTP_AUTHORIZATION="Bearer t0ken-for-tests")
        assert answer.status_code == 200
        assert b"# TYPE wsbridge_connections gauge" in answer.content

    def test_staff_sees_consumer_handler_timings(self):
        from wsbridge import metrics

        metrics.enable()
        comm = DjangoCommunicator(WhoAmI, "/ws/whoami/")
        accepted, _ = comm.connect()
        assert accepted
        comm.receive_json_from()
        comm.disconnect()
        client = Client()
        client.force_login(self.staff)
        answer = client.get("/metrics/")
        assert answer.status_code == 200
        assert answer["Content-Type"].startswith("text/plain")
        assert b'wsbridge_consumer_handler_seconds_count{consumer="WhoAmI"}' in answer.content


class StatusPageTests(TestCase):
    """The staff-only page view and its consumer's staff check (in-process)."""

    @classmethod
    def setUpTestData(cls):
        users = get_user_model().objects
        cls.staff = users.create_user("chief", password="pw", is_staff=True)
        cls.plain = users.create_user("carl", password="pw")

    @override_settings(WSBRIDGE={"OPTIONS": {"status_path": "/_wsbridge/status"}})
    def test_only_staff_get_the_page_and_it_points_at_the_status_websocket(self):
        assert Client().get("/wsbridge/status/").status_code == 403
        plain = Client()
        plain.force_login(self.plain)
        assert plain.get("/wsbridge/status/").status_code == 403
        staff = Client()
        staff.force_login(self.staff)
        answer = staff.get("/wsbridge/status/")
        assert answer.status_code == 200
        assert b'"/_wsbridge/status/ws"' in answer.content
        assert b'<table id="processes">' in answer.content

    def test_the_status_websocket_lets_staff_in_and_refuses_others(self):
        from wsbridge.statuspage import consumer_for

        consumer = consumer_for(None, interval=0.2)
        refused = DjangoCommunicator(consumer, "/_wsbridge/status/ws", user=self.plain)
        accepted, _ = refused.connect()
        assert not accepted
        comm = DjangoCommunicator(consumer, "/_wsbridge/status/ws", user=self.staff)
        accepted, _ = comm.connect()
        assert accepted
        snapshot = comm.receive_json_from(timeout=5)
        assert snapshot["processes"] and "groups" in snapshot and "drops" in snapshot
        comm.disconnect()
