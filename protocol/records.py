"""Signed membership records and the roster they build (sans-I/O).

A space's membership is a hash chain of records, each signed by the member who made it.
The chain starts with a genesis record signed by the founding key; the space id is derived
from that record, so a server cannot substitute another founder. Both the server (to refuse
bad appends) and every client (to refuse a roster the server altered, DESIGN §1.3) replay the
chain through :class:`Roster`, which applies the same rules:

- each record's ``prev`` is the hash of the record before it and ``seq`` counts up from 0;
- each signature verifies under the author's member key (Ed25519);
- the author was an active member with the right role when the record was made;
- a join carries a signature by the invite key of an invite record earlier in the chain,
  so the joiner proves it held the link's secret;
- a rekey comes from an owner or moderator, or from any member while a departure awaits one
  (the server also checks that its envelopes reach exactly the current members).
- bodies stay within fixed sizes and a member makes at most :data:`PROFILE_QUOTA` profile
  records within :data:`PROFILE_WINDOW` seconds (by their signed times), so no member can grow
  the chain's cost for everyone else (the server adds time-based rate limits on top).

A verified :class:`Roster` is also what a client keeps between commands (:func:`encode_roster`):
it fetches only the records after its cached head, so a command's cost does not grow with the
chain. For checking messages signed at an older head it keeps, besides the current state, the
few facts that change who may post: role changes, room creation, publisher grants and epochs
(:meth:`Roster.at`), never the whole chain.

Errors (all :class:`ProtocolError`): :class:`RecordError` (malformed, bad signature),
:class:`ChainConflict` (not on the current head), :class:`RecordForbidden` (well formed
but not allowed), :class:`RecordTooLarge` (a body over its size cap) and
:class:`RecordRateLimited` (over the profile quota).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from collections.abc import KeysView
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from protocol.errors import Conflict, Forbidden, InvalidMessage, RateLimited, TooLarge
from protocol.ids import is_valid_id
from protocol.labels import FINGERPRINT_DOMAIN, JOIN_DOMAIN, RECORD_DOMAIN
from protocol.roomkeys import HistoryMode

Role = Literal["owner", "moderator", "member"]
RoomKind = Literal["chat", "channel", "conference"]
Topology = Literal["auto", "mesh", "sfu"]
ROLE_RANK: Final[dict[str, int]] = {"member": 1, "moderator": 2, "owner": 3}
ZERO_HASH: Final = bytes(32)
KEY_LEN: Final = 32

# Size caps of record bodies (bytes). A profile holds a display name and a 128-pixel JPEG
# avatar; the rest hold short names. Together with PROFILE_QUOTA these bound what one member
# can add to the chain that every client fetches.
MAX_PROFILE_BOX: Final = 14_336
MAX_META_BOX: Final = 4_096
MAX_NAME_BOX: Final = 1_024
MAX_PREV_BOX: Final = 128  # secretbox of a 32-byte key is 72 bytes
# At most PROFILE_QUOTA profile records by one member whose signed times lie within
# PROFILE_WINDOW seconds of each other (the server refuses records whose time is far from
# its clock, so the signed times are honest enough for this to be a real rate).
PROFILE_QUOTA: Final = 20
PROFILE_WINDOW: Final = 3600
MAX_ROOMS: Final = 1_000
# Record hashes a roster keeps, so readers can check the head (seq, hash) that others sign
# (protocol.forks) without keeping the chain: every hash of the last HASH_WINDOW records, and
# one every HASH_CHECKPOINT records before them. An older hash is proven by fetching the
# records from it up to the next checkpoint and checking their links (client.core.space.load_hash).
HASH_WINDOW: Final = 1_024
HASH_CHECKPOINT: Final = 256


class RecordError(InvalidMessage):
    """A record is malformed, out of chain order, or badly signed."""


class RecordForbidden(Forbidden):
    """A record is well formed but its author may not make it."""


class ChainConflict(Conflict):
    """A record was made on a head that is no longer the head (retry on the new head)."""


class RecordTooLarge(TooLarge):
    """A record body is over its size cap."""


class RecordRateLimited(RateLimited):
    """A member is over a quota of records of one kind."""


class Genesis(msgspec.Struct, tag="genesis", frozen=True):
    box_key: bytes  # the founder's X25519 key for sealed envelopes
    nonce: bytes  # makes two spaces of one founder key distinct


class SpaceMeta(msgspec.Struct, tag="meta", frozen=True):
    epoch: int
    box: bytes  # secretbox(space key[epoch], name and description)


class Profile(msgspec.Struct, tag="profile", frozen=True):
    epoch: int
    box: bytes  # secretbox(space key[epoch], display name and avatar)


class InviteCreate(msgspec.Struct, tag="invite", frozen=True):
    invite_id: str
    invite_key: bytes  # Ed25519 public key derived from the link's secret
    role: Role
    expires_at: int
    max_uses: int


class InviteRevoke(msgspec.Struct, tag="invite_revoke", frozen=True):
    invite_id: str


class Join(msgspec.Struct, tag="join", frozen=True):
    invite_id: str
    box_key: bytes
    invite_sig: bytes  # by the invite key over join_statement(...)


class RoleChange(msgspec.Struct, tag="role", frozen=True):
    member: bytes
    role: Role


class Remove(msgspec.Struct, tag="remove", frozen=True):
    member: bytes
    ban: bool


class Leave(msgspec.Struct, tag="leave", frozen=True):
    pass


class RoomCreate(msgspec.Struct, tag="room", frozen=True):
    """A room. Its name is encrypted; its kind and settings are public to the server, which
    enforces them (who may post, lobby, stage, topology, default message lifetime)."""

    room_id: str
    kind: RoomKind
    epoch: int
    name_box: bytes  # secretbox(space key[epoch], name)
    lobby: bool = False
    stage: bool = False
    topology: Topology = "auto"
    ttl: int = 0  # default lifetime of messages in seconds; 0 = keep
    # Who reads what was said before they joined (protocol.roomkeys): "since-join" ratchets
    # the room key on every join, "shared" gives joiners the current epoch's key.
    history: HistoryMode = "since-join"


class RoomKey(msgspec.Struct, tag="room_key", frozen=True):
    """Commits to a room's key of one (epoch, generation); the first commitment wins, and
    clients accept only a key that matches it (protocol.roomkeys.key_commitment)."""

    room_id: str
    epoch: int
    generation: int
    commit: bytes


class RoomGrant(msgspec.Struct, tag="room_grant", frozen=True):
    """Let a member publish in a channel (or take that right away)."""

    room_id: str
    member: bytes
    publisher: bool


class Rekey(msgspec.Struct, tag="rekey", frozen=True):
    """A new space-key epoch. The key itself travels in envelopes sealed to every member in
    the same append. ``prev_epoch`` is normally ``epoch - 1``; a rekey that repairs a bad
    one (whose key nobody could open) points past it to the last good epoch."""

    epoch: int
    prev_epoch: int
    prev_box: bytes  # secretbox(new space key, key of prev_epoch): holders walk back


RecordBody = (
    Genesis
    | SpaceMeta
    | Profile
    | InviteCreate
    | InviteRevoke
    | Join
    | RoleChange
    | Remove
    | Leave
    | Rekey
    | RoomCreate
    | RoomKey
    | RoomGrant
)


class Record(msgspec.Struct, frozen=True):
    space_id: str
    seq: int
    prev: bytes
    author: bytes
    created_at: int
    body: RecordBody
    sig: bytes = b""


_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)


def signing_bytes(record: Record) -> bytes:
    """The exact bytes a record's signature covers (everything but the signature)."""
    unsigned = (
        record.space_id,
        record.seq,
        record.prev,
        record.author,
        record.created_at,
        record.body,
    )
    return RECORD_DOMAIN + _encoder.encode(unsigned)


