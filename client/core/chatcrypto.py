"""End-to-end encryption of chat messages and stories (sans-I/O; DESIGN §5).

Keys: each room has a 32-byte key per space epoch (:mod:`client.core.rooms`). From it we derive,
with HKDF-SHA256 and the room id as context, one key for messages (``salon/room-message/v1``)
and one for stories (``salon/room-story/v1``), so a ciphertext of one kind never opens as the
other.

A message is XChaCha20-Poly1305 (random 24-byte nonce) over a padded plaintext. The
*associated data* binds what the server stores in clear — space, room, epoch, sender key,
client message id and lifetime — so the server cannot move a ciphertext to another room or
epoch, attribute it to someone else, or change its lifetime without decryption failing.
Inside the encryption the plaintext carries the text, the sender's clock, the roster head the
sender had verified (its seq *and* hash, so readers detect a forked history:
:mod:`protocol.forks`), and the sender's Ed25519 signature over all of it plus the same clear
fields:
readers verify who wrote what, and the server (or a member replaying a ciphertext under
another name) cannot forge or alter it. Plaintexts are padded to a multiple of 256 bytes so
sizes leak only coarsely.

A story is three ciphertexts under the story key, each with the same associated data plus
the part's name: ``meta`` (caption, size, creation time, roster head seq and hash, SHA-256 of
the image
and of the thumbnail, the author's signature over all of it), ``image`` and ``thumb``.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Final, NamedTuple

import msgspec
import nacl.bindings
import nacl.exceptions

from client.core.crypto import hkdf, sign
from client.core.errors import VerificationError
from protocol.labels import MESSAGE_AD, MESSAGE_LABEL, MESSAGE_SIG, STORY_AD, STORY_LABEL, STORY_SIG
from protocol.records import verify_signature

NONCE_LEN: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
PAD_BLOCK: Final = 256
_LEN = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode


class MessageHeader(NamedTuple):
    """What the server stores in clear about a message; bound into its encryption."""

    space_id: str
    room_id: str
    epoch: int
    sender: bytes
    client_id: bytes
    ttl: int


class MessageContent(msgspec.Struct, array_like=True, frozen=True):
    text: str
    created_at: int  # the sender's clock, seconds
    head: int  # the roster head seq the sender had verified when sending
    head_hash: bytes  # and that record's hash: readers compare it with their own chain
    sig: bytes


class StoryHeader(NamedTuple):
    space_id: str
    room_id: str
    epoch: int
    sender: bytes
    story_id: str
    ttl: int


class StoryMeta(msgspec.Struct, array_like=True, frozen=True):
    caption: str
    created_at: int
    head: int
    head_hash: bytes
    width: int
    height: int
    image_sha256: bytes
    thumb_sha256: bytes
    sig: bytes


# -- primitives ---------------------------------------------------------------------------------


def message_key(room_key: bytes, room_id: str) -> bytes:
    return hkdf(room_key, MESSAGE_LABEL, room_id.encode())


def story_key(room_key: bytes, room_id: str) -> bytes:
    return hkdf(room_key, STORY_LABEL, room_id.encode())


def pad(plain: bytes, block: int = PAD_BLOCK) -> bytes:
    """Length prefix, then zeros up to a multiple of ``block``."""
    size = _LEN.size + len(plain)
    padded = -(-size // block) * block
    return _LEN.pack(len(plain)) + plain + bytes(padded - size)


def unpad(padded: bytes) -> bytes:
    if len(padded) < _LEN.size:
        raise VerificationError("a decrypted message is truncated")
    (length,) = _LEN.unpack_from(padded)
    if _LEN.size + length > len(padded):
        raise VerificationError("a decrypted message has a bad length")
    return padded[_LEN.size : _LEN.size + length]


def aead_seal(key: bytes, plain: bytes, ad: bytes, nonce: bytes | None = None) -> bytes:
    nonce = secrets.token_bytes(NONCE_LEN) if nonce is None else nonce
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    return nonce + bytes(sealed)


def aead_open(key: bytes, box: bytes, ad: bytes, what: str) -> bytes:
    nonce, sealed = box[:NONCE_LEN], box[NONCE_LEN:]
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, ad, nonce, key)
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerificationError(f"cannot decrypt {what}: wrong key or altered data") from None


# -- messages -----------------------------------------------------------------------------------


def message_ad(header: MessageHeader) -> bytes:
    return MESSAGE_AD + _encode(tuple(header))


def message_statement(
    header: MessageHeader, text: str, created_at: int, head: int, head_hash: bytes
) -> bytes:
    """What the sender signs: every clear field and every secret one."""
    return MESSAGE_SIG + _encode((*header, created_at, head, head_hash, text))


def seal_message(
    room_key: bytes,
    signing_seed: bytes,
    header: MessageHeader,
    text: str,
    created_at: int,
    head: int,
    head_hash: bytes,
    nonce: bytes | None = None,
) -> bytes:
    sig = sign(signing_seed, message_statement(header, text, created_at, head, head_hash))
    plain = pad(_encode(MessageContent(text, created_at, head, head_hash, sig)))
    return aead_seal(message_key(room_key, header.room_id), plain, message_ad(header), nonce)


def open_message(room_key: bytes, header: MessageHeader, box: bytes) -> MessageContent:
    """Decrypt and verify the sender's signature; VerificationError if anything is off."""
    plain = aead_open(message_key(room_key, header.room_id), box, message_ad(header), "a message")
    try:
        content = msgspec.msgpack.decode(unpad(plain), type=MessageContent)
    except msgspec.DecodeError:
        raise VerificationError("a decrypted message is malformed") from None
    statement = message_statement(
        header, content.text, content.created_at, content.head, content.head_hash
    )
    if not verify_signature(header.sender, statement, content.sig):
        raise VerificationError("a message's signature does not match its sender")
    return content


