"""The presence and history conformance suites: what both layers must do.

As with :mod:`tests.layers.conformance`, a backend's module subclasses these
classes and gives a ``make_layer`` fixture taking layer options (here also
``groups``, ``presence_info_limit``, ``presence_lease``). Two layers made by
one fixture act as two processes sharing one store when the backend is
distributed; tests that need that ask ``self.shared`` first.
"""

from __future__ import annotations

from typing import Any

import pytest

from wsbridge.layers.history import Position

from .conformance import Collector, wait_for

GROUPS = {
    "news": {"history": 5, "history_ttl": 60},
    "chat.*": {"history": 50, "presence": True},
    "quiet.*": {"presence": False},
}


def _types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def pair(suite: Any, make_layer: Any, groups: Any = GROUPS) -> tuple[Any, Any]:
    """Two layers acting as two processes when the backend is shared, else one layer twice."""
    first = make_layer(groups=groups)
    return first, (make_layer(groups=groups) if suite.shared else first)


class HistoryConformance:
    """History, positions and recovery (docs/topics/recovery.rst)."""

    #: True when two layers from make_layer share their store (two processes).
    shared = False

    @pytest.fixture
    def hlayer(self, make_layer):
        return make_layer(groups=GROUPS)

    def test_group_sends_to_a_history_group_get_increasing_positions_in_one_epoch(self, hlayer):
        got = Collector()
        channel = hlayer.new_channel()
        hlayer.attach(channel, got)
        hlayer.group_add("news", channel)
        for i in range(3):
            hlayer.group_send("news", {"type": "n", "i": i})
        messages = got.wait(3)
        positions = [Position.parse(m["position"]) for m in messages]
        assert all(m["group"] == "news" for m in messages)
        assert len({p.epoch for p in positions}) == 1
        assert [p.offset for p in positions] == [positions[0].offset + i for i in range(3)]

    def test_plain_groups_get_no_position(self, hlayer):
        got = Collector()
        channel = hlayer.new_channel()
        hlayer.attach(channel, got)
        hlayer.group_add("plain", channel)
        hlayer.group_send("plain", {"type": "n"})
        assert "position" not in got.wait(1)[0]
        with pytest.raises(ValueError, match="no history"):
            hlayer.history("plain")

    def test_history_keeps_the_last_n_in_order_with_the_latest_position(self, hlayer):
        for i in range(8):
            hlayer.group_send("news", {"type": "n", "i": i})
        result = hlayer.history("news")
        assert [m["i"] for m in result.messages] == [3, 4, 5, 6, 7]
        assert result.recovered is True
        assert str(result.position) == result.messages[-1]["position"]

    def test_history_since_a_retained_position_returns_what_came_after(self, hlayer):
        for i in range(4):
            hlayer.group_send("news", {"type": "n", "i": i})
        second = hlayer.history("news").messages[1]["position"]
        result = hlayer.history("news", since=second)
        assert [m["i"] for m in result.messages] == [2, 3] and result.recovered

    def test_history_since_the_latest_position_is_empty_and_recovered(self, hlayer):
        hlayer.group_send("news", {"type": "n"})
        latest = hlayer.history("news").position
        result = hlayer.history("news", since=latest)
        assert result.messages == [] and result.recovered

    def test_a_trimmed_position_is_not_recovered(self, hlayer):
        hlayer.group_send("news", {"type": "n", "i": 0})
        first = hlayer.history("news").messages[0]["position"]
        for i in range(1, 8):
            hlayer.group_send("news", {"type": "n", "i": i})
        result = hlayer.history("news", since=first)
        assert result.recovered is False and result.messages == []

    @pytest.mark.parametrize(
        "forged",
        ["nope", "", "x:y", "abc:-1", "a" * 80, "00000000:99999999999999999999", "other:1"],
    )
    def test_forged_or_foreign_positions_are_not_recovered(self, hlayer, forged):
        hlayer.group_send("news", {"type": "n"})
        result = hlayer.history("news", since=forged)
        assert result.recovered is False and result.messages == []

    def test_a_future_position_is_not_recovered(self, hlayer):
        hlayer.group_send("news", {"type": "n"})
        latest = hlayer.history("news").position
        future = Position(latest.epoch, latest.offset + 5)
        assert hlayer.history("news", since=future).recovered is False

    def test_another_groups_position_never_returns_that_groups_messages(self, make_layer):
        layer = make_layer(groups={"a": {"history": 10}, "b": {"history": 10}})
        layer.group_send("a", {"type": "secret"})
        layer.group_send("b", {"type": "public"})
        position_of_a = layer.history("a").position
        result = layer.history("b", since=position_of_a)
        assert result.recovered is False
        assert all(m["type"] != "secret" for m in result.messages)

    def test_history_ttl_drops_old_messages(self, make_layer):
        layer = make_layer(groups={"brief": {"history": 10, "history_ttl": 0.3}})
        layer.group_send("brief", {"type": "n"})
        old = layer.history("brief").position
        layer.group_send("brief", {"type": "n"})
        import time

        time.sleep(0.5)
        assert layer.history("brief").messages == []
        assert layer.history("brief", since=old).recovered is False

    def test_presence_events_are_not_kept_in_history(self, make_layer):
        layer = make_layer(groups={"chat.*": {"history": 10, "presence": True}})
        channel = layer.new_channel()
        layer.attach(channel, Collector())
        layer.group_add("chat.a", channel)
        layer.presence_track("chat.a", channel, user="u1")
        assert layer.history("chat.a").messages == []

    def test_recovery_delivers_a_notice_then_the_missed_messages_then_live_ones(self, make_layer):
        publisher, layer = pair(self, make_layer)
        for i in range(3):
            publisher.group_send("news", {"type": "n", "i": i})
        seen = publisher.history("news").messages[0]["position"]
        got = Collector()
        channel = layer.new_channel()
        layer.attach(channel, got)
        layer.request_recovery(channel, {"news": seen})
        layer.group_add("news", channel)
        publisher.group_send("news", {"type": "n", "i": 3})
        messages = got.wait(4)
        assert messages[0]["type"] == "history.recovery"
        assert messages[0]["recovered"] is True and messages[0]["missed"] == 2
        assert [m["i"] for m in messages[1:]] == [1, 2, 3]

    def test_recovery_from_a_lost_position_says_so_and_replays_nothing(self, make_layer):
        layer = make_layer(groups=GROUPS)
        layer.group_send("news", {"type": "n"})
        got = Collector()
        channel = layer.new_channel()
        layer.attach(channel, got)
        layer.request_recovery(channel, {"news": "deadbeef:1"})
        layer.group_add("news", channel)
        notice = got.wait(1)[0]
        assert notice["type"] == "history.recovery" and notice["recovered"] is False
        assert notice["position"] == str(layer.history("news").position)
        layer.group_send("news", {"type": "live"})
        assert _types(got.wait(2)) == ["history.recovery", "live"]

    def test_recovery_is_asked_only_for_the_groups_named(self, make_layer):
        layer = make_layer(groups=GROUPS)
        got = Collector()
        channel = layer.new_channel()
        layer.attach(channel, got)
        layer.request_recovery(channel, {"other": "x:1"})
        layer.group_add("news", channel)
        layer.group_send("news", {"type": "live"})
        assert _types(got.wait(1)) == ["live"]

    def test_too_many_groups_to_recover_is_refused(self, hlayer):
        with pytest.raises(ValueError, match="at most"):
            hlayer.request_recovery("c", {f"news{i}": "x:1" for i in range(65)})

    def test_concurrent_publishing_during_recovery_loses_and_repeats_nothing(self, make_layer):
        import gevent

        publisher, layer = pair(self, make_layer)
        publisher.group_send("chat.room", {"type": "n", "i": 0})
        seen = publisher.history("chat.room").position
        sent = []

        def publish() -> None:
            for i in range(1, 41):
                publisher.group_send("chat.room", {"type": "n", "i": i})
                sent.append(i)
                gevent.sleep(0)

        worker = gevent.spawn(publish)
        gevent.sleep(0)
        got = Collector()
        channel = layer.new_channel()
        layer.attach(channel, got)
        layer.request_recovery(channel, {"chat.room": str(seen)})
        layer.group_add("chat.room", channel)
        worker.join(10)
        wait_for(lambda: [m.get("i") for m in got.messages if m["type"] == "n"][-1:] == [40])
        numbers = [m["i"] for m in got.messages if m["type"] == "n"]
        assert numbers == list(range(1, 41))


