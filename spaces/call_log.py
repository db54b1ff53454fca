"""A call's replica as a function of its room's log of inputs (sans-I/O; issue 11).

Every ``salon serve`` instance keeps a :class:`Replica` of each call it has seen and applies
the same :class:`CallInput` s to it in one order: the room's log (:mod:`spaces.events`; on
PostgreSQL each input gets the room's next sequence number, and a room's inputs commit, and
are heard, in that order). A replica is the :class:`~spaces.conference.Conference` plus who
holds each seat (the token of the session that joined, ``INSTANCE.RANDOM``: tokens name
their instance, so the seats of an instance that died can be found and freed).

Determinism. An input carries everything its outcome depends on (the roles, clock and call
limits of the instance that took the request, whether it has an SFU, the next call id, and
for ``open`` the room's bans), and nothing else is read while applying it, so replicas that
applied the same inputs are equal (:meth:`Replica.fingerprint`) — a replica rebuilt by replaying the
log is the replica that lived through it, and refuses what it would refuse: the same
nonces were used, the same seats are held by the same sessions, the same lock holds.

What the log keeps (justification). Signals (``signal``) change no state: they are deleted
after a minute. State-changing inputs (``open``, ``join``, ``resume``, ``act``, ``leave``)
are kept until the call they belong to is over: when an input ends a call (a host ended
it, or its last seat emptied), the replica is *idle* — no seats, no lock, no nonces; only
the next call id, the version and sender-index counters, the SFU flag and the bans remain —
and that small :class:`Base` is written beside the input; everything before it is deleted
a minute later (an instance still working through those inputs can read them meanwhile).
So a log holds one snapshot and the running call's inputs: bounded by a call's activity,
never by the room's history. And a call's activity is bounded per member: every ``join``,
``resume`` and ``act`` a member sends is counted in the replica (:attr:`Replica.spent`,
refused ones too — they are in the log all the same; the count starts again with the next
call), and an instance refuses to submit one more once a member has spent
``[conference] max_inputs_per_member`` in this call — so no member can grow a room's log
without bound by toggling a hand, re-sending its join or sending actions that are refused,
through however many instances (the count is the replicas', not one instance's).

A snapshot of a *running* call would be smaller still for long calls, but must be written
while inputs keep coming (a second writer racing the log); an idle call's snapshot is
written once, by the instance that ended it, and any instance can check it
(it is what its own replica looks like at that point).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import msgspec

from protocol.conference_wire import CallAction, CallJoined
from protocol.errors import InvalidMessage, NotFound, ProtocolError, StaleCall
from protocol.records import Role, RoomCreate
from spaces.conference import Change, Conference

STATE_KINDS: Final = frozenset({"open", "join", "resume", "act", "leave", "place"})
# The inputs a member spends (Replica.spent): the ones a member's request makes. Leaves are
# not counted (they only shrink a call, and an instance sends them for a closed session).
SPENT_KINDS: Final = frozenset({"join", "resume", "act"})


class Placement(msgspec.Struct, frozen=True):
    """Where a call's media runs: its SFU node and the conference id that node knows it by
    (:mod:`spaces.handlers.call_media`)."""

    call_id: str
    node: str
    conference: str


class CallInput(msgspec.Struct, frozen=True, omit_defaults=True):
    """One input of a call's replicas (see the module docstring)."""

    kind: str  # open | join | resume | act | leave | signal | place
    space_id: str
    room_id: str
    session: str = ""  # the requesting session (INSTANCE.RANDOM)
    member: bytes = b""
    action: CallAction | None = None
    roles: dict[bytes, Role] = {}
    now_ms: int = 0
    sfu: bool = False
    next_call_id: str = ""  # the id of the call after this one, if this one ends
    call_id: str = ""  # signal: the call it belongs to
    to: bytes = b""
    box: bytes = b""
    bans: list[CallAction] = []  # open: the room's bans, as the submitting instance has them
    node: str = ""  # place: the SFU node ("": none), the conference id on it, and the
    conference: str = ""  # conference id of the placement this one replaces ("": none)
    replaces: str = ""
    # [mesh_max, mesh_return_max, max_participants] of the submitting instance's config: an
    # instance configured otherwise (a rolling change) applies them all the same ([]: none)
    limits: list[int] = []
    # resume: the record that began the member's current tenure in the space (its join
    # record's seq): a seat joined before it (before a removal and a re-join) is not its own
    since: int = -1

    @property
    def changes_state(self) -> bool:
        return self.kind in STATE_KINDS


class Base(msgspec.Struct, frozen=True):
    """An idle call, all a replica needs to go on from (see the module docstring)."""

    call_id: str
    version: int
    next_index: int
    sfu: bool
    bans: list[CallAction]


