"""Rooms of a space and their keys (DESIGN §5).

A room is a signed :class:`~protocol.records.RoomCreate` record; its name is encrypted under
the space key. Each room has one symmetric key per space epoch (a new epoch starts whenever
someone leaves or is removed). The first member who needs the key for an epoch makes it and
seals it (crypto_box) to every member; afterwards any member who holds it seals it to members
who lack it — on every command they run — so key delivery never waits on one person being
online. A member who joins later gets only the current epoch's key: earlier messages stay
unreadable to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from client import crypto
from client.errors import ServerError, UsageError, VerificationError
from client.space import SpaceSession
from protocol.ids import new_id
from protocol.records import RoomCreate, RoomGrant, RoomKind, Roster, Topology
from protocol.wire import (
    Append,
    Appended,
    Envelope,
    EnvelopeHolders,
    Envelopes,
    GetEnvelopeHolders,
    GetEnvelopes,
)


class RoomKeyUnavailable(VerificationError):
    """No member holding this epoch's room key has shared it with us yet."""


class RoomName(msgspec.Struct):
    name: str


@dataclass(frozen=True)
class RoomView:
    room_id: str
    name: str
    spec: RoomCreate
    publishers: frozenset[bytes]

    @property
    def kind(self) -> RoomKind:
        return self.spec.kind


def rooms(session: SpaceSession) -> list[RoomView]:
    views = []
    for room_id, room in session.verified.rooms.items():
        key = session.space_key(room.spec.epoch)
        try:
            plain = crypto.secretbox_open(key, room.spec.name_box, "a room name")
            name = msgspec.msgpack.decode(plain, type=RoomName).name
        except (VerificationError, msgspec.DecodeError):
            name = "(unreadable name)"
        views.append(RoomView(room_id, name, room.spec, frozenset(room.publishers)))
    return sorted(views, key=lambda v: (v.name.lower(), v.room_id))


def resolve_room(session: SpaceSession, query: str, kinds: tuple[str, ...] = ()) -> RoomView:
    """A room by id, id prefix (4+ characters) or name; optionally of given kinds."""
    found = rooms(session)
    q = query.strip()
    matches = [v for v in found if v.room_id == q]
    matches = matches or [v for v in found if v.name.lower() == q.lower()]
    matches = matches or [v for v in found if len(q) >= 4 and v.room_id.startswith(q)]
    if not matches:
        raise UsageError(f"no room {query!r} in this space (see 'salon rooms')")
    if len(matches) > 1:
        raise UsageError(f"several rooms match {query!r}; use the room id")
    room = matches[0]
    if kinds and room.kind not in kinds:
        raise UsageError(f"{room.name!r} is a {room.kind} room, not a {' or '.join(kinds)}")
    return room


def _seal_room_key(
    session: SpaceSession, roster: Roster, room_id: str, key: bytes, recipients: list[bytes]
) -> list[Envelope]:
    return [
        Envelope(
            room_id,
            roster.epoch,
            recipient,
            session.member_key,
            crypto.seal_to(session.m.box_secret, roster.members[recipient].box_key, key),
        )
        for recipient in recipients
        if recipient in roster.members
    ]


async def create_room(
    session: SpaceSession,
    name: str,
    kind: RoomKind,
    *,
    lobby: bool = False,
    stage: bool = False,
    topology: Topology = "auto",
    ttl: int = 0,
) -> RoomView:
    if not name.strip():
        raise UsageError("the room needs a name")
    existing = {v.name.lower() for v in rooms(session)}
    if name.strip().lower() in existing:
        raise UsageError(f"there is already a room called {name.strip()!r}")
    room_id = new_id()
    key = crypto.random_key()

    def bodies(roster: Roster) -> list[RoomCreate]:
        name_box = crypto.secretbox(
            session.space_key(roster.epoch), msgspec.msgpack.encode(RoomName(name.strip()))
        )
        return [RoomCreate(room_id, kind, roster.epoch, name_box, lobby, stage, topology, ttl)]

    def envelopes(roster: Roster) -> list[Envelope]:
        session.m.room_keys.setdefault(room_id, {})[roster.epoch] = key
        return _seal_room_key(session, roster, room_id, key, list(roster.members))

    await session.append(bodies, envelopes=envelopes)
    return resolve_room(session, room_id)


async def set_publisher(session: SpaceSession, room: RoomView, member: bytes, on: bool) -> None:
    await session.append([RoomGrant(room.room_id, member, on)])


async def room_key(session: SpaceSession, room_id: str, epoch: int | None = None) -> bytes:
    """The room's key for ``epoch`` (default: the current one), fetching or making it."""
    roster = session.verified
    epoch = roster.epoch if epoch is None else epoch
    held = session.m.room_keys.setdefault(room_id, {})
    if epoch in held:
        return held[epoch]
    await _fetch_room_keys(session, room_id)
    if epoch in held:
        return held[epoch]
    if epoch != roster.epoch:
        raise RoomKeyUnavailable("this device never received the key for those messages")
    holders = await session.conn.request(
        GetEnvelopeHolders(session.conn.next_id(), room_id, epoch), EnvelopeHolders
    )
    if not holders.recipients:
        key = crypto.random_key()
        envelopes = _seal_room_key(session, roster, room_id, key, list(roster.members))
        try:
            await session.conn.request(Append(session.conn.next_id(), [], envelopes), Appended)
        except ServerError as exc:
            if exc.code not in ("forbidden", "invalid_message"):
                raise
            await session.sync()  # someone else made it, or the epoch moved on: use theirs
            return await room_key(session, room_id)
        held[epoch] = key
        session._remember()
        return key
    raise RoomKeyUnavailable(
        "no member has shared this room's current key with you yet; it arrives as soon as "
        "any member who holds it runs salon"
    )


async def _fetch_room_keys(session: SpaceSession, room_id: str) -> None:
    roster = session.verified
    held = session.m.room_keys.setdefault(room_id, {})
    reply = await session.conn.request(
        GetEnvelopes(session.conn.next_id(), room_id, min(held, default=0)), Envelopes
    )
    for envelope in reply.envelopes:
        if envelope.epoch in held:
            continue
        sender_box = roster.box_keys.get(envelope.sender)
        if sender_box is None:
            continue
        held[envelope.epoch] = crypto.open_from(session.m.box_secret, sender_box, envelope.box)
    session._remember()


async def share_room_keys(session: SpaceSession) -> int:
    """Seal each current room key we hold to members who lack it; returns envelopes sent."""
    roster = session.verified
    if session.member_key not in roster.members:
        return 0
    envelopes: list[Envelope] = []
    for room_id in roster.rooms:
        held = session.m.room_keys.get(room_id, {})
        if roster.epoch not in held:
            await _fetch_room_keys(session, room_id)
            held = session.m.room_keys.get(room_id, {})
        key = held.get(roster.epoch)
        if key is None:
            continue
        holders = await session.conn.request(
            GetEnvelopeHolders(session.conn.next_id(), room_id, roster.epoch), EnvelopeHolders
        )
        missing = [k for k in roster.members if k not in set(holders.recipients)]
        envelopes += _seal_room_key(session, roster, room_id, key, missing)
    if envelopes:
        try:
            await session.conn.request(Append(session.conn.next_id(), [], envelopes), Appended)
        except ServerError as exc:
            if exc.code not in ("forbidden", "invalid_message"):
                raise
            return 0  # the epoch moved on while we sealed; the next run catches up
    return len(envelopes)
