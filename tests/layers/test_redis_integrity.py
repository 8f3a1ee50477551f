"""Integrity (Fernet signing/encryption, key rotation) and bad input in Redis."""

from __future__ import annotations

import logging

import msgpack
import pytest
import redis

from wsbridge.exceptions import ConfigurationError, MessageTooLarge
from wsbridge.layers import build_layer
from wsbridge.layers.redis import RedisLayer

from .conformance import Collector, wait_for
from .redis_helpers import SHARED_REDIS, make_layer_factory

pytestmark = pytest.mark.redis


@pytest.fixture
def make():
    with make_layer_factory() as factory:
        yield factory


def raw_client() -> redis.Redis:
    return redis.Redis.from_url(SHARED_REDIS)


# -- encryption and signing -------------------------------------------------------------


def test_encrypted_messages_travel_and_are_unreadable_in_redis(make):
    a = make(symmetric_encryption_keys=["k1"])
    b = make(symmetric_encryption_keys=["k1"])
    a.send("secret.jobs", {"type": "job", "card": "4111-1111"})
    client = raw_client()
    stored = client.lrange(f"{make.prefix}:1:chan:secret.jobs", 0, -1)
    assert stored and all(b"4111" not in item for item in stored)
    assert b.receive("secret.jobs", timeout=2) == {"type": "job", "card": "4111-1111"}


def test_a_writer_without_the_key_cannot_forge_messages(make, caplog):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    signed = make(symmetric_encryption_keys=["k1"])
    forger = make()  # same prefix, no key
    wrong_key = make(symmetric_encryption_keys=["k2"])
    channel = signed.new_channel()
    got = Collector()
    signed.attach(channel, got)
    signed.group_add("room", channel)
    forger.send(channel, {"type": "forged"})
    forger.group_send("room", {"type": "forged"})
    wrong_key.group_send("room", {"type": "forged"})
    signed.send(channel, {"type": "genuine"})
    assert got.wait(1) == [{"type": "genuine"}]
    wait_for(lambda: signed.counters["bad_items"] == 3)
    assert any("signature invalid" in r.getMessage() for r in caplog.records)


def test_a_signed_message_cannot_be_redirected_to_another_channel(make):
    layer = make(symmetric_encryption_keys=["k1"])
    layer.send("victim.a", {"type": "for a"})
    client = raw_client()
    item = client.lpop(f"{make.prefix}:1:chan:victim.a")
    # An attacker rewrites where the item says it goes and queues it for b.
    header, body = item[:17], msgpack.unpackb(item[17:], raw=True)
    body[0] = b"victim.b"
    client.rpush(f"{make.prefix}:1:chan:victim.b", header + msgpack.packb(body))
    assert layer.receive("victim.b", timeout=0.3) is None
    assert layer.counters["bad_items"] == 1


def test_key_rotation_accepts_old_keys_and_signs_with_the_first(make):
    old = make(symmetric_encryption_keys=["old"])
    rotating = make(symmetric_encryption_keys=["new", "old"])
    new_only = make(symmetric_encryption_keys=["new"])
    old.send("rot", {"type": "from.old"})
    assert rotating.receive("rot", timeout=2) == {"type": "from.old"}
    rotating.send("rot", {"type": "from.rotating"})
    assert new_only.receive("rot", timeout=2) == {"type": "from.rotating"}
    rotating.send("rot", {"type": "again"})
    assert old.receive("rot", timeout=0.3) is None  # signed with "new" only


def test_keys_must_be_a_list():
    with pytest.raises(ConfigurationError, match="list"):
        RedisLayer(symmetric_encryption_keys="just-one-string")


# -- bad input ---------------------------------------------------------------------------


def test_a_message_too_large_raises_at_send(make):
    layer = make(max_message_size=1000)
    with pytest.raises(MessageTooLarge, match="1000"):
        layer.send("big", {"type": "x", "blob": b"x" * 2000})
    with pytest.raises(MessageTooLarge):
        layer.group_send("room", {"type": "x", "blob": b"x" * 2000})
    layer.send("big", {"type": "x", "blob": b"x" * 500})
    assert layer.receive("big", timeout=2)["blob"] == b"x" * 500


def test_an_unknown_serializer_is_a_clear_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown layer serializer 'yaml'.*json, msgpack"):
        RedisLayer(serializer="yaml")
    with pytest.raises(ConfigurationError, match="pickle"):
        from wsbridge.layers.serializers import register

        register("pickle", object)


