"""Conference state on the server (sans-I/O): the calls of each room and what actions change.

The rules themselves (who may do what) are shared with clients in ``protocol.conference_rules``.

Hosts are the space's owners and moderators; everyone else is a participant. Every change
to a call's moderation state is a :class:`~protocol.conference_wire.CallAction` signed by its
actor. The same rules run in two places:

- the server (:class:`Conference`) checks each action with :func:`action_problem`
  against its roster, applies it, and keeps, for every participant, the actions that explain
  its state (its join, a host's admission, the mute, the hand, the stage role, and the
  member's own word on its microphone and camera);
- every client re-checks those actions against *its own* verified roster with
  :func:`action_problem` and derives what it shows and obeys with :func:`seat_flags`, so a
  server that forges or replays a moderator event is ignored (DESIGN §1.3).

What only the server can enforce, it enforces: the lobby (nothing is relayed to or from a
participant before a host admits it), the lock, bans, the mesh size, and a kick or a denial
ends the member's part in the call at once.

Seat actions (admit, deny, kick, promote, demote) must name the target's current join
(``join_ref``); a member who joins again is a new incarnation, back in the lobby of a lobby
room, its old admission and stage role gone.

Errors: :class:`CallLocked` (``locked``), :class:`CallFull` (``call_full``),
:class:`StaleCall` (``stale_call``: the call id moved on, or a seat action names an earlier
join of its target), plus the package's ``banned``,
``forbidden``, ``not_found`` and ``invalid_message``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from protocol.conference_rules import (
    NONCES_KEPT,
    action_problem,
    freshness_problem,
    is_host,
    topology_for,
)
from protocol.conference_wire import (
    SEAT_ACTIONS,
    CallAction,
    CallParticipant,
    CallState,
    EndReason,
    ParticipantStatus,
    TopologyName,
)
from protocol.errors import (
    Banned,
    CallFull,
    CallLocked,
    Forbidden,
    InvalidMessage,
    NotFound,
    StaleCall,
)
from protocol.ids import new_id
from protocol.records import ROLE_RANK, Role, RoomCreate


def new_call_id() -> str:
    return new_id()


@dataclass
class Seat:
    """The server's record of one participant (or lobby member) in a call."""

    member: bytes
    index: int
    status: ParticipantStatus
    join: CallAction
    admission: CallAction | None = None
    mute: CallAction | None = None
    hand: CallAction | None = None
    stage: CallAction | None = None
    mic: CallAction | None = None  # the member's own "mic-off"/"mic-on"
    camera: CallAction | None = None  # and "camera-off"/"camera-on"

    def wire(self) -> CallParticipant:
        return CallParticipant(
            self.member,
            self.index,
            self.status,
            self.join,
            self.admission,
            self.mute,
            self.hand,
            self.stage,
            self.mic,
            self.camera,
        )


@dataclass
class Change:
    """What one join, leave or action did, for the I/O edge to announce and persist."""

    action: CallAction | None = None
    removed: list[tuple[bytes, EndReason]] = field(default_factory=list)
    ended: bool = False  # the call is over for everyone (a host ended it, or it emptied)
    status: ParticipantStatus = "joined"  # the joiner's status, after a join
    ban_added: CallAction | None = None
    ban_removed: bytes | None = None