input_encoder = msgspec.msgpack.Encoder()
input_decoder = msgspec.msgpack.Decoder(CallInput)
base_decoder = msgspec.msgpack.Decoder(Base)


def instance_of(token: str) -> str:
    """The instance a session token names."""
    return token.partition(".")[0]


@dataclass(frozen=True)
class Limits:
    mesh_max: int
    mesh_return_max: int
    max_participants: int


@dataclass
class Applied:
    """What one input did: the conference's change (None: none to announce), and the
    session that held the member's seat before a join or resume took it (if another)."""

    change: Change | None = None
    replaced: str | None = None
    placed: bool = False  # a ``place`` input changed the call's placement


class LogGap(NotFound):
    """The log cannot be replayed from what is kept (no base and no opening input)."""


def _conference(
    space_id: str, room: RoomCreate, limits: Limits, sfu: bool, bans: list[CallAction], call_id: str
) -> Conference:
    """A room's conference as an ``open`` input or an idle call's snapshot starts it."""
    return Conference(
        space_id,
        room,
        mesh_max=limits.mesh_max,
        mesh_return_max=limits.mesh_return_max,
        max_participants=limits.max_participants,
        sfu_available=sfu,
        bans={ban.target: ban for ban in bans},
        make_call_id=lambda: call_id,
    )


