"""Long-poll token tampering: every bit of every part of a live session's token.

A token is ``b64(sid).b64(owner).b64(mac)`` and the MAC covers every part
(plus the Origin and user it is bound to). Before the fix a token whose
owner part was changed was accepted for a session held by the process.
"""

from __future__ import annotations

import base64
import json

from tests.adversarial.harness import MEASURES, exchange, http_request, record
from tests.adversarial.test_fuzz_longpoll import open_session


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def tampered_tokens(token: str):
    """Every token one flipped bit away from ``token`` (decoded parts), with its label."""
    parts = token.split(".")
    for index, part in enumerate(parts):
        raw = _unb64(part)
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            changed = list(parts)
            changed[index] = _b64(bytes(flipped))
            yield f"part{index}", ".".join(changed)
    for owner in ("wsbridge.lp.other!1", "x", parts[1][::-1]):  # the owner replaced outright
        yield "owner-replaced", ".".join([parts[0], _b64(owner.encode()), parts[2]])


class Client:
    """One request per connection, head and body in one write (no Nagle / delayed-ACK stalls)."""

    def __init__(self, site) -> None:
        self.site = site

    def post(self, op: str, body: dict) -> tuple[int, dict]:
        headers = [("Origin", self.site.origin), ("Content-Type", "text/plain")]
        if self.site.cookie:
            headers.append(("Cookie", self.site.cookie))
        request = http_request(
            "POST", f"/_wsbridge/lp/{op}", self.site.port, json.dumps(body).encode(), headers
        )
        answer = exchange(self.site.port, request, deadline=5.0)
        assert answer.status is not None, answer.raw
        return answer.status, json.loads(answer.body or b"{}")


def test_every_bit_of_every_token_part_is_checked(site, watched):
    token = open_session(site)
    client = Client(site)
    ops = ("send", "poll", "close")
    tried = 0
    for i, (label, bad) in enumerate(tampered_tokens(token)):
        op = ops[i % 3]
        body: dict = {"token": bad}
        if op == "send":
            body["messages"] = [{"seq": 1, "text": f"tampered {label}"}]
        elif op == "poll":
            body.update(ack=0, wait=0)
        status, answer = client.post(op, body)
        record(f"{site.name}:token-{label}", status)
        assert status in (400, 403, 404), (label, op, bad, status, answer)
        tried += 1
    # The session is intact: no tampered send reached the consumer, no close ended it.
    status, answer = client.post("poll", {"token": token, "ack": 0, "wait": 0})
    assert status == 200, answer
    assert not any("tampered" in m.get("text", "") for m in answer["messages"]), answer
    status, answer = client.post("send", {"token": token, "messages": [{"seq": 1, "text": "ok"}]})
    assert (status, answer.get("ack")) == (200, 1), answer
    MEASURES.setdefault("token_tampering", {})[site.name] = {"tampered_tokens": tried}
    client.post("close", {"token": token})