# -- stories ------------------------------------------------------------------------------------


def story_ad(header: StoryHeader, part: str) -> bytes:
    return STORY_AD + _encode((*header, part))


def story_statement(header: StoryHeader, meta: StoryMeta) -> bytes:
    fields = (meta.caption, meta.created_at, meta.head, meta.head_hash, meta.width, meta.height)
    return STORY_SIG + _encode((*header, *fields, meta.image_sha256, meta.thumb_sha256))


class SealedStory(NamedTuple):
    meta: bytes
    image: bytes
    thumb: bytes


def seal_story(
    room_key: bytes,
    signing_seed: bytes,
    header: StoryHeader,
    caption: str,
    image: bytes,
    thumb: bytes,
    size: tuple[int, int],
    created_at: int,
    head: int,
    head_hash: bytes,
    nonces: tuple[bytes, bytes, bytes] | None = None,  # meta, image, thumb; random if None
) -> SealedStory:
    key = story_key(room_key, header.room_id)
    unsigned = StoryMeta(
        caption,
        created_at,
        head,
        head_hash,
        size[0],
        size[1],
        hashlib.sha256(image).digest(),
        hashlib.sha256(thumb).digest(),
        b"",
    )
    meta = msgspec.structs.replace(
        unsigned, sig=sign(signing_seed, story_statement(header, unsigned))
    )
    n_meta, n_image, n_thumb = nonces or (None, None, None)
    return SealedStory(
        aead_seal(key, pad(_encode(meta)), story_ad(header, "meta"), n_meta),
        aead_seal(key, image, story_ad(header, "image"), n_image),
        aead_seal(key, thumb, story_ad(header, "thumb"), n_thumb),
    )


def open_story_meta(room_key: bytes, header: StoryHeader, box: bytes) -> StoryMeta:
    key = story_key(room_key, header.room_id)
    plain = aead_open(key, box, story_ad(header, "meta"), "a story")
    try:
        meta = msgspec.msgpack.decode(unpad(plain), type=StoryMeta)
    except msgspec.DecodeError:
        raise VerificationError("a decrypted story is malformed") from None
    if not verify_signature(header.sender, story_statement(header, meta), meta.sig):
        raise VerificationError("a story's signature does not match its author")
    return meta


def open_story_part(
    room_key: bytes, header: StoryHeader, meta: StoryMeta, part: str, box: bytes
) -> bytes:
    """Decrypt the image or thumbnail and check it is the one the author signed."""
    key = story_key(room_key, header.room_id)
    plain = aead_open(key, box, story_ad(header, part), f"a story's {part}")
    expected = meta.image_sha256 if part == "image" else meta.thumb_sha256
    if hashlib.sha256(plain).digest() != expected:
        raise VerificationError(f"a story's {part} is not the one its author signed")
    return plain
