"""The I/O edge of conferences: member requests, pushed call events, disconnects.

:class:`Conferences` keeps one :class:`~spaces.conference.Conference` per conference room
(created on first use, with the room's bans loaded from the store) and, for each seated
member, the WebSocket session that joined it: call events go to that session, and when it
closes the member leaves the call. A member who joins again from another session takes the
seat over (the old session hears :class:`CallEnded` ``replaced``).

Everything a call relays between participants is a box sealed end to end; the server only
checks who may send to whom (:meth:`Conference.may_relay`) and how large it is.

Several instances (issue 11): every instance keeps a replica of each call and applies the
same inputs (:class:`CallInput`: open, join, act, leave, signal) in one order, the ordered
log of :mod:`spaces.events` (on PostgreSQL, the commit order of the inputs' transactions).
An input carries everything its outcome depends on — the roles and time of the instance
that took the request, whether it has an SFU, the next call id — so every replica reaches
the same state. The instance that took a request checks it first (so the member hears a
refusal at once) and answers with its replica's result once its input has come round;
each instance pushes events to the sessions connected to it, and a signal to a participant
connected elsewhere reaches it through its own instance.

A call on the SFU runs on one node for every instance: a ``place`` input names the node (and
the opaque conference id the node knows the call by) and every replica records the same
:class:`Placement`; the first ``place`` of a call in the log wins, a later one only moves the
call if it names the placement it replaces (the node went away). See
:mod:`spaces.handlers.call_media`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from protocol.conference_rules import SELF_STATE
from protocol.conference_wire import (
    ActInCall,
    CallAction,
    CallEnded,
    CallInfo,
    CallJoined,
    CallSignal,
    CallUpdate,
    EndReason,
    GetCall,
    JoinCall,
    LeaveCall,
    SendCallSignal,
)
from protocol.errors import Forbidden, InvalidMessage, NotFound, RateLimited, TooLarge
from protocol.forks import HEAD_HASH_LEN
from protocol.ids import new_id
from protocol.records import HASH_WINDOW, Role, Roster
from protocol.wire import Done, encoder
from spaces.conference import Change, Conference
from spaces.config import Config
from spaces.events import Events, LocalEvents
from spaces.hub import Hub, Subscriber
from spaces.limits import KeyedLimiter
from spaces.membership import Membership
from spaces.services import CONFERENCE_STORE, CONFIG, EVENTS, HUB, MEMBERSHIP, Caller, add_routes
from spaces.storage.interfaces import ConferenceStore

log = logging.getLogger(__name__)
# A member's self-state actions (hand, microphone, camera: SELF_STATE) per room: each is
# pushed to every participant, so a few toggles in a row, no stream.
SELF_STATE_PER_SECOND = 2.0
SELF_STATE_BURST = 10
CallKey = tuple[str, str]  # (space id, room id)


def _check_head(action: CallAction, roster: Roster) -> None:
    """An action must name a head of this chain. Clients refuse any other as a fork; an
    honest server refuses it up front so its author learns at once. (Only the newest hash
    is at hand here; older heads are compared by every client.) The head must also be
    recent (within HASH_WINDOW records): its author signs on a head it just synced, and
    every client proves an older one by fetching records, which a participant must not be
    able to make every client do, action after action."""
    if (
        len(action.head_hash) != HEAD_HASH_LEN
        or not 0 <= action.head_seq <= roster.head_seq
        or (action.head_seq == roster.head_seq and action.head_hash != roster.head_hash)
    ):
        raise InvalidMessage("the action names a roster head this space does not have")
    if action.head_seq < roster.head_seq - HASH_WINDOW:
        raise InvalidMessage(
            f"the action names an old roster head (#{action.head_seq}; the space is at "
            f"#{roster.head_seq}): sync and sign it again"
        )


class Placement(msgspec.Struct, frozen=True):
    """Where a call's media runs: its SFU node and the conference id that node knows it by."""

    call_id: str
    node: str
    conference: str


