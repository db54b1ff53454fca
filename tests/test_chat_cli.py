"""Issue 3's user flows end to end: the real ``salon`` CLI against a real ``salon serve``.

Chat rooms and channels (send, read, --since, --last, JSON shapes), channel publishing
rights, stories (metadata stripped, list, get, size bound), ephemeral messages and stories
(gone from every view and from the database file and its WAL), a kicked member who cannot
decrypt what is sent after the kick even with the keys she kept, and a blind server.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from chat_support import (
    data_files,
    files_containing,
    gps_needles,
    jpeg_with_gps,
    metadata_markers,
    query,
)
from conftest import SalonServer, SalonUser
from support import until_sync

from client.core import chatcrypto
from client.core.errors import VerificationError
from protocol import roomkeys

STORAGE_ENGINES = ("sqlite", "postgresql")  # the server fixtures run on each (conftest.py)
SERVER_CONFIG = {
    "limits": {"expiry_sweep_seconds": 0.2, "join_attempts_per_minute_per_address": 1000}
}
MESSAGE_KEYS = {"seq", "sent_at", "sender", "fingerprint", "text", "expires_at"}
STORY_KEYS = {"story_id", "author", "caption", "posted_at", "expires_at"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass
class Space:
    server: SalonServer
    alice: SalonUser
    bob: SalonUser
    space_id: str
    link: str


def make_space(server: SalonServer, user: Any, name: str = "Town hall") -> Space:
    alice, bob = user("alice"), user("bob")
    created = alice.json("space", "create", name, "--server", server.url, "--as", "Alice")
    bob.json("join", created["link"], "--as", "Bob")
    return Space(server, alice, bob, created["space_id"], created["link"])


def read(person: SalonUser, space: str, room: str, *options: str) -> list[dict[str, Any]]:
    rows = person.json("read", space, room, *options)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == MESSAGE_KEYS, row
        assert ISO.match(row["sent_at"]) and re.fullmatch("[0-9a-f]{16}", row["fingerprint"])
        assert row["expires_at"] is None or ISO.match(row["expires_at"])
    return rows


def texts(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(r["seq"], r["sender"], r["text"]) for r in rows]


def stored_boxes(server: SalonServer, space_id: str) -> dict[int, bytes]:
    rows = query(server.db_path, "SELECT seq, box FROM messages WHERE space_id = ?", space_id)
    return {int(seq): bytes(box) for seq, box in rows}


# -- chat rooms ----------------------------------------------------------------------------------


def test_chat_room_send_read_and_json_shapes(server, user):
    s = make_space(server, user)
    general = s.alice.json("room", "create", s.space_id, "general", "--kind", "chat")
    news = s.alice.json("room", "create", s.space_id, "news", "--kind", "channel")
    rooms = s.bob.json("rooms", s.space_id)
    assert all(set(r) == {"room_id", "name", "kind"} for r in rooms)
    assert {(r["name"], r["kind"]) for r in rooms} == {("general", "chat"), ("news", "channel")}
    assert {r["room_id"] for r in rooms} == {general["room_id"], news["room_id"]}

    assert read(s.bob, s.space_id, "general") == []
    sent = s.alice.json("send", s.space_id, "general", "Hello Bob, welcome!")
    assert set(sent) == {"room_id", "seq", "sent_at", "expires_at", "duplicate"}
    assert (sent["seq"], sent["expires_at"], sent["duplicate"]) == (1, None, False)
    s.bob.run("send", s.space_id, "general", "Hi Alice 👋\nsecond line")
    s.alice.run("send", s.space_id, general["room_id"], "third")  # by room id as well

    expected = [
        (1, "Alice", "Hello Bob, welcome!"),
        (2, "Bob", "Hi Alice 👋\nsecond line"),
        (3, "Alice", "third"),
    ]
    assert texts(read(s.bob, s.space_id, "general")) == expected
    assert texts(read(s.alice, s.space_id, "general")) == expected
    assert texts(read(s.bob, s.space_id, "general", "--since", "1")) == expected[1:]
    assert texts(read(s.bob, s.space_id, "general", "--last", "1")) == expected[2:]
    assert read(s.bob, s.space_id, "general", "--since", "3") == []
    # The members' fingerprints are the ones `salon members` shows.
    members = {m["display_name"]: m["fingerprint"] for m in s.bob.json("members", s.space_id)}
    rows = read(s.bob, s.space_id, "general")
    assert {r["sender"]: r["fingerprint"] for r in rows} == members

    # Human output: one line per message with sequence, sender and text.
    out = s.bob.run("read", s.space_id, "general").stdout
    assert re.search(r"^#1 .*Alice \([0-9a-f]{8}\): Hello Bob, welcome!$", out, re.M), out
    assert "#2" in out and "second line" in out

    # Text from stdin; a terminal escape in someone's message is shown, not obeyed.
    s.bob.run("send", s.space_id, "general", "-", input="from stdin\x1b[2J")
    out = s.alice.run("read", s.space_id, "general", "--since", "3").stdout
    assert "from stdin\\x1b[2J" in out and "\x1b" not in out


def test_chat_mistakes_are_one_line_errors(server, user):
    s = make_space(server, user)
    s.alice.run("room", "create", s.space_id, "general", "--kind", "chat")
    s.alice.run("room", "create", s.space_id, "call", "--kind", "conference")
    assert "no room" in s.bob.fail("send", s.space_id, "nowhere", "hi")
    assert "conference" in s.bob.fail("send", s.space_id, "call", "hi")
    assert "conference" in s.bob.fail("read", s.space_id, "call")
    assert "empty" in s.bob.fail("send", s.space_id, "general", "   ")
    assert "too large" in s.bob.fail("send", s.space_id, "general", "x" * 20_000)
    assert "bad duration" in s.bob.fail("send", s.space_id, "general", "hi", "--ttl", "soon")
    assert "not in a space" in s.bob.fail("read", "nowhere", "general")


def test_channel_posting_rights(server, user):
    s = make_space(server, user)
    s.alice.run("room", "create", s.space_id, "news", "--kind", "channel")
    s.alice.run("send", s.space_id, "news", "Official: the park opens Monday")

    error = s.bob.fail("send", s.space_id, "news", "Bob was here")
    assert "not allowed" in error
    s.alice.run("room", "grant", s.space_id, "news", "Bob")
    s.bob.run("send", s.space_id, "news", "Bob reporting, with permission")
    s.alice.run("room", "ungrant", s.space_id, "news", "Bob")
    assert "not allowed" in s.bob.fail("send", s.space_id, "news", "again")

    # Bob's post made while he could publish still verifies for readers afterwards.
    assert texts(read(s.bob, s.space_id, "news")) == [
        (1, "Alice", "Official: the park opens Monday"),
        (2, "Bob", "Bob reporting, with permission"),
    ]


# -- ephemeral messages ----------------------------------------------------------------------------


def test_ephemeral_messages_vanish_from_views_database_and_wal(server, user):
    s = make_space(server, user)
    s.alice.run("room", "create", s.space_id, "general", "--kind", "chat")
    s.alice.run("room", "create", s.space_id, "fleeting", "--kind", "chat", "--ttl", "6s")
    s.alice.run("send", s.space_id, "general", "this one stays")
    bob_says = s.bob.json("send", s.space_id, "general", "gone in a moment", "--ttl", "5s")
    s.alice.run("send", s.space_id, "fleeting", "room default applies")
    ends = time.monotonic() + 6
    assert bob_says["expires_at"] is not None

    # The ciphertexts as the server stored them, read before they expire.
    def boxes(condition: str) -> list[bytes]:
        sql = f"SELECT box FROM messages WHERE space_id = ? AND expires_at IS {condition}"
        return [bytes(box) for (box,) in query(server.db_path, sql, s.space_id)]

    doomed, kept = boxes("NOT NULL"), boxes("NULL")
    assert len(doomed) == 2 and len(kept) == 1
    assert files_containing(server, kept[0][24:88]) != []  # the grep finds stored bytes

    rows = read(s.alice, s.space_id, "general")
    assert [r["text"] for r in rows] == ["this one stays", "gone in a moment"]
    assert rows[0]["expires_at"] is None and rows[1]["expires_at"] == bob_says["expires_at"]
    fleeting = read(s.bob, s.space_id, "fleeting")
    assert [r["text"] for r in fleeting] == ["room default applies"]
    assert fleeting[0]["expires_at"] is not None

    time.sleep(max(0.0, ends - time.monotonic()) + 0.2)
    for person in (s.alice, s.bob):  # gone from every member's view at once
        assert [r["text"] for r in read(person, s.space_id, "general")] == ["this one stays"]
        assert read(person, s.space_id, "fleeting") == []
    # And from the files: the sweeper deletes with secure_delete and truncates the WAL.
    until_sync(
        lambda: not any(files_containing(server, box[24:88]) for box in doomed),
        "the expired boxes gone from the files",
        timeout=15,
    )
    for box in doomed:
        for start in range(0, len(box) - 32, 32):
            assert files_containing(server, box[start : start + 32]) == []
    assert files_containing(server, kept[0][24:88]) != []  # what lives on is still there
    # The next message still gets the next sequence (no reuse after expiry).
    assert s.bob.json("send", s.space_id, "general", "after")["seq"] == 3


# -- stories -------------------------------------------------------------------------------------


def test_stories_strip_metadata_and_expire(server, user, tmp_path: Path):
    s = make_space(server, user)
    s.alice.run("room", "create", s.space_id, "news", "--kind", "channel")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(2400, 1600))
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg_with_gps(640, 480))

    first = s.alice.json(
        "story", "post", s.space_id, "news", str(photo), "--caption", "Sunset at the pier"
    )
    assert (first["width"], first["height"]) == (1920, 1280)  # longest side bounded
    time.sleep(1.1)  # distinct posting times: the list is newest first
    second = s.alice.json(
        "story", "post", s.space_id, "news", str(small), "--caption", "Brief", "--ttl", "4s"
    )
    ends = time.monotonic() + 4
    # The short-lived story's ciphertext as the server stored it, read before it expires.
    (stored,) = query(
        server.db_path, "SELECT image, meta FROM stories WHERE story_id = ?", second["story_id"]
    )
    image_box, meta_box = bytes(stored[0]), bytes(stored[1])
    assert "not allowed" in s.bob.fail("story", "post", s.space_id, "news", str(small))

    listed = s.bob.json("story", "list", s.space_id, "news")
    assert all(set(row) == STORY_KEYS for row in listed)
    assert [(r["story_id"], r["author"], r["caption"]) for r in listed] == [
        (second["story_id"], "Alice", "Brief"),
        (first["story_id"], "Alice", "Sunset at the pier"),
    ]
    assert ISO.match(listed[0]["posted_at"]) and ISO.match(listed[0]["expires_at"])
    text = s.bob.run("story", "list", s.space_id, "news").stdout
    assert first["story_id"] in text and "23h" in text  # full id and time left

    # Bob fetches the decrypted image: pixels intact, every metadata block gone.
    out = tmp_path / "got.jpg"
    got = s.bob.json("story", "get", s.space_id, first["story_id"], "--out", str(out))
    assert got["caption"] == "Sunset at the pier" and got["bytes"] == out.stat().st_size
    image = out.read_bytes()
    pixels = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (1280, 1920, 3)
    assert metadata_markers(photo.read_bytes()) != []  # the original had them
    assert metadata_markers(image) == []
    for what, needle in gps_needles().items():
        assert needle in photo.read_bytes(), what
        assert needle not in image, f"{what} survived"
    thumb = tmp_path / "thumb.jpg"
    s.bob.run("story", "get", s.space_id, first["story_id"], "--out", str(thumb), "--thumbnail")
    thumb_pixels = cv2.imdecode(np.frombuffer(thumb.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert max(thumb_pixels.shape[:2]) == 320 and metadata_markers(thumb.read_bytes()) == []

    # The short-lived story leaves every view, and its ciphertext leaves the files.
    time.sleep(max(0.0, ends - time.monotonic()) + 0.1)
    assert [r["story_id"] for r in s.bob.json("story", "list", s.space_id, "news")] == [
        first["story_id"]
    ]
    assert "no story" in s.bob.fail(
        "story", "get", s.space_id, second["story_id"], "--out", str(tmp_path / "late.jpg")
    )
    until_sync(
        lambda: not files_containing(server, image_box[100:164]), "the story gone", timeout=15
    )
    assert files_containing(server, meta_box[24:56]) == []
    assert files_containing(server, image_box[-64:]) == []


def test_story_size_bound_is_a_clear_error(make_server, user, tmp_path: Path):
    server = make_server({"limits": {"max_story_bytes": 40_000}})
    s = make_space(server, user)
    s.alice.run("room", "create", s.space_id, "news", "--kind", "channel")
    noisy = tmp_path / "noisy.png"
    noisy.write_bytes(
        cv2.imencode(".png", np.random.default_rng(1).integers(0, 256, (900, 900, 3), np.uint8))[
            1
        ].tobytes()
    )
    error = s.alice.fail("story", "post", s.space_id, "news", str(noisy))
    assert "story image too large" in error and "40000 bytes" in error
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not a picture")
    assert "not an image" in s.alice.fail("story", "post", s.space_id, "news", str(not_image))
    assert "no image file" in s.alice.fail("story", "post", s.space_id, "news", "missing.jpg")
    general = s.alice.json("room", "create", s.space_id, "general", "--kind", "chat")
    assert "channel" in s.alice.fail("story", "post", s.space_id, general["room_id"], str(noisy))


# -- removal is cryptographic ----------------------------------------------------------------------


def test_kicked_member_cannot_decrypt_what_follows(server, user):
    s = make_space(server, user)
    carol = user("carol")
    carol.json("join", s.link, "--as", "Carol")
    room = s.alice.json(
        "room", "create", s.space_id, "general", "--kind", "chat", "--history", "shared"
    )
    assert room["history"] == "shared"
    s.alice.run("send", s.space_id, "general", "before the kick")
    assert texts(read(carol, s.space_id, "general")) == [(1, "Alice", "before the kick")]

    # Everything Carol's device holds for this space, kept after she is removed.
    (kept,) = [m for m in carol.keystore().load().memberships if m.space_id == s.space_id]
    carol_room_keys = dict(kept.room_keys[room["room_id"]])
    assert set(carol_room_keys) == {0}

    s.alice.run("kick", s.space_id, "Carol")
    s.alice.run("send", s.space_id, "general", "after the kick: Carol must not read this")
    s.bob.run("send", s.space_id, "general", "agreed")
    assert [r["text"] for r in read(s.bob, s.space_id, "general")] == [
        "before the kick",
        "after the kick: Carol must not read this",
        "agreed",
    ]
    assert "no longer a member" in carol.fail("read", s.space_id, "general")

    # At the crypto level: the new messages use epoch 1, whose room key was sealed only to
    # Alice and Bob, and none of the keys Carol kept opens them.
    rows = query(
        server.db_path,
        "SELECT seq, sender, client_id, epoch, ttl, box FROM messages"
        " WHERE space_id = ? AND room_id = ? ORDER BY seq",
        s.space_id,
        room["room_id"],
    )
    assert [r[3] for r in rows] == [0, 1, 1]
    recipients = {
        bytes(r[0])
        for r in query(
            server.db_path,
            "SELECT recipient FROM envelopes WHERE space_id = ? AND scope = ? AND epoch = 1",
            s.space_id,
            room["room_id"],
        )
    }
    carol_key = _member_key(kept.signing_seed)
    assert len(recipients) == 2 and carol_key not in recipients
    candidates = [
        roomkeys.advance(held.key, s.space_id, room["room_id"], e, held.generation, g)
        for e, held in carol_room_keys.items()
        for g in range(held.generation, 6)
    ] + list(kept.space_keys.values())
    for _seq, sender, client_id, epoch, ttl, framed in rows[1:]:
        generation, box = roomkeys.unframe(bytes(framed))
        assert generation == 0  # a shared room does not ratchet on joins
        header = chatcrypto.MessageHeader(
            s.space_id, room["room_id"], epoch, bytes(sender), bytes(client_id), ttl
        )
        for key in candidates:
            for claimed in {0, 1, epoch}:
                with pytest.raises(VerificationError):
                    chatcrypto.open_message(key, header._replace(epoch=claimed), bytes(box))
        # Control: Bob's key for the new epoch opens it.
        (bob_m,) = [m for m in s.bob.keystore().load().memberships if m.space_id == s.space_id]
        bob_key = bob_m.room_keys[room["room_id"]][1].key
        assert chatcrypto.open_message(bob_key, header, bytes(box))
    # And her old key still opens the message from before (nothing was re-encrypted).
    _seq, sender, client_id, epoch, ttl, framed = rows[0]
    box = roomkeys.unframe(bytes(framed))[1]
    header = chatcrypto.MessageHeader(
        s.space_id, room["room_id"], epoch, bytes(sender), bytes(client_id), ttl
    )
    assert chatcrypto.open_message(carol_room_keys[0].key, header, box).text == "before the kick"

    # A member who joins this shared room now gets the current epoch's key from a member
    # (Bob, on his next command) and reads from there on; the epoch before her arrival stays
    # closed to her.
    dave = user("dave")
    dave.json("join", s.link, "--as", "Dave")
    s.bob.run("rooms", s.space_id)  # any command by a key holder seals the key to Dave
    result = dave.run("read", s.space_id, "general", "--json")
    assert [r["text"] for r in json.loads(result.stdout)] == [
        "after the kick: Carol must not read this",
        "agreed",
    ]
    assert "1 message(s) are not readable" in result.stderr


def _member_key(seed: bytes) -> bytes:
    from client.core import crypto

    return crypto.public_signing_key(seed)


# -- the server is blind -------------------------------------------------------------------------


def test_server_stores_no_text_captions_or_names(make_server, user, tmp_path: Path):
    server = make_server()
    alice, bob = user("alice"), user("bob")
    created = alice.json(
        "space",
        "create",
        "Quokka Appreciation 4417",
        "--server",
        server.url,
        "--as",
        "Marguerite Oyelaran",
    )
    space_id = created["space_id"]
    bob.json("join", created["link"], "--as", "Thaddeus Brightwater")
    alice.run("room", "create", space_id, "Whispering Lighthouse", "--kind", "chat")
    alice.run("room", "create", space_id, "Velvet Bulletin", "--kind", "channel")
    alice.run("send", space_id, "Whispering Lighthouse", "the treasure is under platform nine")
    bob.run(
        "send", space_id, "Whispering Lighthouse", "meet me at the orangery at dusk", "--ttl", "1h"
    )
    alice.run("send", space_id, "Velvet Bulletin", "announcement: marmalade shortage ahead")
    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_with_gps(800, 600))
    alice.run(
        "story",
        "post",
        space_id,
        "Velvet Bulletin",
        str(photo),
        "--caption",
        "caption about gooseberries",
    )
    assert len(bob.json("story", "list", space_id, "Velvet Bulletin")) == 1
    assert len(bob.json("read", space_id, "Whispering Lighthouse")) == 2

    needles = [
        "Quokka Appreciation 4417",
        "Marguerite Oyelaran",
        "Thaddeus Brightwater",
        "Whispering Lighthouse",
        "Velvet Bulletin",
        "treasure is under platform",
        "orangery at dusk",
        "marmalade shortage",
        "gooseberries",
    ]
    server.stop()  # flush everything it has
    files = [*data_files(server), server.log_path]
    for needle in needles:
        for encoded in {needle.encode(), needle.lower().encode(), needle.encode("utf-16-le")}:
            found = [p.name for p in files if encoded in p.read_bytes()]
            assert found == [], f"{needle!r} found in {found}"
    for what, needle in gps_needles().items():
        assert [p.name for p in files if needle in p.read_bytes()] == [], what
