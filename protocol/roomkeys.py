"""What a sealed key envelope says, how room keys are committed to and ratcheted (sans-I/O).

**Sealed keys.** An :class:`~protocol.wire.Envelope` carries a key sealed with crypto_box
from one member to another. Its clear fields (scope, epoch) are the server's to rewrite, so
the sealed plaintext repeats them: :class:`SealedKey` is ``(domain, space id, scope, epoch,
generation, key)``, MessagePack array, and :func:`open_sealed_key` refuses a plaintext whose
context is not the one the recipient expects. A server relabelling an epoch-0 envelope as
epoch 1 (to keep a room on a key a removed member kept) is caught on open.

**Commitments.** Every room key the room uses is committed to on the signed chain by a
:class:`~protocol.records.RoomKey` record: ``commit = SHA-256(COMMIT_DOMAIN || msgpack((space
id, room id, epoch, generation, key)))``. The first commitment for (room, epoch, generation)
wins (the roster refuses a second), and clients accept a key only if it matches, so a member
who makes a different key and seals it to some members cannot split the room silently.

**Generations (history visibility).** In a ``since-join`` room the key of an epoch moves one
*generation* forward on every join in the space: ``key[g] = HKDF-SHA256(key[g-1],
RATCHET_LABEL, msgpack((space id, room id, epoch, g)))``. Holders advance locally (no new
envelopes); a joiner is sealed the key of the generation its join started, and HKDF being
one-way, cannot compute earlier generations. The generation a room is at is a function of the
chain (joins since the epoch began), so every reader can check it. In a ``shared`` room the
generation stays 0: a joiner gets the epoch's key and reads the epoch's history.

Ciphertexts of a room (message boxes, story caption blocks) are prefixed with the 4-byte
big-endian generation of the key that sealed them (:func:`frame`), so a reader knows which
key to derive before decrypting.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final, Literal

import msgspec

from protocol.errors import InvalidMessage
from protocol.labels import ROOM_KEY_COMMIT_DOMAIN as COMMIT_DOMAIN
from protocol.labels import ROOM_KEY_RATCHET_LABEL as RATCHET_LABEL
from protocol.labels import SEALED_KEY_DOMAIN

HistoryMode = Literal["since-join", "shared"]
KEY_LEN: Final = 32
_GEN = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode


class KeyBindingError(InvalidMessage):
    """A sealed key or a ciphertext frame is malformed or bound to another context."""


class SealedKey(msgspec.Struct, array_like=True, frozen=True):
    """The plaintext inside a key envelope's crypto_box."""

    domain: str
    space_id: str
    scope: str  # "space" for the space key, else the room id
    epoch: int
    generation: int
    key: bytes


_sealed_decoder = msgspec.msgpack.Decoder(SealedKey)


def sealed_key(space_id: str, scope: str, epoch: int, generation: int, key: bytes) -> bytes:
    """The bytes to seal in an envelope for ``key``."""
    return _encode(SealedKey(SEALED_KEY_DOMAIN, space_id, scope, epoch, generation, key))


def open_sealed_key(plain: bytes, space_id: str, scope: str, epoch: int) -> SealedKey:
    """Parse an opened envelope and check it is for (space, scope, epoch); the caller checks
    the generation (a joiner accepts the generation of its join or an earlier one)."""
    try:
        sealed = _sealed_decoder.decode(plain)
    except msgspec.DecodeError:
        raise KeyBindingError("a sealed key is malformed") from None
    if sealed.domain != SEALED_KEY_DOMAIN or len(sealed.key) != KEY_LEN:
        raise KeyBindingError("a sealed key is malformed")
    if (sealed.space_id, sealed.scope, sealed.epoch) != (space_id, scope, epoch):
        raise KeyBindingError(
            "a sealed key was relabelled: it is for another space, room or epoch than the "
            "envelope claims"
        )
    if sealed.generation < 0:
        raise KeyBindingError("a sealed key has a negative generation")
    return sealed


def key_commitment(space_id: str, room_id: str, epoch: int, generation: int, key: bytes) -> bytes:
    return hashlib.sha256(
        COMMIT_DOMAIN + _encode((space_id, room_id, epoch, generation, key))
    ).digest()


def _hkdf32(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt, one 32-byte block."""
    prk = hmac.new(bytes(32), secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def ratchet(key: bytes, space_id: str, room_id: str, epoch: int, generation: int) -> bytes:
    """The key of ``generation`` from the key of ``generation - 1`` (one way)."""
    info = RATCHET_LABEL.encode() + b"\x00" + _encode((space_id, room_id, epoch, generation))
    return _hkdf32(key, info)


def advance(
    key: bytes, space_id: str, room_id: str, epoch: int, held: int, generation: int
) -> bytes:
    """From the key of generation ``held`` to that of ``generation`` (>= held)."""
    if generation < held:
        raise KeyBindingError("a room key cannot move back a generation")
    for g in range(held + 1, generation + 1):
        key = ratchet(key, space_id, room_id, epoch, g)
    return key


def frame(generation: int, box: bytes) -> bytes:
    return _GEN.pack(generation) + box


def unframe(framed: bytes) -> tuple[int, bytes]:
    if len(framed) < _GEN.size:
        raise KeyBindingError("a ciphertext is truncated")
    (generation,) = _GEN.unpack_from(framed)
    return generation, framed[_GEN.size :]