class CallInput(msgspec.Struct, frozen=True, omit_defaults=True):
    """One input of a call's replicas (see the module docstring)."""

    kind: str  # open | join | act | leave | signal | place
    space_id: str
    room_id: str
    session: str = ""  # the requesting session (instance-unique token)
    member: bytes = b""
    action: CallAction | None = None
    roles: dict[bytes, Role] = {}
    now_ms: int = 0
    sfu: bool = False
    next_call_id: str = ""  # the id of the call after this one, if this one ends
    call_id: str = ""  # signal: the call it belongs to
    to: bytes = b""
    box: bytes = b""
    node: str = ""  # place: the SFU node ("": none), the conference id on it, and the
    conference: str = ""  # conference id of the placement this one replaces ("": none)
    replaces: str = ""


_input_encoder = msgspec.msgpack.Encoder()
_input_decoder = msgspec.msgpack.Decoder(CallInput)


def roles_of(roster: Roster) -> dict[bytes, Role]:
    return {key: member.role for key, member in roster.members.items()}


class Conferences:
    def __init__(
        self,
        membership: Membership,
        hub: Hub,
        config: Config,
        store: ConferenceStore,
        clock: Callable[[], float] = time.time,
        events: Events | None = None,
    ) -> None:
        self.events: Events = LocalEvents() if events is None else events
        self.events.on_ordered(self._apply)
        self.membership = membership
        self.hub = hub
        self.config = config
        self.store = store
        self.clock = clock
        self._calls: dict[CallKey, Conference] = {}
        # Sessions connected here, by call and member; and the session token of every
        # seated member of every call (replicated: tokens of sessions anywhere).
        self._sessions: dict[CallKey, dict[bytes, Subscriber]] = {}
        self._seated: dict[CallKey, dict[bytes, str]] = {}
        self._tokens: dict[Subscriber, str] = {}
        self._by_token: dict[str, Subscriber] = {}
        self._creating: dict[CallKey, asyncio.Lock] = {}
        self._self_state = KeyedLimiter(SELF_STATE_PER_SECOND, SELF_STATE_BURST, clock)
        # Told of every change before it is announced (the SFU side follows calls this way).
        self.observers: list[Callable[[Conference, Roster, Change], None]] = []
        # Each call's SFU placement (replicated), and who hears of a change of it.
        self._placements: dict[CallKey, Placement] = {}
        self.placement_observers: list[Callable[[CallKey, Placement | None], None]] = []
        self.sfu_available: Callable[[], bool] = lambda: False
        hub.on_remove(self._session_gone)

    def census(self) -> dict[str, tuple[int, int]]:
        """topology -> (calls with someone in them, participants joined): for /metrics."""
        result: dict[str, tuple[int, int]] = {}
        for conference in self._calls.values():
            joined = len(conference.joined)
            if joined:
                calls, people = result.get(conference.topology, (0, 0))
                result[conference.topology] = (calls + 1, people + joined)
        return result

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def conference(self, space_id: str, room_id: str) -> tuple[Conference, Roster]:
        roster = await self.membership.roster(space_id)
        room = roster.rooms.get(room_id)
        if room is None or room.spec.kind != "conference":
            raise NotFound("no conference room with that id in this space")
        key = (space_id, room_id)
        conference = self._calls.get(key)
        if conference is None:
            async with self._creating.setdefault(key, asyncio.Lock()):
                if key not in self._calls:
                    await self.events.submit(
                        self._input("open", space_id, room_id, next_call_id=new_id())
                    )
            conference = self._calls[key]
        return conference, roster

    async def _create(self, space_id: str, room_id: str, call_id: str) -> Conference:
        """A replica for a room's call (an ``open`` input: the first one in the log wins)."""
        roster = await self.membership.roster(space_id)
        room = roster.rooms.get(room_id)
        if room is None or room.spec.kind != "conference":
            raise NotFound("no conference room with that id in this space")
        limits = self.config.conference
        conference = Conference(
            space_id,
            room.spec,
            mesh_max=limits.mesh_max,
            mesh_return_max=limits.mesh_return_max,
            max_participants=limits.max_participants,
            bans=await self.store.bans(space_id, room_id),
            make_call_id=lambda: call_id,
        )
        key = (space_id, room_id)
        self._calls[key] = conference
        self._sessions.setdefault(key, {})
        self._seated.setdefault(key, {})
        return conference

    def _token(self, subscriber: Subscriber) -> str:
        token = self._tokens.get(subscriber)
        if token is None:
            token = self._tokens[subscriber] = secrets.token_hex(8)
            self._by_token[token] = subscriber
        return token

    def _input(self, kind: str, space_id: str, room_id: str, **fields: Any) -> bytes:
        return _input_encoder.encode(
            CallInput(
                kind,
                space_id,
                room_id,
                now_ms=self.now_ms(),
                sfu=self.sfu_available(),
                next_call_id=fields.pop("next_call_id", None) or new_id(),
                **fields,
            )
        )

    # -- the replicas: every instance applies every input, in the log's order -----------------

    async def _apply(self, body: bytes, mine: bool) -> Any:
        entry = _input_decoder.decode(body)
        key = (entry.space_id, entry.room_id)
        conference = self._calls.get(key)
        if entry.kind == "open":
            if conference is None:
                await self._create(entry.space_id, entry.room_id, entry.next_call_id)
            return None
        if conference is None:
            # A call this instance has no replica of (it started before this one did).
            raise NotFound("this server does not know that call yet; try again")
        conference._make_call_id = lambda: entry.next_call_id
        conference.set_sfu_available(entry.sfu)
        roster = await self.membership.roster(entry.space_id)
        if entry.kind == "join":
            return self._apply_join(conference, roster, entry, mine)
        if entry.kind == "act":
            assert entry.action is not None
            change = conference.act(entry.action, entry.roles, entry.now_ms)
            self._announce(conference, roster, change)
            return change
        if entry.kind == "leave":
            if self._seated[key].get(entry.member) == entry.session:
                del self._seated[key][entry.member]
                self._sessions[key].pop(entry.member, None)
                left = conference.leave(entry.member)
                if left is not None:
                    self._announce(conference, roster, left)
            return None
        if entry.kind == "place":
            return self._apply_place(key, conference, entry)
        if entry.kind == "signal":
            seated = self._seated[key]
            if (
                entry.call_id == conference.call_id
                and seated.get(entry.member) == entry.session
                and conference.may_relay(entry.member, entry.to)
            ):
                recipient = self._sessions[key].get(entry.to)
                if recipient is not None:
                    event = CallSignal(conference.room_id, entry.call_id, entry.member, entry.box)
                    self._push(recipient, event)
            return None
        raise InvalidMessage(f"unknown call input {entry.kind!r}")

    def _apply_join(
        self, conference: Conference, roster: Roster, entry: CallInput, mine: bool
    ) -> CallJoined:
        assert entry.action is not None
        member = entry.member
        key = (conference.space_id, conference.room_id)
        change = conference.join(entry.action, entry.roles, entry.now_ms)
        sessions, seated = self._sessions[key], self._seated[key]
        previous = sessions.get(member)
        if previous is not None and self._tokens.get(previous) != entry.session:
            self._push(previous, CallEnded(conference.room_id, conference.call_id, "replaced"))
            del sessions[member]
        seated[member] = entry.session
        subscriber = self._by_token.get(entry.session)
        if subscriber is not None and not subscriber.closed:
            sessions[member] = subscriber
        self._announce(conference, roster, change)
        return CallJoined(0, conference.state_for(member, entry.roles), change.status)

    def _apply_place(
        self, key: CallKey, conference: Conference, entry: CallInput
    ) -> Placement | None:
        current = self.placement(key)
        if entry.call_id != conference.call_id:
            return current  # that call is over
        if (current.conference if current is not None else "") != entry.replaces:
            return current  # placed (or moved) by an earlier input: first in the log wins
        new = Placement(entry.call_id, entry.node, entry.conference) if entry.node else None
        if new is None:
            self._placements.pop(key, None)
        else:
            self._placements[key] = new
        for observer in self.placement_observers:
            observer(key, new)
        return new

    def placements(self) -> dict[CallKey, Placement]:
        """Every current call's placement."""
        return {key: p for key in list(self._placements) if (p := self.placement(key))}

    def placement(self, key: CallKey) -> Placement | None:
        """The node carrying the room's current call, if the log has placed it."""
        conference = self._calls.get(key)
        placed = self._placements.get(key)
        if conference is None or placed is None or placed.call_id != conference.call_id:
            return None
        return placed

    async def place(
        self, key: CallKey, call_id: str, node: str, conference: str, replaces: str
    ) -> Placement | None:
        """Put the call on ``node`` (``""``: on none) unless the log placed it since
        ``replaces`` was read; the placement every replica now has."""
        placed = await self.events.submit(
            self._input(
                "place",
                *key,
                call_id=call_id,
                node=node,
                conference=conference,
                replaces=replaces,
            )
        )
        assert placed is None or isinstance(placed, Placement)
        return placed

    def call(self, key: CallKey) -> Conference | None:
        """The room's conference if it has been used since the server started."""
        return self._calls.get(key)

    def session_of(self, key: CallKey, member: bytes) -> Subscriber | None:
        """The session through which ``member`` joined the room's call, if it is seated."""
        return self._sessions.get(key, {}).get(member)

    def push(self, key: CallKey, member: bytes, event: msgspec.Struct) -> None:
        subscriber = self.session_of(key, member)
        if subscriber is not None:
            self._push(subscriber, event)

    # -- pushing -----------------------------------------------------------------------------

    def _push(self, subscriber: Subscriber, event: msgspec.Struct) -> None:
        subscriber.push(encoder.encode(event))

    def _announce(self, conference: Conference, roster: Roster, change: Change) -> None:
        """Tell everyone concerned: removed members hear why, admitted participants get the
        new state; a lobby member only hears about changes to its own seat."""
        for observer in self.observers:
            observer(conference, roster, change)
        key = (conference.space_id, conference.room_id)
        sessions, seated = self._sessions[key], self._seated[key]
        for member, reason in change.removed:
            seated.pop(member, None)
            subscriber = sessions.pop(member, None)
            if subscriber is not None:
                self._end(subscriber, conference, reason, change)
        if change.ended:
            self._placements.pop(key, None)
            seated.clear()
            for member, subscriber in list(sessions.items()):
                self._end(subscriber, conference, "ended", change)
                sessions.pop(member)
            return
        roles = roles_of(roster)
        action = change.action
        for member, subscriber in sessions.items():
            seat = conference.seats.get(member)
            if seat is None:
                continue
            if seat.status == "lobby" and (action is None or action.actor != member):
                continue
            self._push(subscriber, CallUpdate(conference.state_for(member, roles), action))

    def _end(
        self, subscriber: Subscriber, conference: Conference, reason: EndReason, change: Change
    ) -> None:
        # The call id may already be the next call's: name the one this member was in.
        call_id = change.action.call_id if change.action is not None else conference.call_id
        self._push(subscriber, CallEnded(conference.room_id, call_id, reason, change.action))

    def _session_gone(self, subscriber: Subscriber) -> None:
        token = self._tokens.pop(subscriber, None)
        if token is None:
            return
        self._by_token.pop(token, None)
        for key, sessions in list(self._sessions.items()):
            for member, seated in list(sessions.items()):
                if seated is subscriber:
                    del sessions[member]
                    leave = self._input("leave", *key, member=member, session=token)
                    asyncio.get_running_loop().create_task(self._leave_later(leave))

    async def _leave_later(self, leave: bytes) -> None:
        try:
            await self.events.submit(leave)
        except Exception:  # the space may be gone; nothing to tell anyone then
            log.exception("announcing a departure failed")

    # -- requests ----------------------------------------------------------------------------

    async def get_call(self, subscriber: Subscriber, message: GetCall) -> CallInfo:
        conference, roster = await self.conference(subscriber.space_id, message.room_id)
        roster.active(subscriber.member)
        return CallInfo(message.id, conference.state_for(subscriber.member, roles_of(roster)))

    async def join_call(self, subscriber: Subscriber, message: JoinCall) -> CallJoined:
        conference, roster = await self.conference(subscriber.space_id, message.room_id)
        member = subscriber.member
        roster.active(member)
        if message.join.actor != member:
            raise Forbidden("a join must be signed by the session's member")
        _check_head(message.join, roster)
        joined = await self.events.submit(
            self._input(
                "join",
                *(conference.space_id, conference.room_id),
                session=self._token(subscriber),
                member=member,
                action=message.join,
                roles=roles_of(roster),
            )
        )
        assert isinstance(joined, CallJoined)
        return CallJoined(message.id, joined.state, joined.status)

    async def leave_call(self, subscriber: Subscriber, message: LeaveCall) -> Done:
        conference, _ = await self.conference(subscriber.space_id, message.room_id)
        key = (conference.space_id, conference.room_id)
        if self._sessions[key].get(subscriber.member) is subscriber:
            leave = self._input(
                "leave", *key, member=subscriber.member, session=self._token(subscriber)
            )
            await self.events.submit(leave)
        return Done(message.id)

    async def act(self, subscriber: Subscriber, message: ActInCall) -> Done:
        action = message.action
        if action.action in SELF_STATE and not self._self_state.allow(
            f"{subscriber.space_id}/{message.room_id}/{subscriber.member.hex()}"
        ):
            raise RateLimited("too many hand, microphone or camera changes; wait a moment")
        conference, roster = await self.conference(subscriber.space_id, message.room_id)
        roster.active(subscriber.member)
        if action.actor != subscriber.member:
            raise Forbidden("an action must be signed by the session's member")
        _check_head(action, roster)
        key = (conference.space_id, conference.room_id)
        change = await self.events.submit(
            self._input(
                "act", *key, member=subscriber.member, action=action, roles=roles_of(roster)
            )
        )
        assert isinstance(change, Change)
        if change.ban_added is not None:
            await self.store.put_ban(conference.space_id, conference.room_id, change.ban_added)
        if change.ban_removed is not None:
            await self.store.delete_ban(conference.space_id, conference.room_id, change.ban_removed)
        return Done(message.id)

    async def relay(self, subscriber: Subscriber, message: SendCallSignal) -> Done:
        limit = self.config.conference.max_signal_bytes
        if len(message.box) > limit:
            raise TooLarge(f"a call signal is at most {limit} bytes")
        conference, _ = await self.conference(subscriber.space_id, message.room_id)
        if message.call_id != conference.call_id:
            raise NotFound("that call is over")
        sessions = self._sessions[(conference.space_id, conference.room_id)]
        if sessions.get(subscriber.member) is not subscriber:
            raise Forbidden("only the session that joined the call may signal in it")
        if not conference.may_relay(subscriber.member, message.to):
            raise Forbidden("signals go only between admitted participants of the call")
        if message.to not in self._seated[(conference.space_id, conference.room_id)]:
            raise NotFound("that participant is not connected")
        recipient = sessions.get(message.to)
        if recipient is not None:  # connected here: no need to go round the log
            event = CallSignal(
                conference.room_id, conference.call_id, subscriber.member, message.box
            )
            self._push(recipient, event)
            return Done(message.id)
        signal = self._input(
            "signal",
            conference.space_id,
            conference.room_id,
            session=self._token(subscriber),
            member=subscriber.member,
            call_id=message.call_id,
            to=message.to,
            box=message.box,
        )
        await self.events.submit(signal)
        return Done(message.id)


