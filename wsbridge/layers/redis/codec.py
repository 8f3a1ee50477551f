"""Message format in Redis, version 1 (native layout) and channels_redis 4.x.

Native item (an element of a channel list or a process inbox)::

    b"WB1" kind(1 byte) expires_at_ms(13 ASCII digits) body
    kind b"D": body = msgpack [channel, sealed]     one channel
    kind b"G": body = msgpack [group, sealed]       a group message: the same
               item goes to every process holding members, which delivers it
               to its own members of the group
    kind b"M": body = msgpack [op, group, channel, joined_at]   a membership
               change ("add"/"discard") made by another process for one of
               this process's channels

``sealed`` is the serializer's bytes (msgpack by default). With encryption
on, it is a Fernet token of msgpack ``[destination, serialized]`` where
destination is ``"c:<channel>"`` or ``"g:<group>"``: the reader checks it
against where the item claims to go, so a Redis writer without the key can
neither forge a message nor redirect one to another channel or group.

channels_redis item: 12 random bytes + msgpack(message with
``__asgi_channel__``), Fernet-encrypted after the prefix when keys are set,
exactly as channels_redis 4.x writes it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ...exceptions import ConfigurationError, MessageDecodeError, MessageTooLarge
from ..serializers import Serializer

__all__ = ["Codec", "Decoded", "MAGIC", "FORMAT_VERSION", "make_fernet"]

MAGIC = b"WB"
FORMAT_VERSION = b"1"
HEADER_LEN = 17  # MAGIC + version + kind + 13 digits


@dataclass(frozen=True)
class Decoded:
    """One item read back: where it goes and the message (shared, read-only)."""

    channels: list[str]
    message: dict[str, Any]
    group: str | None = None
    #: For membership items: (op, group, channel, joined_at); message is {}.
    control: tuple[str, str, str, float] | None = None
    #: For history group items (kind H): "<epoch>:<offset>".
    position: str | None = None


def make_fernet(key: str | bytes) -> Any:
    """A Fernet for a configured key, derived as channels_redis does (SHA-256, base64)."""
    from cryptography.fernet import Fernet

    if isinstance(key, str):
        key = key.encode("utf-8")
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))


def make_crypter(keys: Sequence[str | bytes] | None) -> Any:
    """A MultiFernet (first key encrypts, any key decrypts), or None without keys."""
    if not keys:
        return None
    if isinstance(keys, (str, bytes)):
        raise ConfigurationError("symmetric_encryption_keys must be a list of keys, newest first")
    try:
        from cryptography.fernet import MultiFernet
    except ImportError as exc:  # pragma: no cover - cryptography is in the redis extra
        raise ConfigurationError(
            "encryption needs 'cryptography': pip install \"wsbridge-gevent[redis]\""
        ) from exc
    return MultiFernet([make_fernet(key) for key in keys])


def _pack(value: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


class Codec:
    """Encodes and decodes items for one layer (its serializer, keys, limits)."""

    def __init__(
        self,
        serializer: Serializer,
        *,
        expiry: float,
        crypter: Any = None,
        max_message_size: int = 1 << 20,
    ) -> None:
        self.serializer = serializer
        self.expiry = expiry
        self.crypter = crypter
        self.max_message_size = max_message_size
        self._unpacker_raw = {"raw": True, "strict_map_key": False, "use_list": True}

    # -- the message itself -----------------------------------------------

    def dump_message(self, message: dict[str, Any]) -> bytes:
        """Serialize once; raise ``MessageTooLarge`` past the configured limit."""
        data = self.serializer.dumps(message)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds the layer's max_message_size "
                f"({self.max_message_size}); send a reference (an id, a URL) instead"
            )
        return data

    def seal(self, data: bytes, destination: str) -> bytes:
        if self.crypter is None:
            return data
        return self.crypter.encrypt(msgpack.packb([destination, data]))  # type: ignore[no-any-return]

    def unseal(self, sealed: bytes, destination: str) -> dict[str, Any]:
        if self.crypter is not None:
            from cryptography.fernet import InvalidToken

            try:
                plain = self.crypter.decrypt(sealed, ttl=int(self.expiry) + 10)
                signed_for, sealed = msgpack.unpackb(plain, raw=False)
            except (InvalidToken, ValueError, TypeError) as exc:
                raise MessageDecodeError("message signature invalid (wrong key or forged)") from exc
            if signed_for != destination:
                raise MessageDecodeError(
                    f"message signed for {signed_for!r} arrived as {destination!r}; dropped"
                )
        return self.serializer.loads(sealed)

    # -- native items -------------------------------------------------------------

    def header(self, kind: bytes, expires_at: float | None = None) -> bytes:
        if expires_at is None:
            expires_at = time.time() + self.expiry
        return MAGIC + FORMAT_VERSION + kind + b"%013d" % int(expires_at * 1000)

    def direct_item(self, channel: str, data: bytes, expires_at: float | None = None) -> bytes:
        sealed = self.seal(data, "c:" + channel)
        return self.header(b"D", expires_at) + _pack([channel, sealed])

    def group_item(self, group: str, data: bytes) -> bytes:
        sealed = self.seal(data, "g:" + group)
        return self.header(b"G") + _pack([group, sealed])

    def membership_item(self, op: str, group: str, channel: str, joined_at: float) -> bytes:
        return self.header(b"M") + _pack([op, group, channel, joined_at])

    def decode_item(self, item: bytes, now: float | None = None) -> Decoded | None:
        """Decode a native item; None when it has expired.

        Raises:
            MessageDecodeError: foreign or corrupt bytes (the caller logs and drops).
        """
        if len(item) < HEADER_LEN or item[:2] != MAGIC:
            raise MessageDecodeError(f"not a wsbridge item (starts {item[:8]!r})")
        if item[2:3] != FORMAT_VERSION:
            raise MessageDecodeError(f"wsbridge item format {item[2:3]!r} is not supported here")
        raw_body = item[HEADER_LEN:]
        position = None
        if item[3:4] == b"H":
            # A group item the history script stamped: "<epoch>:<offset>\n" + body.
            newline = raw_body.find(b"\n", 0, 80)
            if newline < 0:
                raise MessageDecodeError("corrupt wsbridge history item: no position")
            position = raw_body[:newline].decode("ascii", "replace")
            raw_body = raw_body[newline + 1 :]
        try:
            expires_ms = int(item[4:HEADER_LEN])
            body = msgpack.unpackb(raw_body, **self._unpacker_raw)
        except Exception as exc:
            raise MessageDecodeError(f"corrupt wsbridge item: {exc}") from exc
        if expires_ms < (time.time() if now is None else now) * 1000:
            return None
        kind = item[3:4]
        try:
            if kind == b"D":
                channel_b, sealed = body
                channel = channel_b.decode("utf-8")
                return Decoded([channel], self.unseal(sealed, "c:" + channel))
            if kind == b"G" or kind == b"H":
                group_b, sealed = body
                group = group_b.decode("utf-8")
                return Decoded([], self.unseal(sealed, "g:" + group), group, position=position)
            if kind == b"M":
                op, group_b, channel_b, joined_at = body
                control = (
                    op.decode(),
                    group_b.decode("utf-8"),
                    channel_b.decode("utf-8"),
                    float(joined_at),
                )
                return Decoded([], {}, control=control)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MessageDecodeError(f"corrupt wsbridge item body: {exc}") from exc
        raise MessageDecodeError(f"unknown wsbridge item kind {kind!r}")

    # -- channels_redis 4.x items ---------------------------------------------------

    def cr_item(self, message: dict[str, Any]) -> bytes:
        data = self.dump_message(message)
        if self.crypter is not None:
            data = self.crypter.encrypt(data)
        return os.urandom(12) + data

    def cr_decode(self, member: bytes) -> dict[str, Any]:
        data = member[12:]
        if self.crypter is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self.crypter.decrypt(data, ttl=int(self.expiry) + 10)
            except InvalidToken as exc:
                raise MessageDecodeError("channels_redis message: bad signature") from exc
        return self.serializer.loads(data)