def encode_record(record: Record) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    try:
        return _record_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"malformed record: {exc}") from None


def record_hash(record: Record) -> bytes:
    return hashlib.blake2b(encode_record(record), digest_size=32).digest()


def derive_space_id(founder: bytes, genesis: Genesis) -> str:
    digest = hashlib.blake2b(founder + genesis.box_key + genesis.nonce, digest_size=15).digest()
    return base64.b32encode(digest).decode().lower()


def join_statement(space_id: str, member: bytes, box_key: bytes, invite_id: str) -> bytes:
    """What an invite key signs to admit one member key into one space."""
    return JOIN_DOMAIN + _encoder.encode((space_id, member, box_key, invite_id))


def fingerprint(member_key: bytes) -> str:
    """Short, stable, human-comparable id of a member key (16 hex digits)."""
    return hashlib.sha256(FINGERPRINT_DOMAIN + member_key).hexdigest()[:16]


def verify_signature(key: bytes, message: bytes, signature: bytes) -> bool:
    if len(key) != KEY_LEN or len(signature) != 64:
        return False
    try:
        VerifyKey(key).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


@dataclass
class Member:
    key: bytes
    box_key: bytes
    role: Role
    joined_seq: int
    profile: Profile | None = None
    profile_times: list[int] = field(default_factory=list)  # of the last PROFILE_QUOTA
    generation: int = 0  # the space's join count in its epoch when this member joined