CONFERENCES = web.AppKey("conferences", Conferences)


# Routes: thin adapters from the server's route registry to Conferences.


async def _get_call(caller: Caller, message: GetCall) -> msgspec.Struct:
    return await caller.app[CONFERENCES].get_call(caller.subscriber, message)


async def _join_call(caller: Caller, message: JoinCall) -> msgspec.Struct:
    return await caller.app[CONFERENCES].join_call(caller.subscriber, message)


async def _leave_call(caller: Caller, message: LeaveCall) -> msgspec.Struct:
    return await caller.app[CONFERENCES].leave_call(caller.subscriber, message)


async def _act(caller: Caller, message: ActInCall) -> msgspec.Struct:
    return await caller.app[CONFERENCES].act(caller.subscriber, message)


async def _relay(caller: Caller, message: SendCallSignal) -> msgspec.Struct:
    return await caller.app[CONFERENCES].relay(caller.subscriber, message)


CONFERENCE_ROUTES: dict[type, Callable[[Caller, Any], Awaitable[msgspec.Struct]]] = {
    GetCall: _get_call,
    JoinCall: _join_call,
    LeaveCall: _leave_call,
    ActInCall: _act,
    SendCallSignal: _relay,
}


def install_conferences(app: web.Application) -> Conferences:
    """Add conferences to a spaces app, over its conference store (opened by the app)."""
    conferences = Conferences(
        app[MEMBERSHIP], app[HUB], app[CONFIG], app[CONFERENCE_STORE], events=app[EVENTS]
    )
    app[CONFERENCES] = conferences
    add_routes(app, CONFERENCE_ROUTES)
    return conferences
