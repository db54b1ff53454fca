"""Rooms of a space and their keys (DESIGN §5; the key rules are in :mod:`protocol.roomkeys`).

A room is a signed :class:`~protocol.records.RoomCreate` record; its name is encrypted under
the space key. Each room has one symmetric key per space epoch (a new epoch starts whenever
someone leaves or is removed). The first member who needs the key for an epoch makes it,
commits to it in a signed :class:`~protocol.records.RoomKey` record and seals it (crypto_box,
the plaintext naming space, room, epoch and generation) to every member; afterwards any
member who holds it seals it to members who lack it — on every command they run — so key
delivery never waits on one person being online.

An envelope is accepted only if it opens, names this room and epoch, comes from someone who
was a member during that epoch, and carries the key committed to on the chain. Refusals are
remembered for the session and shown (a message is "not shown: refused ..."; a send fails).

History: in a ``since-join`` room the epoch's key moves one generation forward (one-way) on
every join, members advance locally, and a joiner is sealed the generation its join started,
so nothing said before it joined opens for it. In a ``shared`` room a joiner gets the epoch's
key (generation 0) and reads the epoch's history.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from client.core import crypto
from client.core.errors import ServerError, UsageError, VerificationError
from client.core.keystore import HeldRoomKey
from client.core.space import SpaceSession, chain
from protocol import roomkeys
from protocol.errors import ErrorCode
from protocol.ids import new_id
from protocol.records import (
    Record,
    RecordBody,
    RoomCreate,
    RoomGrant,
    RoomKey,
    RoomKind,
    Roster,
    Topology,
    fingerprint,
)
from protocol.roomkeys import HistoryMode
from protocol.wire import (
    Append,
    Appended,
    Done,
    DropEnvelope,
    Envelope,
    EnvelopeHolders,
    Envelopes,
    GetEnvelopeHolders,
    GetEnvelopes,
)


class RoomKeyUnavailable(VerificationError):
    """No member holding this epoch's room key has shared it with us yet."""


class RoomKeyRefused(RoomKeyUnavailable):
    """The only envelopes for this key failed the checks (relabelled, from a non-member,
    or a key that does not match the commitment on the chain)."""


def _unavailable(session: SpaceSession, room_id: str, epoch: int, why: str) -> RoomKeyUnavailable:
    refused = session.refused_keys.get((room_id, epoch))
    if refused is None:
        return RoomKeyUnavailable(why)
    return RoomKeyRefused(f"refused this room's key for epoch {epoch}: {refused}")


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


def commitment(
    session: SpaceSession, room_id: str, epoch: int, generation: int, key: bytes
) -> bytes:
    return roomkeys.key_commitment(session.space_id, room_id, epoch, generation, key)


def _advance(
    session: SpaceSession, room_id: str, epoch: int, held: HeldRoomKey, generation: int
) -> bytes:
    return roomkeys.advance(held.key, session.space_id, room_id, epoch, held.generation, generation)


def _seal_room_key(
    session: SpaceSession,
    roster: Roster,
    room_id: str,
    held: HeldRoomKey,
    recipients: list[bytes],
) -> tuple[list[RoomKey], list[Envelope]]:
    """Envelopes of the current epoch's key for ``recipients``, each at the generation its
    join started (never older than what we hold), and the commitments they still need."""
    commits: dict[int, RoomKey] = {}
    envelopes = []
    for recipient in recipients:
        member = roster.members.get(recipient)
        if member is None:
            continue
        generation = max(roster.member_generation(room_id, recipient), held.generation)
        key = _advance(session, room_id, roster.epoch, held, generation)
        commit = commitment(session, room_id, roster.epoch, generation, key)
        committed = roster.room_keys.get((room_id, roster.epoch, generation))
        if committed is None:
            commits[generation] = RoomKey(room_id, roster.epoch, generation, commit)
        elif committed[0] != commit:
            continue  # never spread a key the chain disowns (reading reports the conflict)
        box = crypto.seal_key(
            session.m.box_secret,
            member.box_key,
            session.space_id,
            room_id,
            roster.epoch,
            generation,
            key,
        )
        envelopes.append(Envelope(room_id, roster.epoch, recipient, session.member_key, box))
    return [commits[g] for g in sorted(commits)], envelopes


def _member_generations(roster: Roster, history: HistoryMode) -> set[int]:
    """The generations a new room's members need (before the room is on the chain)."""
    if history != "since-join":
        return {0}
    return {0} | {m.generation for m in roster.members.values() if m.joined_seq > roster.epoch_seq}