@dataclass
class Room:
    spec: RoomCreate
    publishers: set[bytes] = field(default_factory=set)
    created_seq: int = 0
    # key -> [(seq, publisher?)]: grants over time, to judge posts made at older heads
    publisher_log: dict[bytes, list[tuple[int, bool]]] = field(default_factory=dict)


@dataclass
class Roster:
    """The state a verified chain describes. Build with :meth:`from_records`."""

    space_id: str
    founder: bytes
    head_seq: int = -1
    head_hash: bytes = ZERO_HASH
    members: dict[bytes, Member] = field(default_factory=dict)
    departed: dict[bytes, bool] = field(default_factory=dict)  # key -> banned
    box_keys: dict[bytes, bytes] = field(default_factory=dict)  # every member ever: key -> box
    invites: dict[str, InviteCreate] = field(default_factory=dict)
    invite_uses: dict[str, int] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    epoch: int = 0
    epoch_seq: int = 0  # seq of the record that started the current space-key epoch
    last_departure_seq: int = -1
    meta: SpaceMeta | None = None
    rekeys: dict[int, Rekey] = field(default_factory=dict)
    rekey_authors: dict[int, bytes] = field(default_factory=dict)
    invite_authors: dict[str, bytes] = field(default_factory=dict)
    rooms: dict[str, Room] = field(default_factory=dict)
    # History, bounded by membership events (not by the chain's length):
    epoch_starts: list[int] = field(default_factory=lambda: [0])  # epoch -> seq it began
    role_log: dict[bytes, list[tuple[int, str]]] = field(default_factory=dict)  # "" = gone
    former_profiles: dict[bytes, Profile] = field(default_factory=dict)  # departed members
    hashes: dict[int, bytes] = field(default_factory=dict)  # seq -> record hash (see HASH_WINDOW)
    # Room keys (protocol.roomkeys): joins since the current epoch began (= the key
    # generation of since-join rooms), every member's tenures [joined seq, departed seq or
    # -1], the commitment (and its author) per room key, and who made each (room, epoch)'s
    # key (its first committer; a (room, epoch) is committed once it has one).
    generation: int = 0
    tenures: dict[bytes, list[list[int]]] = field(default_factory=dict)
    room_keys: dict[tuple[str, int, int], tuple[bytes, bytes]] = field(default_factory=dict)
    room_key_makers: dict[tuple[str, int], bytes] = field(default_factory=dict)

    @property
    def room_key_epochs(self) -> KeysView[tuple[str, int]]:
        """The (room, epoch) pairs whose key someone has committed to."""
        return self.room_key_makers.keys()

    @classmethod
    def from_records(cls, space_id: str, records: list[Record]) -> Roster:
        """Verify a whole chain from its genesis; raises RecordError/RecordForbidden."""
        if not records:
            raise RecordError("empty chain")
        genesis = records[0]
        if not isinstance(genesis.body, Genesis):
            raise RecordError("chain does not start with a genesis record")
        if derive_space_id(genesis.author, genesis.body) != space_id:
            raise RecordError("genesis record does not match the space id")
        roster = cls(space_id=space_id, founder=genesis.author)
        for record in records:
            roster.apply(record)
        return roster

    def copy(self) -> Roster:
        """An independent copy (applying records to it leaves this one untouched)."""
        return decode_roster(encode_roster(self))

    def at(self, seq: int) -> RosterAt | None:
        """What the chain said at head ``seq`` about epochs and posting rights (None if
        ``seq`` is not a head this roster has reached)."""
        if not 0 <= seq <= self.head_seq:
            return None
        return RosterAt(self, seq)

    def epoch_at(self, seq: int) -> int:
        return bisect.bisect_right(self.epoch_starts, seq) - 1

    def role_at(self, key: bytes, seq: int) -> str:
        """The member's role after record ``seq`` ("" if not a member then)."""
        log = self.role_log.get(key, [])
        i = bisect.bisect_right(log, seq, key=lambda event: event[0])
        return log[i - 1][1] if i else ""

    def may_post_at(self, room_id: str, key: bytes, seq: int) -> bool:
        """:meth:`may_post` as it was after record ``seq``."""
        room = self.rooms.get(room_id)
        role = self.role_at(key, seq)
        if room is None or room.created_seq > seq or not role or room.spec.kind == "conference":
            return False
        if room.spec.kind == "chat" or ROLE_RANK[role] >= ROLE_RANK["moderator"]:
            return True
        grants = room.publisher_log.get(key, [])
        i = bisect.bisect_right(grants, seq, key=lambda event: event[0])
        return bool(i) and grants[i - 1][1]

    @property
    def needs_rekey(self) -> bool:
        """True when someone departed after the current space key was made."""
        return self.last_departure_seq > self.epoch_seq

    def may_rekey(self, key: bytes) -> bool:
        """Owners and moderators may start a new space-key epoch at any time; a plain member
        only to complete a removal or a leave (after a leave, whoever comes next rekeys)."""
        member = self.members.get(key)
        if member is None:
            return False
        return ROLE_RANK[member.role] >= ROLE_RANK["moderator"] or self.needs_rekey

    def may_post(self, room_id: str, key: bytes) -> bool:
        """Chat rooms: every member. Channels: owners, moderators and granted publishers."""
        room = self.rooms.get(room_id)
        member = self.members.get(key)
        if room is None or member is None or room.spec.kind == "conference":
            return False
        if room.spec.kind == "chat":
            return True
        return ROLE_RANK[member.role] >= ROLE_RANK["moderator"] or key in room.publishers

    def generation_at(self, seq: int) -> int:
        """The join count of the epoch in force after record ``seq`` (what
        :attr:`generation` was then): joins after that epoch's rekey, up to ``seq``."""
        start = self.epoch_starts[self.epoch_at(seq)]
        return sum(
            1
            for spans in self.tenures.values()
            for joined, _ in spans
            if joined != 0 and start < joined <= seq
        )

    def room_generation(self, room_id: str) -> int:
        """The key generation a message to ``room_id`` uses at this head."""
        room = self.rooms.get(room_id)
        return self.generation if room is not None and room.spec.history == "since-join" else 0

    def member_generation(self, room_id: str, key: bytes) -> int:
        """The oldest key generation of the current epoch ``key`` may hold for the room:
        that of its join if it joined during this epoch (since-join rooms), else 0. A room
        made after the join has no history the member may not read: 0 too (so a member who
        joined during this epoch can create a room, committing to its generation 0)."""
        member = self.members.get(key)
        room = self.rooms.get(room_id)
        if member is None or room is None or room.spec.history != "since-join":
            return 0
        if room.created_seq > member.joined_seq:
            return 0
        return member.generation if member.joined_seq > self.epoch_seq else 0

    def member_during(self, key: bytes, epoch: int) -> bool:
        """Was ``key`` a member at some point while ``epoch`` was the current epoch? Only
        they may seal that epoch's keys: a removed member's envelope for a later one is
        refused, whatever the server says."""
        if not 0 <= epoch < len(self.epoch_starts):
            return False
        start = self.epoch_starts[epoch]
        end = (
            self.epoch_starts[epoch + 1]
            if epoch + 1 < len(self.epoch_starts)
            else self.head_seq + 1
        )
        return any(
            joined < end and (left < 0 or left > start)
            for joined, left in self.tenures.get(key, [])
        )

    def active(self, key: bytes) -> Member:
        member = self.members.get(key)
        if member is None:
            raise RecordForbidden("author is not a member of this space")
        return member

    def apply(self, record: Record) -> None:
        """Check one record against the chain so far and, if valid, apply it."""
        self._check_link(record)
        body = record.body
        if isinstance(body, Genesis):
            self._apply_genesis(record, body)
        elif isinstance(body, Join):
            self._apply_join(record, body)
        else:
            author = self.active(record.author)
            self._apply_member_record(record, author, body)
        self.head_seq = record.seq
        self.head_hash = record_hash(record)
        self.hashes[record.seq] = self.head_hash
        old = record.seq - HASH_WINDOW
        if old >= 0 and old % HASH_CHECKPOINT:
            self.hashes.pop(old, None)

    def _check_link(self, record: Record) -> None:
        if record.space_id != self.space_id:
            raise RecordError("record belongs to another space")
        if record.seq != self.head_seq + 1:
            raise ChainConflict(f"record {record.seq} out of order (head is {self.head_seq})")
        if record.prev != self.head_hash:
            raise ChainConflict(f"record {record.seq} does not extend the chain")
        if not verify_signature(record.author, signing_bytes(record), record.sig):
            raise RecordError(f"record {record.seq} has a bad signature")

    def _apply_genesis(self, record: Record, body: Genesis) -> None:
        if record.seq != 0 or record.author != self.founder:
            raise RecordError("misplaced genesis record")
        if len(body.box_key) != KEY_LEN:
            raise RecordError("bad box key")
        self.members[record.author] = Member(record.author, body.box_key, "owner", 0)
        self.box_keys[record.author] = body.box_key
        self.role_log[record.author] = [(0, "owner")]
        self.tenures[record.author] = [[0, -1]]

    def _apply_join(self, record: Record, body: Join) -> None:
        invite = self.invites.get(body.invite_id)
        if invite is None:
            raise RecordForbidden("join names an unknown invite")
        if body.invite_id in self.revoked:
            raise RecordForbidden("join uses a revoked invite")
        if self.invite_uses.get(body.invite_id, 0) >= invite.max_uses:
            raise RecordForbidden("join uses an invite with no uses left")
        if record.author in self.members:
            raise RecordForbidden("already a member")
        if self.departed.get(record.author):
            raise RecordForbidden("this member key is banned")
        if len(record.author) != KEY_LEN or len(body.box_key) != KEY_LEN:
            raise RecordError("bad member key")
        statement = join_statement(self.space_id, record.author, body.box_key, body.invite_id)
        if not verify_signature(invite.invite_key, statement, body.invite_sig):
            raise RecordForbidden("join is not signed by the invite key")
        self.invite_uses[body.invite_id] = self.invite_uses.get(body.invite_id, 0) + 1
        self.departed.pop(record.author, None)
        self.generation += 1
        self.members[record.author] = Member(
            record.author, body.box_key, invite.role, record.seq, generation=self.generation
        )
        self.box_keys[record.author] = body.box_key
        self.former_profiles.pop(record.author, None)
        self.role_log.setdefault(record.author, []).append((record.seq, invite.role))
        self.tenures.setdefault(record.author, []).append([record.seq, -1])

    def _apply_member_record(self, record: Record, author: Member, body: RecordBody) -> None:
        rank = ROLE_RANK[author.role]
        if isinstance(body, Profile):
            self._check_epoch(body.epoch)
            _cap(body.box, MAX_PROFILE_BOX, "profile")
            recent = [
                t for t in author.profile_times if abs(t - record.created_at) < PROFILE_WINDOW
            ]
            if len(recent) >= PROFILE_QUOTA:
                raise RecordRateLimited(
                    f"at most {PROFILE_QUOTA} profile changes per member per "
                    f"{PROFILE_WINDOW // 60} minutes; try again later"
                )
            author.profile_times = [*author.profile_times, record.created_at][-PROFILE_QUOTA:]
            author.profile = body
        elif isinstance(body, SpaceMeta):
            self._require(rank >= ROLE_RANK["moderator"], "only owners and moderators rename")
            self._check_epoch(body.epoch)
            _cap(body.box, MAX_META_BOX, "space name")
            self.meta = body
        elif isinstance(body, InviteCreate):
            self._require(rank >= ROLE_RANK["moderator"], "only owners and moderators invite")
            self._require(body.role != "owner", "an invite cannot grant ownership")
            self._require(ROLE_RANK[body.role] <= rank, "cannot invite above your own role")
            self._require(body.invite_id not in self.invites, "duplicate invite id")
            self._require(body.max_uses >= 1, "an invite needs at least one use")
            if len(body.invite_key) != KEY_LEN or not is_valid_id(body.invite_id):
                raise RecordError("bad invite key or id")
            self.invites[body.invite_id] = body
            self.invite_authors[body.invite_id] = author.key
        elif isinstance(body, InviteRevoke):
            self._require(rank >= ROLE_RANK["moderator"], "only owners and moderators revoke")
            self._require(body.invite_id in self.invites, "unknown invite")
            self.revoked.add(body.invite_id)
        elif isinstance(body, RoleChange):
            target = self._target(body.member)
            self._require(target.key != author.key, "you cannot change your own role")
            self._require(rank > ROLE_RANK[target.role], "target's role is not below yours")
            self._require(ROLE_RANK[body.role] <= rank, "cannot grant a role above your own")
            target.role = body.role
            self.role_log[target.key].append((record.seq, body.role))
        elif isinstance(body, Remove):
            target = self._target(body.member)
            self._require(target.key != author.key, "use leave to remove yourself")
            self._require(rank > ROLE_RANK[target.role], "target's role is not below yours")
            self._depart(record.seq, target.key, banned=body.ban)
        elif isinstance(body, Leave):
            others = [m for m in self.members.values() if m.key != author.key]
            self._require(
                author.role != "owner" or not others or any(m.role == "owner" for m in others),
                "the last owner cannot leave while others remain; make someone owner first",
            )
            self._depart(record.seq, author.key, banned=False)
        elif isinstance(body, RoomCreate):
            self._require(rank >= ROLE_RANK["moderator"], "only owners and moderators add rooms")
            self._require(body.room_id not in self.rooms, "duplicate room id")
            if not is_valid_id(body.room_id) or body.ttl < 0:
                raise RecordError("bad room id or lifetime")
            self._check_epoch(body.epoch)
            _cap(body.name_box, MAX_NAME_BOX, "room name")
            if len(self.rooms) >= MAX_ROOMS:
                raise RecordTooLarge(f"a space holds at most {MAX_ROOMS} rooms")
            self.rooms[body.room_id] = Room(body, created_seq=record.seq)
        elif isinstance(body, RoomKey):
            self._apply_room_key(author, body)
        elif isinstance(body, RoomGrant):
            self._require(rank >= ROLE_RANK["moderator"], "only owners and moderators grant")
            room = self.rooms.get(body.room_id)
            self._require(room is not None, "no such room")
            assert room is not None
            self._require(room.spec.kind == "channel", "publishing rights are for channels")
            self._target(body.member)
            if body.publisher:
                room.publishers.add(body.member)
            else:
                room.publishers.discard(body.member)
            room.publisher_log.setdefault(body.member, []).append((record.seq, body.publisher))
        elif isinstance(body, Rekey):
            if body.epoch != self.epoch + 1:
                raise RecordError(f"rekey to epoch {body.epoch}, expected {self.epoch + 1}")
            if not 0 <= body.prev_epoch < body.epoch:
                raise RecordError(f"rekey names previous epoch {body.prev_epoch}")
            self._require(
                self.may_rekey(author.key),
                "only owners and moderators rekey, or a member completing a removal or leave",
            )
            _cap(body.prev_box, MAX_PREV_BOX, "rekey")
            self.epoch = body.epoch
            self.epoch_starts.append(record.seq)
            self.epoch_seq = record.seq
            self.generation = 0
            self.rekeys[body.epoch] = body
            self.rekey_authors[body.epoch] = author.key
        else:  # Genesis and Join are handled by apply()
            raise RecordError(f"misplaced {type(body).__name__} record")

    def _apply_room_key(self, author: Member, body: RoomKey) -> None:
        room = self.rooms.get(body.room_id)
        self._require(room is not None, "no such room")
        if body.epoch != self.epoch or len(body.commit) != KEY_LEN:
            raise RecordError("a room key commitment must be for the current epoch")
        if not 0 <= body.generation <= self.room_generation(body.room_id):
            raise RecordError(f"room key generation {body.generation} does not exist yet")
        slot = (body.room_id, body.epoch, body.generation)
        self._require(slot not in self.room_keys, "this room key is already committed to")
        # Whoever makes a room's key for an epoch (its first commitment) made every
        # generation of it; anyone else holds only generations from its own join on, and so
        # may not vouch for older ones.
        maker = self.room_key_makers.get((body.room_id, body.epoch))
        self._require(
            maker in (None, author.key)
            or self.member_generation(body.room_id, author.key) <= body.generation,
            "a member cannot commit to a room key older than its own",
        )
        self.room_keys[slot] = (body.commit, author.key)
        self.room_key_makers.setdefault((body.room_id, body.epoch), author.key)

    def _check_epoch(self, epoch: int) -> None:
        if not 0 <= epoch <= self.epoch:
            raise RecordError(f"unknown space key epoch {epoch}")

    def _target(self, key: bytes) -> Member:
        target = self.members.get(key)
        if target is None:
            raise RecordForbidden("no such member")
        return target

    def _depart(self, seq: int, key: bytes, *, banned: bool) -> None:
        member = self.members.pop(key)
        if member.profile is not None:
            self.former_profiles[key] = member.profile
        self.role_log[key].append((seq, ""))
        self.tenures[key][-1][1] = seq
        for room in self.rooms.values():
            if key in room.publishers:
                room.publishers.discard(key)
                room.publisher_log.setdefault(key, []).append((seq, False))
        self.departed[key] = banned
        self.last_departure_seq = seq

    @staticmethod
    def _require(condition: bool, reason: str) -> None:
        if not condition:
            raise RecordForbidden(reason)


def _cap(value: bytes, limit: int, what: str) -> None:
    if len(value) > limit:
        raise RecordTooLarge(f"{what} record over its size cap ({len(value)} > {limit} bytes)")


@dataclass(frozen=True)
class RosterAt:
    """The roster's answers as of an earlier head (see :meth:`Roster.at`)."""

    roster: Roster
    seq: int

    @property
    def epoch(self) -> int:
        return self.roster.epoch_at(self.seq)

    def may_post(self, room_id: str, key: bytes) -> bool:
        return self.roster.may_post_at(room_id, key, self.seq)

    def room_generation(self, room_id: str) -> int:
        """The key generation a message to ``room_id`` used at this head."""
        room = self.roster.rooms.get(room_id)
        if room is None or room.spec.history != "since-join":
            return 0
        return self.roster.generation_at(self.seq)


_roster_decoder = msgspec.msgpack.Decoder(Roster)


def encode_roster(roster: Roster) -> bytes:
    """Every field of a roster (generically: a field added to Roster is kept too)."""
    return _encoder.encode(roster)


def decode_roster(data: bytes) -> Roster:
    try:
        return _roster_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"malformed roster: {exc}") from None
