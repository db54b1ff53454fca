"""The server's chat rules (spaces/chat.py), pure: who may post where, with which epoch,
and how long a message lives."""

from __future__ import annotations

import pytest

from protocol import roomkeys
from protocol.errors import Forbidden, InvalidMessage, NotFound, Unauthenticated
from protocol.records import Member, Room, RoomCreate, Roster
from spaces.chat import check_post, check_read, check_story, message_lifetime
from spaces.membership import Stale

OWNER, MOD, MEMBER, PUBLISHER, STRANGER = (bytes([i]) * 32 for i in range(1, 6))


def roster() -> Roster:
    r = Roster(space_id="s" * 24, founder=OWNER, epoch=2)
    for key, role in (
        (OWNER, "owner"),
        (MOD, "moderator"),
        (MEMBER, "member"),
        (PUBLISHER, "member"),
    ):
        r.members[key] = Member(key, key, role, 0)  # type: ignore[arg-type]
    r.rooms["chat-room-01"] = Room(RoomCreate("chat-room-01", "chat", 0, b"n"))
    r.rooms["channel-0001"] = Room(
        RoomCreate("channel-0001", "channel", 0, b"n", ttl=60), {PUBLISHER}
    )
    r.rooms["conference01"] = Room(RoomCreate("conference01", "conference", 0, b"n"))
    return r


@pytest.mark.parametrize("who", [OWNER, MOD, MEMBER, PUBLISHER])
def test_every_member_posts_in_chat_rooms(who: bytes) -> None:
    assert check_post(roster(), "chat-room-01", who, 2).spec.kind == "chat"


@pytest.mark.parametrize("who", [OWNER, MOD, PUBLISHER])
def test_channel_publishers(who: bytes) -> None:
    assert check_post(roster(), "channel-0001", who, 2).spec.kind == "channel"
    assert check_story(roster(), "channel-0001", who, 2).spec.kind == "channel"


def test_plain_member_may_not_post_in_a_channel() -> None:
    with pytest.raises(Forbidden, match="not allowed"):
        check_post(roster(), "channel-0001", MEMBER, 2)
    with pytest.raises(Forbidden, match="not allowed"):
        check_story(roster(), "channel-0001", MEMBER, 2)
    assert check_read(roster(), "channel-0001", MEMBER).spec.kind == "channel"


def test_conference_rooms_have_no_messages() -> None:
    with pytest.raises(InvalidMessage, match="conference"):
        check_post(roster(), "conference01", OWNER, 2)
    with pytest.raises(InvalidMessage, match="conference"):
        check_read(roster(), "conference01", MEMBER)


def test_stories_only_in_channels() -> None:
    with pytest.raises(InvalidMessage, match="channels"):
        check_story(roster(), "chat-room-01", OWNER, 2)


def test_unknown_room_and_non_member() -> None:
    with pytest.raises(NotFound):
        check_read(roster(), "no-such-room", MEMBER)
    with pytest.raises(Forbidden):
        check_post(roster(), "chat-room-01", STRANGER, 2)
    assert not issubclass(Forbidden, Unauthenticated)


@pytest.mark.parametrize("epoch", [0, 1, 3])
def test_only_the_current_epoch_is_accepted(epoch: int) -> None:
    """A message encrypted with an older epoch's key could be read by a member who left."""
    with pytest.raises(Stale):
        check_post(roster(), "chat-room-01", MEMBER, epoch)


def test_since_join_rooms_take_only_the_current_key_generation() -> None:
    """After a join, a since-join room's messages must use the new generation (else the
    joiner could not read what is sent after it); a shared room stays at generation 0."""
    r = roster()
    r.generation = 3  # three joins since epoch 2 began
    r.rooms["shared-room1"] = Room(RoomCreate("shared-room1", "chat", 0, b"n", history="shared"))
    assert check_post(r, "chat-room-01", MEMBER, 2, roomkeys.frame(3, b"box"))
    assert check_post(r, "shared-room1", MEMBER, 2, roomkeys.frame(0, b"box"))
    for room_id, generation in (("chat-room-01", 2), ("chat-room-01", 0), ("shared-room1", 3)):
        with pytest.raises(Stale):
            check_post(r, room_id, MEMBER, 2, roomkeys.frame(generation, b"box"))
    with pytest.raises(InvalidMessage):
        check_post(r, "chat-room-01", MEMBER, 2, b"\x00")  # no room for a generation


def test_lifetimes() -> None:
    r = roster()
    assert message_lifetime(r.rooms["chat-room-01"], 0) == 0  # kept
    assert message_lifetime(r.rooms["chat-room-01"], 30) == 30
    assert message_lifetime(r.rooms["channel-0001"], 0) == 60  # the room's default
    assert message_lifetime(r.rooms["channel-0001"], 3600) == 3600  # the sender's choice
    for bad in (-1, 367 * 86400):
        with pytest.raises(InvalidMessage):
            message_lifetime(r.rooms["chat-room-01"], bad)