async def create_room(
    session: SpaceSession,
    name: str,
    kind: RoomKind,
    *,
    lobby: bool = False,
    stage: bool = False,
    topology: Topology = "auto",
    ttl: int = 0,
    history: HistoryMode = "since-join",
) -> RoomView:
    if not name.strip():
        raise UsageError("the room needs a name")
    existing = {v.name.lower() for v in rooms(session)}
    if name.strip().lower() in existing:
        raise UsageError(f"there is already a room called {name.strip()!r}")
    if kind == "conference":
        history = "shared"  # no messages; a call's media keys ratchet on joins by themselves
    room_id = new_id()
    base = HeldRoomKey(0, crypto.random_key())

    def bodies(roster: Roster) -> list[RecordBody]:
        name_box = crypto.secretbox(
            session.space_key(roster.epoch), msgspec.msgpack.encode(RoomName(name.strip()))
        )
        spec = RoomCreate(
            room_id, kind, roster.epoch, name_box, lobby, stage, topology, ttl, history
        )
        commits = [
            RoomKey(
                room_id,
                roster.epoch,
                g,
                commitment(
                    session,
                    room_id,
                    roster.epoch,
                    g,
                    _advance(session, room_id, roster.epoch, base, g),
                ),
            )
            for g in sorted(_member_generations(roster, history))
        ]
        return [spec, *commits]

    def envelopes(roster: Roster) -> list[Envelope]:
        session.m.room_keys.setdefault(room_id, {})[roster.epoch] = base
        return _seal_room_key(session, roster, room_id, base, list(roster.members))[1]

    await session.append(bodies, envelopes=envelopes)
    return resolve_room(session, room_id)


async def set_publisher(session: SpaceSession, room: RoomView, member: bytes, on: bool) -> None:
    await session.append([RoomGrant(room.room_id, member, on)])


class RoomKeyConflict(VerificationError):
    """A room key does not match the commitment on the chain: someone made a second key."""


def _check_commit(
    session: SpaceSession, room_id: str, epoch: int, generation: int, key: bytes
) -> None:
    committed = session.verified.room_keys.get((room_id, epoch, generation))
    if committed is None:
        return
    commit, author = committed
    if commitment(session, room_id, epoch, generation, key) != commit:
        raise RoomKeyConflict(
            f"room key conflict: member {fingerprint(author)} committed a different key for "
            f"this room (epoch {epoch}, generation {generation}) than the one this device "
            "holds; someone is trying to split the room"
        )


async def room_key(
    session: SpaceSession, room_id: str, epoch: int | None = None, generation: int | None = None
) -> bytes:
    """The room's key for ``epoch`` and ``generation`` (default: the current ones), fetching
    or making it, checked against the commitment on the chain."""
    roster = session.verified
    current = epoch is None or epoch == roster.epoch
    epoch = roster.epoch if epoch is None else epoch
    generation = roster.room_generation(room_id) if generation is None else generation
    cache = session.room_key_cache
    slot = (room_id, epoch, generation)
    if slot in cache:
        return cache[slot]
    held = session.m.room_keys.setdefault(room_id, {})
    if epoch not in held:
        await _fetch_room_keys(session, room_id)
    if epoch not in held and current:
        await _make_room_key(session, room_id)
        return await room_key(session, room_id, epoch, generation)
    if epoch not in held:
        raise _unavailable(
            session, room_id, epoch, "this device never received the key for those messages"
        )
    if generation < held[epoch].generation:
        raise RoomKeyUnavailable("sent before this member joined (the room's history is closed)")
    key = _advance(session, room_id, epoch, held[epoch], generation)
    _check_commit(session, room_id, epoch, generation, key)
    cache[slot] = key
    return key


async def _append(session: SpaceSession, records: list[Record], envelopes: list[Envelope]) -> bool:
    """Append key commitments and envelopes; False if the server refused them because the
    chain moved on meanwhile (someone else committed, or a departure changed the epoch)."""
    try:
        await session.conn.request(Append(session.conn.next_id(), records, envelopes), Appended)
    except ServerError as exc:
        if exc.code not in (ErrorCode.CONFLICT, ErrorCode.FORBIDDEN, ErrorCode.INVALID_MESSAGE):
            raise
        return False
    return True


async def _make_room_key(session: SpaceSession, room_id: str) -> None:
    """Make the current epoch's key if nobody committed to one; else wait for an envelope."""
    roster = session.verified
    if (room_id, roster.epoch) not in roster.room_key_epochs:
        base = HeldRoomKey(0, crypto.random_key())
        commits, envelopes = _seal_room_key(session, roster, room_id, base, list(roster.members))
        records = chain(session.m, session.space_id, roster, commits)
        if not await _append(session, list(records), envelopes):
            await session.sync()  # someone else made it, or the epoch moved on: use theirs
            await _fetch_room_keys(session, room_id)
            if roster.epoch != session.verified.epoch:
                raise RoomKeyUnavailable("the space's key epoch moved on; try again")
            if roster.epoch in session.m.room_keys.get(room_id, {}):
                return
            raise _unavailable(session, room_id, roster.epoch, NOT_SHARED_YET)
        session.m.room_keys.setdefault(room_id, {})[roster.epoch] = base
        session._remember()
        await session.sync()
        return
    slot = (room_id, roster.epoch)
    committers = sorted(
        {
            fingerprint(author)
            for (r, e, _), (_, author) in roster.room_keys.items()
            if (r, e) == slot
        }
    )
    raise _unavailable(
        session,
        room_id,
        roster.epoch,
        f"{NOT_SHARED_YET} (the key was made by member {', '.join(committers)}; if it never "
        "comes, that member may be withholding it, and removing them makes a new key)",
    )


