"""Data binding: saves and deletes go to the instance's groups; inbound changes are checked."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import TestCase
from djtest.consumers import Notes
from djtest.models import Note
from wsbridge_django.testing import DjangoCommunicator


def wait_until(predicate, timeout=5.0):
    """Yield to the consumer greenlets until ``predicate()`` holds."""
    import time

    import gevent

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


class BindingTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        users = get_user_model().objects
        cls.ada = users.create_user("ada")
        cls.bob = users.create_user("bob")

    def listen(self, board, user=None):
        comm = DjangoCommunicator(Notes, f"/ws/notes/{board}/", user=user)
        comm.scope["url_route"] = {"args": (), "kwargs": {"board": board}}
        assert comm.connect()[0]
        return comm

    def test_create_update_delete_are_broadcast_to_the_instances_group_only(self):
        main, other = self.listen("main"), self.listen("other")
        with self.captureOnCommitCallbacks(execute=True):
            note = Note.objects.create(title="hello", board="main")
        created = main.receive_json_from()
        assert created == {
            "stream": "notes",
            "payload": {
                "action": "create",
                "pk": note.pk,
                "model": "djtest.note",
                "data": {"title": "hello", "board": "main", "body": ""},
            },
        }
        with self.captureOnCommitCallbacks(execute=True):
            note.title = "hello again"
            note.save()
        assert main.receive_json_from()["payload"]["action"] == "update"
        with self.captureOnCommitCallbacks(execute=True):
            note.delete()
        deleted = main.receive_json_from()["payload"]
        assert deleted["action"] == "delete" and deleted["pk"] == created["payload"]["pk"]
        assert other.receive_nothing()
        main.disconnect()
        other.disconnect()

    def test_moving_an_instance_deletes_it_from_the_old_group_and_creates_it_in_the_new(self):
        note = Note.objects.create(title="moving", board="main")
        main, other = self.listen("main"), self.listen("other")
        with self.captureOnCommitCallbacks(execute=True):
            note.board = "other"
            note.save()
        assert main.receive_json_from()["payload"]["action"] == "delete"
        assert other.receive_json_from()["payload"]["action"] == "create"
        main.disconnect()
        other.disconnect()

    def test_nothing_is_sent_when_the_transaction_rolls_back(self):
        from django.db import transaction

        main = self.listen("main")
        with self.captureOnCommitCallbacks(execute=True):
            try:
                with transaction.atomic():
                    Note.objects.create(title="never", board="main")
                    raise RuntimeError("rollback")
            except RuntimeError:
                pass
        assert main.receive_nothing()
        main.disconnect()

    def test_inbound_create_by_a_logged_in_user_is_saved_and_broadcast(self):
        comm = self.listen("main", user=self.ada)
        with self.captureOnCommitCallbacks(execute=True):
            comm.send_json_to(
                {"stream": "notes", "payload": {"action": "create", "data": {"title": "mine"}}}
            )
            wait_until(lambda: Note.objects.filter(title="mine").exists())
        event = comm.receive_json_from()
        assert event["payload"]["action"] == "create"
        assert Note.objects.get(title="mine").owner == self.ada
        comm.disconnect()

    def test_inbound_changes_go_through_has_permission(self):
        note = Note.objects.create(title="ada's", board="main", owner=self.ada)
        anonymous, bob = self.listen("main"), self.listen("main", user=self.bob)
        anonymous.send_json_to(
            {"stream": "notes", "payload": {"action": "create", "data": {"title": "x"}}}
        )
        assert anonymous.receive_json_from()["payload"] == {
            "error": "permission denied",
            "action": "create",
        }
        bob.send_json_to({"stream": "notes", "payload": {"action": "delete", "pk": note.pk}})
        assert bob.receive_json_from()["payload"]["error"] == "permission denied"
        assert Note.objects.filter(pk=note.pk).exists()
        anonymous.disconnect()
        bob.disconnect()

    def test_owner_may_update_and_invalid_or_unknown_fields_are_refused(self):
        note = Note.objects.create(title="ada's", board="main", owner=self.ada)
        comm = self.listen("main", user=self.ada)
        comm.send_json_to(
            {
                "stream": "notes",
                "payload": {"action": "update", "pk": note.pk, "data": {"owner": 2}},
            }
        )
        assert "unknown field" in comm.receive_json_from()["payload"]["error"]
        comm.send_json_to(
            {
                "stream": "notes",
                "payload": {"action": "update", "pk": note.pk, "data": {"title": ""}},
            }
        )
        assert "invalid data" in comm.receive_json_from()["payload"]["error"]
        with self.captureOnCommitCallbacks(execute=True):
            comm.send_json_to(
                {
                    "stream": "notes",
                    "payload": {"action": "update", "pk": note.pk, "data": {"body": "b"}},
                }
            )
            wait_until(lambda: Note.objects.get(pk=note.pk).body == "b")
        update = comm.receive_json_from()["payload"]
        assert update["action"] == "update" and update["data"]["body"] == "b"
        assert Note.objects.get(pk=note.pk).title == "ada's"
        comm.send_json_to({"stream": "bogus", "payload": {}})
        assert "unknown stream" in comm.receive_json_from()["payload"]["error"]
        comm.disconnect()