def test_json_serializer_works_and_refuses_bytes(make):
    layer = make(serializer="json")
    layer.send("j", {"type": "x", "n": [1, 2]})
    assert layer.receive("j", timeout=2) == {"type": "x", "n": [1, 2]}
    with pytest.raises(TypeError, match="msgpack"):
        layer.send("j", {"type": "x", "raw": b"bytes"})


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        b"WB1D0000000000000",
        b"WB9D9999999999999xx",
        b"WB1D9999999999999\xc1\xc1",
        b"WB1X9999999999999\x90",
        b"WB1G9999999999999" + msgpack.packb([1, 2]),
    ],
)
def test_undecodable_bytes_in_an_inbox_are_logged_and_dropped_and_the_reader_lives(
    make, garbage, caplog
):
    caplog.set_level(logging.WARNING, "wsbridge.layers.redis")
    layer = make()
    channel = layer.new_channel()
    got = Collector()
    layer.attach(channel, got)
    raw_client().rpush(layout_inbox(layer), garbage)
    layer.send(channel, {"type": "after.garbage"})
    assert got.wait(1) == [{"type": "after.garbage"}]
    if garbage != b"WB1D0000000000000":  # that one is merely expired
        assert layer.counters["bad_items"] == 1
        assert any("undecodable" in r.getMessage() for r in caplog.records)
    assert layer.stats()["readers"] == 1


def layout_inbox(layer: RedisLayer) -> str:
    return layer.layout.inbox_keys()[0]


def test_undecodable_bytes_in_a_named_channel_are_dropped(make):
    layer = make()
    raw_client().rpush(f"{make.prefix}:1:chan:jobs", b"\x00garbage")
    layer.send("jobs", {"type": "ok"})
    assert layer.receive("jobs", timeout=2) == {"type": "ok"}
    assert layer.counters["bad_items"] == 1


def test_channels_redis_mode_drops_foreign_bytes_too():
    with make_layer_factory(compat="channels_redis") as make_compat:
        layer = make_compat()
        channel = layer.new_channel()
        got = Collector()
        layer.attach(channel, got)
        key = layer.layout.inbox_keys()[0]
        raw_client().zadd(key, {b"x" * 12 + b"\xc1not msgpack": 1e10})
        layer.send(channel, {"type": "fine"})
        assert got.wait(1) == [{"type": "fine"}]
        wait_for(lambda: layer.counters["bad_items"] == 1)


# -- settings -------------------------------------------------------------------------------


def test_channels_shaped_settings_build_a_redis_layer():
    layer = build_layer(
        {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    "redis://127.0.0.1:6379/0",
                    ("127.0.0.1", 6380),
                    {"address": "rediss://h:1"},
                    "unix:///tmp/r.sock",
                    "/tmp/other.sock",
                ],
                "prefix": "p",
                "expiry": 30,
                "group_expiry": 600,
                "capacity": 50,
                "channel_capacity": {"http.*": 10},
            },
        }
    )
    try:
        assert isinstance(layer, RedisLayer)
        assert [s.name for s in layer.shards] == [
            "redis://127.0.0.1:6379/0",
            "redis://127.0.0.1:6380/0",
            "rediss://h:1",
            "unix:///tmp/r.sock",
            "unix:///tmp/other.sock",
        ]
        assert layer.get_capacity("http.request") == 10 and layer.expiry == 30
    finally:
        layer.close()


def test_sentinel_settings_are_accepted_and_a_password_never_shows():
    layer = RedisLayer(sentinels=[("127.0.0.1", 26379)], master_name="mymaster")
    secret = RedisLayer(hosts=["redis://:s3cret@127.0.0.1:6379/0"])
    try:
        assert layer.shards[0].name == "sentinel:mymaster"
        assert "s3cret" not in secret.shards[0].name
    finally:
        layer.close()
        secret.close()


@pytest.mark.parametrize("hosts", ["redis://one-string", [42], []])
def test_bad_hosts_are_configuration_errors(hosts):
    with pytest.raises(ConfigurationError):
        RedisLayer(hosts=hosts)


def test_a_layer_finds_its_master_through_a_real_sentinel(redis_servers, tmp_path):
    import subprocess

    from .redis_server import RedisServer, free_port

    master = redis_servers()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor wsbmaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: RedisServer(tmp_path / "probe", port=port)._answers(), timeout=10)
        layer = RedisLayer(sentinels=[("127.0.0.1", port)], master_name="wsbmaster", prefix="sent")
        try:
            layer.send("via.sentinel", {"type": "x"})
            assert layer.receive("via.sentinel", timeout=2) == {"type": "x"}
            assert raw_key_count(master, "sent:1:*") == 0
        finally:
            layer.close()
    finally:
        sentinel.terminate()
        sentinel.wait(10)


def raw_key_count(server, pattern: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return len(list(client.scan_iter(match=pattern)))
    finally:
        client.close()