NOT_SHARED_YET = (
    "no member has shared this room's current key with you yet; it arrives as soon as "
    "any member who holds it runs salon"
)


async def _fetch_room_keys(session: SpaceSession, room_id: str) -> None:
    """Open the envelopes sealed to us for epochs we lack (noting why any were refused)."""
    roster = session.verified
    held = session.m.room_keys.setdefault(room_id, {})
    reply = await session.conn.request(
        GetEnvelopes(session.conn.next_id(), room_id, min(held, default=0)), Envelopes
    )
    synced = False
    for envelope in reply.envelopes:
        if envelope.epoch in held or envelope.recipient != session.member_key:
            continue
        try:
            try:
                held[envelope.epoch] = _open_room_envelope(session, roster, room_id, envelope)
            except VerificationError:
                if synced:
                    raise
                # The envelope may be newer than our view of the chain: its commitment (or
                # its sender's join) was appended after we last synced — with several server
                # instances, easily. Judge it again on the chain as it is now, once.
                synced = True
                roster = await session.sync()
                held[envelope.epoch] = _open_room_envelope(session, roster, room_id, envelope)
        except VerificationError as exc:
            why = str(exc)
            sender = fingerprint(envelope.sender)
            if sender not in why:  # say who sealed it, so members know whom to kick
                why = f"{why} (sealed by {sender})"
            session.refused_keys[(room_id, envelope.epoch)] = why
            if envelope.epoch == roster.epoch:
                # Free our slot so a member holding the committed key seals it to us again.
                await session.conn.request(
                    DropEnvelope(session.conn.next_id(), room_id, envelope.epoch), Done
                )
    session._remember()


def _open_room_envelope(
    session: SpaceSession, roster: Roster, room_id: str, envelope: Envelope
) -> HeldRoomKey:
    """Open one envelope: from a member of that epoch, bound to this room and epoch, at a
    generation we may hold, matching the key committed to on the chain."""
    sender_box = roster.box_keys.get(envelope.sender)
    if sender_box is None or not roster.member_during(envelope.sender, envelope.epoch):
        raise VerificationError(
            "a room key envelope comes from someone who was not a member in its epoch"
        )
    sealed = crypto.open_key(
        session.m.box_secret, sender_box, envelope.box, session.space_id, room_id, envelope.epoch
    )
    committed = roster.room_keys.get((room_id, envelope.epoch, sealed.generation))
    if committed is None:
        raise VerificationError("a room key envelope carries a key nobody committed to")
    if commitment(session, room_id, envelope.epoch, sealed.generation, sealed.key) != committed[0]:
        raise RoomKeyConflict(
            "a room key envelope carries a different key than the one committed to on the "
            f"chain (sealed by {fingerprint(envelope.sender)})"
        )
    return HeldRoomKey(sealed.generation, sealed.key)


async def share_room_keys(session: SpaceSession) -> int:
    """Seal each current room key we hold to members who lack it; returns envelopes sent."""
    roster = session.verified
    if session.member_key not in roster.members:
        return 0
    commits: list[RecordBody] = []
    envelopes: list[Envelope] = []
    for room_id in roster.rooms:
        held = session.m.room_keys.get(room_id, {})
        if roster.epoch not in held:
            await _fetch_room_keys(session, room_id)
            held = session.m.room_keys.get(room_id, {})
        mine = held.get(roster.epoch)
        if mine is None:
            continue
        holders = await session.conn.request(
            GetEnvelopeHolders(session.conn.next_id(), room_id, roster.epoch), EnvelopeHolders
        )
        missing = [k for k in roster.members if k not in set(holders.recipients)]
        if not missing:
            continue
        try:
            _check_commit(session, room_id, roster.epoch, mine.generation, mine.key)
        except RoomKeyConflict:
            continue  # never spread a key the chain disowns
        room_commits, room_envelopes = _seal_room_key(session, roster, room_id, mine, missing)
        commits += room_commits
        envelopes += room_envelopes
    if envelopes:
        records = chain(session.m, session.space_id, roster, commits)
        if not await _append(session, list(records), envelopes):
            return 0  # the chain moved on while we sealed; the next run catches up
        if records:
            await session.sync()
    return len(envelopes)