class Conference:
    """The state of one room's call: seats, lobby, lock, bans; see the module docstring.

    A call starts idle with a fresh call id; when its last participant leaves, or a host
    ends it, it starts over with a new id (the lock goes; bans stay, they belong to the room).
    """

    def __init__(
        self,
        space_id: str,
        room: RoomCreate,
        *,
        mesh_max: int,
        max_participants: int,
        sfu_available: bool = False,
        mesh_return_max: int | None = None,
        bans: Mapping[bytes, CallAction] | None = None,
        make_call_id: Callable[[], str] = new_call_id,
    ) -> None:
        self.space_id = space_id
        self.room = room
        self.mesh_max = mesh_max
        self.mesh_return_max = mesh_max - 1 if mesh_return_max is None else mesh_return_max
        self.max_participants = max_participants
        self.sfu_available = sfu_available
        self.bans: dict[bytes, CallAction] = dict(bans or {})
        self._make_call_id = make_call_id
        self.version = 0
        self.call_id = make_call_id()
        self.seats: dict[bytes, Seat] = {}
        self.lock: CallAction | None = None
        self._next_index = 1
        self._nonces: OrderedDict[bytes, None] = OrderedDict()
        self.topology: TopologyName = "mesh"
        self._retopologize()

    @property
    def room_id(self) -> str:
        return self.room.room_id

    @property
    def joined(self) -> list[Seat]:
        return [s for s in self.seats.values() if s.status == "joined"]

    def _chosen(self, joined: int) -> TopologyName | None:
        room = self.room
        return topology_for(
            room.topology,
            joined,
            self.mesh_max,
            self.sfu_available,
            stage=room.stage,
            current=self.topology,
            mesh_return_max=self.mesh_return_max,
        )

    def _retopologize(self) -> None:
        """Follow the participant count (with hysteresis); a call over capacity keeps what
        carries it (say, the SFU went away: its clients hear about it from the SFU side)."""
        self.topology = self._chosen(len(self.joined)) or self.topology

    def set_sfu_available(self, available: bool) -> None:
        if available != self.sfu_available:
            self.sfu_available = available
            before = self.topology
            self._retopologize()
            if self.topology != before:
                self.version += 1

    def is_idle(self) -> bool:
        return not self.seats

    # -- checks ----------------------------------------------------------------------------

    def _check(self, action: CallAction, roles: Mapping[bytes, Role], now_ms: int) -> None:
        if action.call_id != self.call_id:
            raise StaleCall("that call is over; a new one has started")
        problem = action_problem(
            action, roles, space_id=self.space_id, room_id=self.room_id, call_id=self.call_id
        )
        if problem is not None:
            raise Forbidden(f"refused call action {action.action!r}: {problem}")
        stale = freshness_problem(action, now_ms, "the server's clock")
        if stale is not None:
            raise InvalidMessage(f"refused call action {action.action!r}: {stale}")
        if action.nonce in self._nonces:
            raise InvalidMessage("that action was already used")
        self._nonces[action.nonce] = None
        if len(self._nonces) > NONCES_KEPT:
            self._nonces.popitem(last=False)

    def _capacity_for_one_more(self) -> None:
        if self._chosen(len(self.joined) + 1) is not None:
            return
        if not self.sfu_available:
            raise CallFull(
                "this server has no SFU; the call is full "
                f"(a mesh call holds at most {self.mesh_max} participants)"
            )
        raise CallFull(
            f"the call is full: this room runs as a mesh, which holds at most {self.mesh_max}"
        )

    def _seat(self, member: bytes, status: ParticipantStatus | None = None) -> Seat:
        seat = self.seats.get(member)
        if seat is None or (status is not None and seat.status != status):
            where = "in the lobby" if status == "lobby" else "in the call"
            raise NotFound(f"that member is not {where}")
        return seat

    def _target(self, action: CallAction, status: ParticipantStatus | None = None) -> Seat:
        """The seat a seat action is about, which must be the join it names."""
        seat = self._seat(action.target, status)
        if action.action in SEAT_ACTIONS and action.join_ref != seat.join.nonce:
            raise StaleCall("that participant joined again since; act on their current join")
        return seat

    # -- changes ---------------------------------------------------------------------------

    def join(self, action: CallAction, roles: Mapping[bytes, Role], now_ms: int) -> Change:
        """Seat the signer of a ``join`` (in the lobby, if the room has one and it is not a
        host). Joining again from a new connection keeps its seat and state, under a new
        sender index."""
        if action.action != "join":
            raise InvalidMessage("a call is joined with a 'join' action")
        member = action.actor
        if member in self.bans:
            raise Banned("a host banned you from this call")
        self._check(action, roles, now_ms)
        host = is_host(roles.get(member))
        existing = self.seats.get(member)
        if existing is not None:
            # A new join is a new incarnation: what hosts did to the old one (an admission,
            # a promotion) named the old join, and clients no longer count it. Its microphone
            # and camera start on again; a client joining with them off says so next.
            existing.join = action
            existing.admission = existing.stage = existing.mic = existing.camera = None
            # A new incarnation starts its media keys afresh at epoch 0: give it a new sender
            # index, so no SFrame key id ever names two keys in one call (no aliasing).
            existing.index = self._next_index
            self._next_index += 1
            if self.room.lobby and not host:
                existing.status = "lobby"
            self.version += 1
            self._retopologize()
            return Change(action=action, status=existing.status)
        if self.lock is not None and not host:
            raise CallLocked("a host locked this call; nobody new can join")
        if len(self.seats) >= self.max_participants:
            raise CallFull(f"the call is full ({self.max_participants} participants)")
        status: ParticipantStatus = "lobby" if self.room.lobby and not host else "joined"
        if status == "joined":
            self._capacity_for_one_more()
        self.seats[member] = Seat(member, self._next_index, status, action)
        self._next_index += 1
        self.version += 1
        self._retopologize()
        return Change(action=action, status=status)

    def leave(self, member: bytes) -> Change | None:
        """The member's connection left the call; None if it was not in it."""
        if self.seats.pop(member, None) is None:
            return None
        self.version += 1
        change = Change()
        if not self.seats:
            self._restart()
            change.ended = True
        self._retopologize()
        return change

    def act(self, action: CallAction, roles: Mapping[bytes, Role], now_ms: int) -> Change:
        """Apply a signed action other than a join; raises if it is not allowed now."""
        if action.action == "join":
            raise InvalidMessage("use JoinCall to join")
        self._check(action, roles, now_ms)
        name, target = action.action, action.target
        change = Change(action=action)
        if name in ("hand-up", "hand-down"):
            self._seat(action.actor, "joined").hand = action
        elif name in ("mic-off", "mic-on"):
            self._seat(action.actor, "joined").mic = action
        elif name in ("camera-off", "camera-on"):
            self._seat(action.actor, "joined").camera = action
        elif name == "lower-hand":
            self._seat(target, "joined").hand = action
        elif name in ("mute", "unmute"):
            self._seat(target, "joined").mute = action
        elif name == "mute-all":
            actor_rank = ROLE_RANK[roles[action.actor]]
            for seat in self.joined:
                role = roles.get(seat.member)
                if seat.member != action.actor and (role is None or ROLE_RANK[role] <= actor_rank):
                    seat.mute = action
        elif name == "admit":
            seat = self._target(action, "lobby")
            self._capacity_for_one_more()
            seat.status = "joined"
            seat.admission = action
        elif name == "deny":
            self._target(action, "lobby")
            change.removed.append((target, "denied"))
        elif name == "kick":
            self._target(action)
            change.removed.append((target, "removed"))
        elif name == "ban":
            if target not in roles:
                raise NotFound("no such member in this space")
            self.bans[target] = action
            change.ban_added = action
            if target in self.seats:
                change.removed.append((target, "banned"))
        elif name == "unban":
            if self.bans.pop(target, None) is None:
                raise NotFound("that member is not banned from this call")
            change.ban_removed = target
        elif name in ("lock", "unlock"):
            self.lock = action if name == "lock" else None
        elif name in ("promote", "demote"):
            if not self.room.stage:
                raise InvalidMessage("promote and demote are for stage rooms")
            self._target(action, "joined").stage = action
        elif name == "end":
            change.removed = [(m, "ended") for m in self.seats]
        for member, _ in change.removed:
            del self.seats[member]
        self.version += 1
        if name == "end" or (change.removed and not self.seats):
            self._restart()
            change.ended = True
        self._retopologize()
        return change

    def _restart(self) -> None:
        self.seats.clear()
        self.topology = "mesh"  # the next call starts small
        self.lock = None
        self._nonces.clear()
        self.call_id = self._make_call_id()
        self.version += 1

    # -- views -----------------------------------------------------------------------------

    def state_for(self, member: bytes | None, roles: Mapping[bytes, Role]) -> CallState:
        """The state as ``member`` may see it: hosts see the lobby, other participants see
        who is in the call, a lobby member sees only its own seat (None: a non-participant
        asking, shown like a participant)."""
        seat = self.seats.get(member) if member is not None else None
        if seat is not None and seat.status == "lobby":
            visible = [seat]
        elif is_host(roles.get(member) if member is not None else None):
            visible = list(self.seats.values())
        else:
            visible = self.joined
        return CallState(
            room_id=self.room_id,
            call_id=self.call_id,
            version=self.version,
            topology=self.topology,
            requested_topology=self.room.topology,
            participants=[s.wire() for s in sorted(visible, key=lambda s: s.index)],
            lock=self.lock,
            bans=[] if seat is not None and seat.status == "lobby" else list(self.bans.values()),
        )

    def may_relay(self, sender: bytes, recipient: bytes) -> bool:
        """Signalling flows only between two admitted participants (the E2EE lobby)."""
        a, b = self.seats.get(sender), self.seats.get(recipient)
        return (
            sender != recipient
            and a is not None
            and b is not None
            and a.status == "joined"
            and b.status == "joined"
        )
