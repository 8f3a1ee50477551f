"""wsbridge.identity without a server: names, the HMAC codec, token checks on the memory layer."""

from __future__ import annotations

import time

import pytest

from wsbridge.identity import (
    ConnectTokens,
    HmacTokenCodec,
    TokenError,
    redact,
    revoke_user,
    session_group,
    user_group,
    user_id,
)
from wsbridge.layers.base import validate_group_name
from wsbridge.layers.memory import MemoryLayer


class Anonymous:
    is_authenticated = False
    pk = 5


class Member:
    is_authenticated = True
    pk = 42


def test_user_ids_and_group_names():
    assert user_id(7) == "7" and user_id("alice") == "alice" and user_id(Member()) == "42"
    assert user_id(None) is None and user_id(Anonymous()) is None and user_id("") is None
    assert user_group(Member()) == "wsbridge.user.42"
    odd = user_group("ada@example.com")  # not a valid group name as it is: hashed
    assert odd.startswith("wsbridge.user.h") and validate_group_name(odd) == odd
    assert user_group("ada@example.com") == odd
    assert validate_group_name(user_group("x" * 300))
    assert session_group("key1") != session_group("key2")
    assert "key1" not in session_group("key1")
    with pytest.raises(ValueError):
        user_group(Anonymous())
    with pytest.raises(TypeError):
        user_id(True)


def tokens(**kwargs) -> ConnectTokens:
    return ConnectTokens(
        HmacTokenCodec("unit-test-secret-0123456789"),
        audience="unit",
        layer=MemoryLayer(),
        **kwargs,
    )


def test_a_token_round_trips_once():
    t = tokens()
    token = t.issue("alice", session_ref="sess")
    claims = t.verify(token)
    assert claims["sub"] == "alice" and claims["ses"] == session_group("sess")
    with pytest.raises(TokenError) as err:
        t.verify(token)
    assert err.value.kind == "replayed" and token not in str(err.value)
    assert t.counters == {"accepted": 1, "replayed": 1}


@pytest.mark.parametrize(
    "mangle,kind",
    [
        (lambda tok: tok[:-1] + ("A" if tok[-1] != "A" else "B"), "forged"),
        (lambda tok: "x" + tok, "forged"),
        (lambda tok: tok.replace(".", ""), "malformed"),
        (lambda tok: "", "malformed"),
        (lambda tok: "a" * 5000, "malformed"),
    ],
)
def test_tampered_tokens_are_refused_by_kind(mangle, kind):
    t = tokens()
    with pytest.raises(TokenError) as err:
        t.verify(mangle(t.issue("alice")))
    assert err.value.kind == kind


def test_expired_other_audience_other_key_and_revoked():
    t = tokens(ttl=0.05)
    token = t.issue("bob")
    time.sleep(0.1)
    with pytest.raises(TokenError, match="expired"):
        t.verify(token)
    other = ConnectTokens(
        HmacTokenCodec("unit-test-secret-0123456789"), audience="elsewhere", layer=t.layer
    ).issue("bob")
    with pytest.raises(TokenError, match="audience"):
        tokens().verify(other)
    foreign = ConnectTokens(HmacTokenCodec("another-secret-0123456789"), audience="unit").issue("b")
    with pytest.raises(TokenError, match="forged"):
        tokens().verify(foreign)
    t = tokens()
    old = t.issue("bob")
    revoke_user("bob", "test", layer=t.layer)
    with pytest.raises(TokenError, match="revoked"):
        t.verify(old)
    time.sleep(0.01)
    assert t.verify(t.issue("bob"))["sub"] == "bob"


def test_the_user_loader_decides_and_short_secrets_are_refused():
    t = tokens(user_loader=lambda uid, claims: None if uid == "banned" else {"id": uid})
    assert t.load_user(t.verify(t.issue("ok"))) == {"id": "ok"}
    with pytest.raises(TokenError, match="revoked"):
        t.load_user(t.verify(t.issue("banned")))
    with pytest.raises(ValueError):
        HmacTokenCodec("short")


def test_access_tokens_are_redacted_from_log_lines():
    line = 'GET /ws/?a=1&access_token=abc.def&b=2 HTTP/1.1" 101'
    assert redact(line) == 'GET /ws/?a=1&access_token=[redacted]&b=2 HTTP/1.1" 101'
    assert redact("GET /ws/?access_token=x") == "GET /ws/?access_token=[redacted]"
