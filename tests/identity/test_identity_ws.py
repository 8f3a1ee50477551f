"""Per-user sends, revocation, kicks and connect tokens through two real processes on Redis."""

from __future__ import annotations

import secrets
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as _connect

from tests.identity.conftest import get, wait_for

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning"),
]


def uid() -> str:
    return "u" + secrets.token_hex(4)


def open_ws(server, user=None, token=None, *, via="query", subprotocols=None):
    path = "/ws/me/"
    headers = {}
    protocols = list(subprotocols or [])
    if user is not None:
        headers["Cookie"] = f"uid={user}"
    if token is not None and via == "query":
        path += "?access_token=" + token
    elif token is not None:
        protocols = ["wsbridge.bearer", "wsbridge.token." + token, *protocols]
    return _connect(
        server.ws_url(path),
        additional_headers=headers,
        subprotocols=protocols or None,
        open_timeout=5,
    )


def closed_code(ws, timeout: float = 5.0) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "no close frame from the server"
        return exc.rcvd.code, exc.rcvd.reason, time.monotonic() - start
    except TimeoutError:
        raise AssertionError("the connection stayed open") from None


def test_send_to_user_from_process_a_reaches_every_socket_of_the_user_in_b(pair):
    a, b = pair
    user, other = uid(), uid()
    mine = [open_ws(b, user), open_ws(a, user)]
    theirs = open_ws(b, other)
    get(a, f"/send?user={user}&text=hello")
    assert [ws.recv(timeout=5) for ws in mine] == ["hello", "hello"]
    get(b, f"/send-typed?user={user}&n=3")  # a typed message goes to the consumer's handler
    assert [ws.recv(timeout=5) for ws in mine] == ["inbox:3", "inbox:3"]
    with pytest.raises(TimeoutError):
        theirs.recv(timeout=0.3)
    for ws in [*mine, theirs]:
        ws.close()


def test_revoke_in_a_closes_the_users_sockets_in_b_within_a_second(pair):
    a, b = pair
    user = uid()
    token = get(a, f"/token?user={user}")
    sockets = [open_ws(b, user), open_ws(b, token=token)]
    for ws in sockets:  # both open and serving
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    t0 = time.monotonic()
    get(a, f"/revoke?user={user}&reason=permissions+changed")
    for ws in sockets:
        code, reason, _ = closed_code(ws)
        assert (code, reason) == (4403, "permissions changed")
    assert time.monotonic() - t0 < 1.0


def test_a_token_issued_before_a_revocation_is_refused(pair):
    a, b = pair
    user = uid()
    old = get(a, f"/token?user={user}")
    get(a, f"/revoke?user={user}")
    with pytest.raises(InvalidStatus) as refused:
        open_ws(b, token=old)
    assert refused.value.response.status_code == 403
    time.sleep(0.01)
    fresh = get(a, f"/token?user={user}")  # a new login after the revocation works
    ws = open_ws(b, token=fresh)
    ws.send("whoami")
    assert ws.recv(timeout=5) == f"you are {user}"
    ws.close()


def test_tokens_set_the_user_by_query_or_subprotocol_and_are_single_use(pair):
    a, b = pair
    user = uid()
    for via in ("query", "subprotocol"):
        token = get(a, f"/token?user={user}")
        ws = open_ws(b, token=token, via=via)
        assert ws.subprotocol == ("wsbridge.bearer" if via == "subprotocol" else None)
        ws.send("whoami")
        assert ws.recv(timeout=5) == f"you are {user}"
        ws.close()
        with pytest.raises(InvalidStatus) as replayed:  # replay, even through the other process
            open_ws(a, token=token, via=via)
        assert replayed.value.response.status_code == 403
    assert get(a, "/status")["tokens"]["replayed"] == 2


def test_forged_malformed_and_other_site_tokens_are_refused(pair):
    a, b = pair
    from wsbridge.identity import ConnectTokens, HmacTokenCodec

    good = get(a, f"/token?user={uid()}")
    payload, signature = good.split(".")
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    other_key = ConnectTokens(
        HmacTokenCodec("another-site-secret-0123456789"), audience="id-test-site"
    ).issue("alice")
    other_aud = ConnectTokens(
        HmacTokenCodec("identity-test-secret-0123456789"), audience="another-site"
    ).issue("alice")
    for bad in (forged, "garbage", other_key, other_aud):
        with pytest.raises(InvalidStatus) as refused:
            open_ws(b, token=bad)
        assert refused.value.response.status_code == 403
    kinds = get(b, "/status")["tokens"]
    assert kinds.get("forged", 0) >= 2 and kinds.get("audience", 0) >= 1
    log = b.log()
    for secret in (good, forged, other_key, other_aud):
        assert secret not in log  # tokens are never logged (access log included)


def test_a_banned_user_is_closed_by_the_periodic_recheck(pair):
    a, b = pair
    user = uid()
    ws = open_ws(b, user)
    get(b, f"/ban?user={user}")  # only B's "database" knows: no signal, just the re-check
    code, reason, _ = closed_code(ws, timeout=5)
    assert code == 4403 and "banned" in reason


def test_kick_by_user_and_by_group_from_the_other_process(pair):
    a, b = pair
    user = uid()
    ws = open_ws(b, user)
    get(a, f"/kick?user={user}&reason=maintenance")
    assert closed_code(ws)[:2] == (4409, "maintenance")
    ws = open_ws(b, user)  # a kick is not a revocation: the user may come back
    ws.send("x")
    assert ws.recv(timeout=5) == "x"
    from wsbridge.identity import user_group

    get(a, f"/kick?group={user_group(user)}&reason=bye")
    assert closed_code(ws)[:2] == (4409, "bye")


def test_wsbridge_kick_command_closes_a_users_sockets_in_both_processes(pair):
    import subprocess
    import sys

    a, b = pair
    user = uid()
    sockets = [open_ws(a, user), open_ws(b, user)]
    layer = get(a, "/layer-url")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsbridge",
            "kick",
            "--user",
            user,
            "--reason",
            "under review",
            "--layer",
            layer,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    for ws in sockets:
        assert closed_code(ws)[:2] == (4409, "under review")
    done = subprocess.run(
        [sys.executable, "-m", "wsbridge", "kick", "--channel", "x", "--revoke", "--layer", layer],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--revoke needs --user" in done.stderr


def test_wsbridge_status_shows_the_identity_and_limit_counters_of_each_process(pair):
    import json as _json
    import subprocess
    import sys

    a, b = pair
    user = uid()
    ws = open_ws(b, user)
    get(a, f"/revoke?user={user}&reason=status")
    assert closed_code(ws)[0] == 4403
    layer = get(a, "/layer-url")

    def gauges() -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "wsbridge", "status", "--json", "--layer", layer],
            capture_output=True,
            text=True,
            timeout=30,
        )
        procs = _json.loads(done.stdout).get("processes") or []
        return [p["gauges"] for p in procs if p.get("pid") == b.pid]

    found = wait_for(lambda: [g for g in gauges() if g.get("identity_revoked", 0) >= 1], timeout=15)
    assert "limits_ip_messages" in found[0] and "slow_client_coalesced" in found[0]
