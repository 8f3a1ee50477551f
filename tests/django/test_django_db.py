"""Database handling around consumer calls (in-process; PostgreSQL: test_django_postgres.py)."""

from __future__ import annotations

import contextlib
import logging
from unittest import mock

import pytest
from django.db import connection
from django.test import TestCase, TransactionTestCase
from djtest.consumers import DbConsumer, Echo, router, touch_note
from djtest.models import Note
from wsbridge_django import db as wsdb
from wsbridge_django.routing import get_router
from wsbridge_django.signals import consumer_finished, consumer_started
from wsbridge_django.testing import DjangoCommunicator

from wsbridge.consumers.message import Message


@contextlib.contextmanager
def spy_on_close():
    """Record the alias of every database connection closed meanwhile, in any greenlet."""
    from django.db import connections

    wrapper_class = type(connections["default"])
    original = wrapper_class.close
    closed = []

    def close(self):
        closed.append(self.alias)
        return original(self)

    with mock.patch.object(wrapper_class, "close", close):
        yield closed


class TestCaseTransactionTests(TestCase):
    def test_consumer_sees_rows_the_test_created_inside_its_transaction(self):
        Note.objects.create(title="made by the test")
        comm = DjangoCommunicator(DbConsumer, "/ws/db/")
        assert comm.connect()[0]
        comm.send_json_to({})
        assert comm.receive_json_from()["notes"] == 1
        comm.send_json_to({"create": "made by the consumer"})
        assert comm.receive_json_from()["notes"] == 2
        assert Note.objects.filter(title="made by the consumer").exists()
        comm.disconnect()

    def test_a_database_error_closes_that_connection_with_1011_and_a_log_line_only(self):
        other = DjangoCommunicator(Echo, "/ws/echo/")
        assert other.connect()[0]
        comm = DjangoCommunicator(DbConsumer, "/ws/db/")
        assert comm.connect()[0]
        with self.assertLogs("wsbridge.consumers", logging.ERROR) as logs:
            comm.send_json_to({"fail": True})
            assert comm.receive_close() == 1011
        assert any("1011" in line and "DbConsumer" in line for line in logs.output)
        other.send_to(text_data="still here")
        assert other.receive_from() == "still here"
        other.disconnect()


class ConnectionLifetimeTests(TransactionTestCase):
    def test_connections_opened_by_a_consumer_call_are_closed_after_it(self):
        # The consumer runs in its own greenlet, with its own connection when
        # the process is monkey-patched (and this thread's when not): spy on
        # the class. (An in-memory SQLite connection survives close();
        # PostgreSQL's real reconnects are checked in test_django_postgres.py.)
        comm = DjangoCommunicator(DbConsumer, "/ws/db/")
        assert comm.connect()[0]
        with spy_on_close() as closed:
            comm.send_json_to({"create": "x"})
            assert comm.receive_json_from()["notes"] == 1
            comm.disconnect()
        assert "default" in closed

    def test_background_channel_consumers_get_the_same_handling(self):
        note = Note.objects.create(title="t")
        started, finished = [], []
        consumer_started.connect(
            lambda **kw: started.append(kw["message_type"]), weak=False, dispatch_uid="t1"
        )
        consumer_finished.connect(
            lambda **kw: finished.append(kw["message_type"]), weak=False, dispatch_uid="t2"
        )
        try:
            func = get_router().channel_consumer("djtest.touch")
            assert func is not None and func is not touch_note
            with spy_on_close() as closed:
                func(Message({"pk": note.pk, "body": "touched"}, "djtest.touch", None))
        finally:
            consumer_started.disconnect(dispatch_uid="t1")
            consumer_finished.disconnect(dispatch_uid="t2")
        assert "default" in closed
        assert Note.objects.get(pk=note.pk).body == "touched"
        assert started == finished == ["djtest.touch"]


@pytest.mark.django_db
def test_pytest_django_db_fixture_works_with_the_communicator(django_user_model):
    ada = django_user_model.objects.create_user("ada")
    Note.objects.create(title="pytest", owner=ada)
    comm = DjangoCommunicator(router, "/ws/db/", user=ada)
    assert comm.connect()[0]
    comm.send_json_to({})
    assert comm.receive_json_from()["notes"] == 1
    comm.disconnect()


def test_close_old_connections_leaves_a_connection_inside_a_transaction_alone(db):
    with db_atomic():
        Note.objects.count()
        wsdb.close_old_connections()
        wsdb.release_connections()
        assert connection.connection is not None


def db_atomic():
    from django.db import transaction

    return transaction.atomic()