class PresenceConformance:
    """Presence entries and join/leave events (docs/topics/presence.rst)."""

    @pytest.fixture
    def player(self, make_layer):
        return make_layer(groups=GROUPS)

    def _member(self, layer, group, collector=None):
        channel = layer.new_channel()
        layer.attach(channel, collector if collector is not None else Collector())
        layer.group_add(group, channel)
        return channel

    def test_tracked_entries_are_listed_with_user_info_and_since(self, player):
        channel = self._member(player, "chat.a")
        assert player.presence_track("chat.a", channel, user="7", info={"name": "ann"}) is True
        (entry,) = player.presence("chat.a")
        assert (entry.channel, entry.user, entry.info) == (channel, "7", {"name": "ann"})
        assert entry.since > 0

    def test_untracking_removes_the_entry(self, player):
        channel = self._member(player, "chat.a")
        player.presence_track("chat.a", channel, user="7")
        assert player.presence_untrack("chat.a", channel) is True
        assert player.presence("chat.a") == []

    def test_tracking_again_updates_the_info_without_a_second_join(self, player):
        got = Collector()
        channel = self._member(player, "chat.a", got)
        assert player.presence_track("chat.a", channel, user="7", info={"v": 1})
        assert not player.presence_track("chat.a", channel, user="7", info={"v": 2})
        assert [e.info for e in player.presence("chat.a")] == [{"v": 2}]
        wait_for(lambda: got.messages)
        assert _types(got.messages) == ["presence.join"]

    def test_join_and_leave_events_are_grouped_by_user(self, player):
        got = Collector()
        watcher = self._member(player, "chat.a", got)
        first, second = self._member(player, "chat.a"), self._member(player, "chat.a")
        player.presence_track("chat.a", first, user="u1")
        player.presence_track("chat.a", second, user="u1")
        player.presence_untrack("chat.a", first)
        player.presence_untrack("chat.a", second)
        wait_for(lambda: len(got.messages) >= 2)
        assert _types(got.messages) == ["presence.join", "presence.leave"]
        assert {m["user"] for m in got.messages} == {"u1"}
        first_seq, second_seq = (m["seq"] for m in got.messages)
        assert first_seq >= 1 and second_seq == first_seq + 1
        del watcher

    def test_anonymous_connections_are_each_their_own_user(self, player):
        got = Collector()
        self._member(player, "chat.a", got)
        first, second = self._member(player, "chat.a"), self._member(player, "chat.a")
        player.presence_track("chat.a", first)
        player.presence_track("chat.a", second)
        wait_for(lambda: len(got.messages) >= 2)
        assert _types(got.messages) == ["presence.join", "presence.join"]

    def test_events_only_in_groups_that_opt_in(self, player):
        got = Collector()
        self._member(player, "quiet.a", got)
        channel = self._member(player, "quiet.a")
        player.presence_track("quiet.a", channel, user="u1")
        player.group_send("quiet.a", {"type": "marker"})
        assert _types(got.wait(1)) == ["marker"]
        assert len(player.presence("quiet.a")) == 1

    def test_detach_untracks_and_sends_the_leave(self, player):
        got = Collector()
        self._member(player, "chat.a", got)
        channel = self._member(player, "chat.a")
        player.presence_track("chat.a", channel, user="u1")
        player.detach(channel)
        wait_for(lambda: len(got.messages) >= 2)
        assert _types(got.messages) == ["presence.join", "presence.leave"]
        assert player.presence("chat.a") == []

    def test_group_discard_untracks(self, player):
        channel = self._member(player, "chat.a")
        player.presence_track("chat.a", channel, user="u1")
        player.group_discard("chat.a", channel)
        assert player.presence("chat.a") == []

    def test_a_channel_that_did_not_join_cannot_be_tracked(self, player):
        channel = player.new_channel()
        player.attach(channel, Collector())
        with pytest.raises(PermissionError, match="not a member"):
            player.presence_track("chat.a", channel, user="u1")
        assert player.presence("chat.a") == []

    def test_info_over_the_limit_is_refused_at_track_time(self, make_layer):
        layer = make_layer(groups=GROUPS, presence_info_limit=64)
        channel = self._member(layer, "chat.a")
        with pytest.raises(ValueError, match="limit"):
            layer.presence_track("chat.a", channel, info={"bio": "x" * 100})
        with pytest.raises(TypeError):
            layer.presence_track("chat.a", channel, info={"when": object()})
        assert layer.presence("chat.a") == []
