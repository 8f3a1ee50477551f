"""Channels 1.x function consumers with the session decorators, through the project's router."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.test import TestCase
from djtest.consumers import router
from wsbridge_django.decorators import enforce_ordering
from wsbridge_django.testing import DjangoCommunicator


class DecoratorTests(TestCase):
    def test_channel_session_user_from_http_carries_the_user_to_every_message(self):
        ada = get_user_model().objects.create_user("ada")
        comm = DjangoCommunicator(router, "/v1/chat/", user=ada)
        assert comm.connect()[0]
        for i, text in enumerate(["one", "two", "three"]):
            comm.send_to(text_data=text)
            reply = json.loads(comm.receive_from())
            assert reply == {"greeting": "hello", "user": "ada", "order": i + 1, "echo": text}
        comm.disconnect()

    def test_anonymous_client_gets_an_anonymous_channel_session_user(self):
        comm = DjangoCommunicator(router, "/v1/chat/")
        assert comm.connect()[0]
        comm.send_to(text_data="hi")
        reply = json.loads(comm.receive_from())
        assert reply["greeting"] == "anon" and reply["user"] is None
        comm.disconnect()

    def test_http_session_is_none_without_a_cookie_and_set_with_one(self):
        comm = DjangoCommunicator(router, "/v1/plain/")
        assert comm.connect()[0]
        assert json.loads(comm.receive_from()) == {"has_session": False, "authenticated": False}
        comm.disconnect()
        ada = get_user_model().objects.create_user("ada")
        comm = DjangoCommunicator(router, "/v1/plain/", user=ada)
        assert comm.connect()[0]
        assert json.loads(comm.receive_from()) == {"has_session": True, "authenticated": True}
        comm.disconnect()

    def test_channel_session_lasts_as_long_as_the_connection_and_no_longer(self):
        comm = DjangoCommunicator(router, "/v1/plain/")
        comm.connect()
        comm.receive_from()
        replies = []
        for _ in range(3):
            comm.send_to(text_data="+1")
            replies.append(comm.receive_from())
        assert replies == ["1", "2", "3"]
        comm.disconnect()
        other = DjangoCommunicator(router, "/v1/plain/")
        other.connect()
        other.receive_from()
        other.send_to(text_data="+1")
        assert other.receive_from() == "1"
        other.disconnect()


def test_enforce_ordering_returns_the_consumer_unchanged_bare_or_called():
    def consumer(message):
        return message

    assert enforce_ordering(consumer) is consumer
    assert enforce_ordering(slight=True)(consumer) is consumer


def test_enforce_ordering_is_one_function_for_every_import_path():
    from wsbridge_django import sessions

    from wsbridge.consumers import message

    assert enforce_ordering is message.enforce_ordering
    assert sessions.enforce_ordering is message.enforce_ordering


class ChannelSessionAcrossChannelsTests(TestCase):
    """``channel_session`` lives in the session store, keyed by the reply channel (1.x)."""

    def background(self, reply_channel):
        from wsbridge_django.decorators import channel_session, channel_session_user

        from wsbridge.consumers.message import Message

        seen = {}

        @channel_session_user
        def consumer(message):
            seen["count"] = message.channel_session.get("count")
            seen["user"] = message.user.get_username() or None
            message.channel_session["from_background"] = True

        consumer(Message({"reply_channel": reply_channel}, "jobs.run", None))

        @channel_session
        def reader(message):
            seen["again"] = message.channel_session.get("from_background")

        reader(Message({"reply_channel": reply_channel}, "jobs.read", None))
        return seen

    def test_a_background_consumer_sees_the_connections_session_and_user(self):
        ada = get_user_model().objects.create_user("ada")
        comm = DjangoCommunicator(router, "/v1/chat/", user=ada)  # connect stores the user
        assert comm.connect()[0]
        plain = DjangoCommunicator(router, "/v1/plain/")
        plain.connect()
        plain.receive_from()
        plain.send_to(text_data="+1")
        assert plain.receive_from() == "1"
        assert self.background(plain.channel_name) == {"count": 1, "user": None, "again": True}
        assert self.background(comm.channel_name)["user"] == "ada"
        # the connection's own next message sees what the background consumer wrote
        plain.send_to(text_data="+1")
        assert plain.receive_from() == "2"
        comm.disconnect()
        plain.disconnect()

    def test_without_a_reply_channel_the_decorator_says_so(self):
        import pytest
        from wsbridge_django.decorators import channel_session

        from wsbridge.consumers.message import Message

        with pytest.raises(ValueError, match="has no reply_channel"):
            channel_session(lambda message: None)(Message({}, "jobs.run", None))

    def test_signed_cookie_sessions_keep_it_with_the_connection_and_warn_once(self):
        from django.test import override_settings

        engine = "django.contrib.sessions.backends.signed_cookies"
        with override_settings(SESSION_ENGINE=engine), self.assertLogs("wsbridge.django") as logs:
            plain = DjangoCommunicator(router, "/v1/plain/")
            plain.connect()
            plain.receive_from()
            for expected in ("1", "2"):
                plain.send_to(text_data="+1")
                assert plain.receive_from() == expected
            for _ in range(2):
                assert self.background(plain.channel_name)["count"] is None
            plain.disconnect()
        warned = [line for line in logs.output if "signed-cookie sessions" in line]
        assert len(warned) == 2  # once per background channel (jobs.run, jobs.read)