class Replica:
    def __init__(self, conference: Conference, seq: int) -> None:
        self.conference = conference
        self.seq = seq  # the last input of the room's log applied here
        self.seated: dict[bytes, str] = {}  # member -> token of the session holding the seat
        self.spent: dict[bytes, int] = {}  # member -> its inputs in this call (SPENT_KINDS)
        self._placement: Placement | None = None  # the SFU node of the current call, if placed

    @classmethod
    def opened(cls, room: RoomCreate, limits: Limits, entry: CallInput, seq: int) -> Replica:
        """The replica an ``open`` input starts (the first one of a room's log)."""
        conference = _conference(
            entry.space_id, room, _limits(entry, limits), entry.sfu, entry.bans, entry.next_call_id
        )
        return cls(conference, seq)

    @classmethod
    def from_base(
        cls, space_id: str, room: RoomCreate, limits: Limits, base: Base, seq: int
    ) -> Replica:
        conference = _conference(space_id, room, limits, base.sfu, base.bans, base.call_id)
        conference.version = base.version
        conference._next_index = base.next_index
        return cls(conference, seq)

    @classmethod
    def replay(
        cls,
        space_id: str,
        room: RoomCreate,
        limits: Limits,
        base: tuple[int, Base] | None,
        rows: Iterable[tuple[int, CallInput]],
        upto: int,
    ) -> Replica:
        """The replica after input ``upto``, from the newest kept base (if any) and the
        state-changing inputs after it, in order. An input that was refused live is refused
        again here (the same state, the same checks): its error is dropped, as it was."""
        replica: Replica | None = None
        if base is not None:
            replica = cls.from_base(space_id, room, limits, base[1], base[0])
        for seq, entry in rows:
            if replica is None:
                if entry.kind != "open":
                    raise LogGap("this call's log starts mid-way; it cannot be rebuilt here")
                replica = cls.opened(room, limits, entry, seq)
                continue
            if entry.changes_state:
                with contextlib.suppress(ProtocolError):
                    replica.apply(entry)
            replica.seq = seq
        if replica is None:
            raise LogGap("this call has no log to rebuild it from")
        replica.seq = upto
        return replica

    def is_idle(self) -> bool:
        return self.conference.is_idle() and not self.seated and not self.spent

    def base(self) -> Base:
        """The snapshot of an idle call (only then: see the module docstring)."""
        assert self.is_idle(), "only an idle call is snapshotted"
        c = self.conference
        return Base(c.call_id, c.version, c._next_index, c.sfu_available, list(c.bans.values()))

    def fingerprint(self) -> bytes:
        """Every part of the state that decides what an input does, canonically encoded:
        equal fingerprints, equal replicas (the replay tests compare these)."""
        c = self.conference
        seats = [
            (s.member, s.index, s.status, *(a.sig if a else b"" for a in _seat_actions(s)))
            for s in sorted(c.seats.values(), key=lambda s: s.member)
        ]
        return msgspec.msgpack.encode(
            [
                c.call_id,
                c.version,
                c._next_index,
                c.topology,
                c.sfu_available,
                c.lock.sig if c.lock else b"",
                sorted(ban.sig for ban in c.bans.values()),
                list(c._nonces),
                seats,
                sorted(self.seated.items()),
                sorted(self.spent.items()),
                msgspec.msgpack.encode(self.placement) if self.placement else b"",
            ]
        )

    # -- applying ----------------------------------------------------------------------------

    def apply(self, entry: CallInput) -> Applied:
        """Apply one state-changing input (raises what the conference raises: the input
        is then refused, and changed nothing but the nonces it used, as live)."""
        if entry.kind == "open":
            return Applied()  # the replica exists: the first open won
        c = self.conference
        c._make_call_id = lambda: entry.next_call_id
        c.set_sfu_available(entry.sfu)
        if entry.limits:
            limits = _limits(entry, Limits(c.mesh_max, c.mesh_return_max, c.max_participants))
            c.mesh_max, c.mesh_return_max = limits.mesh_max, limits.mesh_return_max
            c.max_participants = limits.max_participants
        if entry.kind in SPENT_KINDS:  # counted whether or not it is refused below
            self.spent[entry.member] = self.spent.get(entry.member, 0) + 1
        if entry.kind == "join":
            assert entry.action is not None
            if entry.action.actor != entry.member:
                raise InvalidMessage("a join must be signed by the joining member")
            change = c.join(entry.action, entry.roles, entry.now_ms)
            return Applied(change, self._seat(entry.member, entry.session))
        if entry.kind == "resume":
            return Applied(None, self._resume(entry))
        if entry.kind == "act":
            assert entry.action is not None
            change = c.act(entry.action, entry.roles, entry.now_ms)
            self._follow(change)
            return Applied(change)
        if entry.kind == "place":
            return Applied(placed=self._place(entry))
        if entry.kind == "leave":
            if self.seated.get(entry.member) != entry.session:
                return Applied()  # taken over by another session since, or gone already
            del self.seated[entry.member]
            left = c.leave(entry.member)
            if left is not None:
                self._follow(left)
            return Applied(left)
        raise InvalidMessage(f"unknown call input {entry.kind!r}")

    @property
    def placement(self) -> Placement | None:
        """The SFU node carrying the current call, if the log placed it (a placement is
        the call's: the next call starts unplaced)."""
        placed = self._placement
        if placed is None or placed.call_id != self.conference.call_id:
            return None
        return placed

    def _place(self, entry: CallInput) -> bool:
        """The first ``place`` of a call wins; a later one moves it only if it names the
        placement it replaces (its node went away). Whether the placement changed."""
        current = self.placement
        if entry.call_id != self.conference.call_id:
            return False  # that call is over
        if (current.conference if current is not None else "") != entry.replaces:
            return False  # placed (or moved) by an earlier input
        self._placement = (
            Placement(entry.call_id, entry.node, entry.conference) if entry.node else None
        )
        return True

    def may_signal(self, entry: CallInput) -> bool:
        """Whether a ``signal`` input is relayed (it changes nothing)."""
        return (
            entry.call_id == self.conference.call_id
            and self.seated.get(entry.member) == entry.session
            and self.conference.may_relay(entry.member, entry.to)
        )

    def _seat(self, member: bytes, session: str) -> str | None:
        previous = self.seated.get(member)
        self.seated[member] = session
        return previous if previous != session else None

    def _resume(self, entry: CallInput) -> str | None:
        """A member's new session takes over its seat, unchanged (same join, same sender
        index, same keys): only with the very join that holds the seat, signed by the
        member the session authenticated as, during the same tenure in the space — so nobody
        takes over someone else's seat, a seat that is gone (left, kicked, freed) stays
        gone, and a member removed from the space who joins it again does not get back the
        seat (and the admission) it held before (it joins, as anyone)."""
        action = entry.action
        seat = self.conference.seats.get(entry.member)
        if (
            action is None
            or action.actor != entry.member
            or action.call_id != self.conference.call_id
            or seat is None
            or seat.join != action
            or action.head_seq < entry.since
        ):
            raise StaleCall("your seat in that call is gone; join it again")
        return self._seat(entry.member, entry.session)

    def _follow(self, change: Change) -> None:
        """Seats a change removed are no longer held by anyone."""
        for member, _reason in change.removed:
            self.seated.pop(member, None)
        if change.ended:
            self.seated.clear()
            self.spent.clear()
            self._placement = None

    def joined_reply(
        self, member: bytes, roles: dict[bytes, Role], change: Change | None
    ) -> CallJoined:
        status = change.status if change is not None else self.conference.seats[member].status
        return CallJoined(0, self.conference.state_for(member, roles), status)


def _limits(entry: CallInput, default: Limits) -> Limits:
    """The call limits an input was submitted under (``default`` if it names none)."""
    if len(entry.limits) != 3:
        return default
    mesh_max, mesh_return_max, max_participants = entry.limits
    return Limits(mesh_max, mesh_return_max, max_participants)


def _seat_actions(seat: object) -> list[CallAction | None]:
    return [
        getattr(seat, name)
        for name in ("join", "admission", "mute", "hand", "stage", "mic", "camera")
    ]
