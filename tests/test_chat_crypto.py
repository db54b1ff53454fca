"""The end-to-end encryption of messages and stories (client/core/chatcrypto.py), with bytes only:
known answers for the primitive and the key labels, round trips, and every alteration —
a flipped bit, another room, epoch, sender, id or lifetime, a forged signature — rejected."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from client.core import chatcrypto, crypto
from client.core.chatcrypto import MessageHeader, StoryHeader
from client.core.errors import VerificationError

ROOM_KEY = bytes(range(32))
ALICE_SEED = b"\x01" * 32
MALLORY_SEED = b"\x02" * 32
ALICE = crypto.public_signing_key(ALICE_SEED)
MALLORY = crypto.public_signing_key(MALLORY_SEED)
HEAD = bytes(range(32))  # the hash of the roster head the sender verified


def header(**changes: object) -> MessageHeader:
    base = MessageHeader("space0space0space0space0", "room-0000001", 3, ALICE, b"c" * 16, 0)
    return base._replace(**changes)


def seal(text: str = "hello", **changes: object) -> tuple[MessageHeader, bytes]:
    h = header(**changes)
    return h, chatcrypto.seal_message(ROOM_KEY, ALICE_SEED, h, text, 1_700_000_000, 7, HEAD)


# -- known answers -----------------------------------------------------------------------------


def test_xchacha20poly1305_known_answer() -> None:
    """draft-irtf-cfrg-xchacha-03, appendix A.3.1: the AEAD we build on is the standard one."""
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    ad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key = bytes(range(0x80, 0xA0))
    nonce = bytes(range(0x40, 0x58))
    expected = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )
    assert chatcrypto.aead_seal(key, plaintext, ad, nonce) == nonce + expected
    assert chatcrypto.aead_open(key, nonce + expected, ad, "vector") == plaintext


@pytest.mark.parametrize(
    ("derive", "label"),
    [
        (chatcrypto.message_key, b"salon/room-message/v1"),
        (chatcrypto.story_key, b"salon/room-story/v1"),
    ],
)
def test_key_labels(derive: object, label: bytes) -> None:
    """Each derived key is HKDF-SHA256(room key, info = label || 0 || room id)."""
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=label + b"\x00" + b"room-0000001"
    ).derive(ROOM_KEY)
    assert derive(ROOM_KEY, "room-0000001") == expected  # type: ignore[operator]
    assert derive(ROOM_KEY, "room-0000002") != expected  # type: ignore[operator]


def test_message_and_story_keys_differ() -> None:
    assert chatcrypto.message_key(ROOM_KEY, "r" * 12) != chatcrypto.story_key(ROOM_KEY, "r" * 12)


# -- padding -----------------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_pad_round_trip_and_block_size(plain: bytes) -> None:
    padded = chatcrypto.pad(plain)
    assert len(padded) % chatcrypto.PAD_BLOCK == 0
    assert len(padded) >= len(plain) + 4
    assert chatcrypto.unpad(padded) == plain


def test_unpad_rejects_lengths_beyond_the_data() -> None:
    with pytest.raises(VerificationError):
        chatcrypto.unpad(b"\x00\x00\x01\x00" + bytes(10))
    with pytest.raises(VerificationError):
        chatcrypto.unpad(b"\x00")


def test_sizes_leak_only_coarsely() -> None:
    sizes = {len(seal("x" * n)[1]) for n in range(0, 120)}
    assert len(sizes) == 1


# -- messages ----------------------------------------------------------------------------------


def test_message_round_trip() -> None:
    h, box = seal("héllo 👋\nsecond line")
    content = chatcrypto.open_message(ROOM_KEY, h, box)
    assert content.text == "héllo 👋\nsecond line"
    assert (content.created_at, content.head, content.head_hash) == (1_700_000_000, 7, HEAD)
    assert b"hello" not in box


def test_two_seals_of_one_message_differ() -> None:
    assert seal()[1] != seal()[1]  # random nonces


@pytest.mark.parametrize(
    "change",
    [
        {"space_id": "another-space-id-00000000"},
        {"room_id": "room-0000002"},
        {"epoch": 4},
        {"sender": MALLORY},
        {"client_id": b"d" * 16},
        {"ttl": 3600},
    ],
)
def test_every_clear_field_is_bound(change: dict[str, object]) -> None:
    """The server stores these in clear; changing any one makes the message unreadable."""
    h, box = seal()
    with pytest.raises(VerificationError):
        chatcrypto.open_message(ROOM_KEY, h._replace(**change), box)


def test_wrong_room_key_rejected() -> None:
    h, box = seal()
    with pytest.raises(VerificationError):
        chatcrypto.open_message(bytes(32), h, box)


@settings(max_examples=60)
@given(st.data())
def test_every_bit_flip_rejected(data: st.DataObject) -> None:
    h, box = seal("bit flips")
    bit = data.draw(st.integers(0, len(box) * 8 - 1))
    flipped = bytearray(box)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VerificationError):
        chatcrypto.open_message(ROOM_KEY, h, bytes(flipped))


def test_member_cannot_post_in_anothers_name() -> None:
    """Mallory holds the room key too, but cannot sign as Alice: her message claiming Alice
    as sender decrypts and then fails the signature check."""
    h = header(sender=ALICE)
    box = chatcrypto.seal_message(ROOM_KEY, MALLORY_SEED, h, "I am Alice", 1, 1, HEAD)
    with pytest.raises(VerificationError, match="signature"):
        chatcrypto.open_message(ROOM_KEY, h, box)


def test_truncated_box_rejected() -> None:
    h, box = seal()
    for cut in (0, 10, 24, len(box) - 1):
        with pytest.raises(VerificationError):
            chatcrypto.open_message(ROOM_KEY, h, box[:cut])


# -- stories -----------------------------------------------------------------------------------


def story_header(**changes: object) -> StoryHeader:
    base = StoryHeader(
        "space0space0space0space0", "chan-0000001", 2, ALICE, "story-abcdefgh", 86400
    )
    return base._replace(**changes)


def test_story_round_trip() -> None:
    h = story_header()
    sealed = chatcrypto.seal_story(
        ROOM_KEY, ALICE_SEED, h, "sunset", b"IMAGE" * 100, b"THUMB", (1920, 1080), 5, 9, HEAD
    )
    meta = chatcrypto.open_story_meta(ROOM_KEY, h, sealed.meta)
    assert (meta.caption, meta.width, meta.height, meta.head) == ("sunset", 1920, 1080, 9)
    assert meta.image_sha256 == hashlib.sha256(b"IMAGE" * 100).digest()
    image = chatcrypto.open_story_part(ROOM_KEY, h, meta, "image", sealed.image)
    assert image == b"IMAGE" * 100
    assert chatcrypto.open_story_part(ROOM_KEY, h, meta, "thumb", sealed.thumb) == b"THUMB"


def test_story_parts_cannot_be_swapped_or_moved() -> None:
    h = story_header()
    sealed = chatcrypto.seal_story(ROOM_KEY, ALICE_SEED, h, "c", b"I", b"T", (1, 1), 5, 9, HEAD)
    meta = chatcrypto.open_story_meta(ROOM_KEY, h, sealed.meta)
    with pytest.raises(VerificationError):
        chatcrypto.open_story_part(ROOM_KEY, h, meta, "thumb", sealed.image)
    with pytest.raises(VerificationError):
        chatcrypto.open_story_meta(ROOM_KEY, story_header(story_id="story-other000"), sealed.meta)
    with pytest.raises(VerificationError):
        chatcrypto.open_story_meta(ROOM_KEY, story_header(ttl=7 * 86400), sealed.meta)


def test_story_image_must_match_the_signed_hash() -> None:
    """Another image sealed under the same key (by a member who holds it) is refused."""
    h = story_header()
    sealed = chatcrypto.seal_story(ROOM_KEY, ALICE_SEED, h, "c", b"real", b"T", (1, 1), 5, 9, HEAD)
    other = chatcrypto.seal_story(ROOM_KEY, MALLORY_SEED, h, "c", b"fake", b"T", (1, 1), 5, 9, HEAD)
    meta = chatcrypto.open_story_meta(ROOM_KEY, h, sealed.meta)
    with pytest.raises(VerificationError, match="signed"):
        chatcrypto.open_story_part(ROOM_KEY, h, meta, "image", other.image)
    with pytest.raises(VerificationError, match="signature"):
        chatcrypto.open_story_meta(ROOM_KEY, h, other.meta)  # Mallory's meta, Alice as author


def test_a_server_cannot_keep_a_message_alive() -> None:
    """Readers hide a message at the signed creation time plus its lifetime (with 5 minutes
    of clock skew), whatever later expiry — or none — the server claims."""
    from client.core.chat import CLOCK_SKEW, visible_until

    assert visible_until(None, 0, 1000) is None  # kept: the server decides
    assert visible_until(2000.0, 0, 1000) == 2000.0
    assert visible_until(1060.0, 60, 1000) == 1060.0  # honest server
    assert visible_until(None, 60, 1000) == 1060 + CLOCK_SKEW  # server dropped the expiry
    assert visible_until(99_999.0, 60, 1000) == 1060 + CLOCK_SKEW  # or pushed it back
