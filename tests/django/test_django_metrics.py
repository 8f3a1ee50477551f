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
