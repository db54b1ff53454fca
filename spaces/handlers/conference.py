"""The I/O edge of conferences: member requests, pushed call events, disconnects.

:class:`Conferences` keeps one :class:`~spaces.conference.Conference` per conference room
(created on first use, with the room's bans loaded from the store) and, for each seated
member, the WebSocket session that joined it: call events go to that session, and when it
closes the member leaves the call. A member who joins again from another session takes the
seat over (the old session hears :class:`CallEnded` ``replaced``).

Everything a call relays between participants is a box sealed end to end; the server only
checks who may send to whom (:meth:`Conference.may_relay`) and how large it is.

Several instances (issue 11): every instance keeps a replica of each call and applies the
same inputs (:class:`CallInput`: open, join, resume, act, leave, signal, place) in one
order, the ordered log of :mod:`spaces.events` (on PostgreSQL, the commit order of the
inputs' transactions).
An input carries everything its outcome depends on — the roles and time of the instance
that took the request, whether it has an SFU, the next call id — so every replica reaches
the same state. The instance that took a request checks it first (so the member hears a
refusal at once) and answers with its replica's result once its input has come round;
each instance pushes events to the sessions connected to it, and a signal to a participant
connected elsewhere reaches it through its own instance.

Instances come and go (:mod:`spaces.call_log` has the log's rules): one without a replica, or
that sees a room's input numbers jump, rebuilds the call by replaying the room's log; after
its listener comes back it checks every call. Session tokens name their instance. When an
instance stops (a restart) its sessions' seats are *not* left: a member reconnecting through
another instance takes its seat over with the join that holds it (``resume``: same seat,
nobody sees a leave); seats held through an instance silent (no heartbeat) for
``[conference] seat_grace_seconds`` — stopped or SIGKILLed — are left, through the log, by
the instances still alive.

A call on the SFU runs on one node for every instance: a ``place`` input names the node (and
the opaque conference id the node knows the call by) and every replica records the same
:class:`~spaces.call_log.Placement`; the first ``place`` of a call in the log wins, a later
one only moves the call if it names the placement it replaces (the node went away). A
placement is part of the replica, so a rebuilt one has it too. See
:mod:`spaces.handlers.call_media`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
from protocol.records import HASH_WINDOW, Role, RoomCreate, Roster
from protocol.wire import Done, encoder
from spaces.call_log import (
    CallInput,
    Limits,
    Placement,
    Replica,
    base_decoder,
    input_decoder,
    input_encoder,
    instance_of,
)
from spaces.conference import Change, Conference
from spaces.config import Config
from spaces.events import Events, LocalEvents
from spaces.hub import Hub, Subscriber
from spaces.limits import KeyedLimiter
from spaces.membership import Membership
from spaces.services import CONFERENCE_STORE, CONFIG, EVENTS, HUB, MEMBERSHIP, Caller, add_routes
from spaces.storage.interfaces import ConferenceStore, StorageError

log = logging.getLogger(__name__)
# A member's self-state actions (hand, microphone, camera: SELF_STATE) per room: each is
# pushed to every participant, so a few toggles in a row, no stream.
SELF_STATE_PER_SECOND = 2.0
SELF_STATE_BURST = 10
FREE_SEATS_SECONDS = 2.0  # how often the seats of silent instances are looked for
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
        self.events.on_resync(self._resync)
        self.membership = membership
        self.hub = hub
        self.config = config
        self.store = store
        self.clock = clock
        limits = config.conference
        self.limits = Limits(limits.mesh_max, limits.mesh_return_max, limits.max_participants)
        self._replicas: dict[CallKey, Replica] = {}
        # Sessions connected here, by call and member (who holds each seat, wherever it is
        # connected, is part of the replica: Replica.seated).
        self._sessions: dict[CallKey, dict[bytes, Subscriber]] = {}
        self._tokens: dict[Subscriber, str] = {}
        self._by_token: dict[str, Subscriber] = {}
        self._creating: dict[CallKey, asyncio.Lock] = {}
        self._freed: set[str] = set()  # tokens of dead instances' seats already let go
        # Inputs submitted here and not yet applied, by call and member (Replica.spent
        # counts them once applied): the per-member budget holds for concurrent requests.
        self._pending: dict[tuple[CallKey, bytes], int] = {}
        self._self_state = KeyedLimiter(SELF_STATE_PER_SECOND, SELF_STATE_BURST, clock)
        # Told of every change before it is announced (the SFU side follows calls this way).
        self.observers: list[Callable[[Conference, Roster, Change], None]] = []
        # Told when a call's SFU placement changes (live, or found changed by a rebuild).
        self.placement_observers: list[Callable[[CallKey, Placement | None], None]] = []
        self.sfu_available: Callable[[], bool] = lambda: False
        hub.on_remove(self._session_gone)
        hub.on_departed(self._departed)

    def census(self) -> dict[str, tuple[int, int]]:
        """topology -> (calls with someone in them, participants joined): for /metrics."""
        result: dict[str, tuple[int, int]] = {}
        for replica in self._replicas.values():
            conference = replica.conference
            joined = len(conference.joined)
            if joined:
                calls, people = result.get(conference.topology, (0, 0))
                result[conference.topology] = (calls + 1, people + joined)
        return result

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def conference(self, space_id: str, room_id: str) -> tuple[Conference, Roster]:
        roster = await self.membership.roster(space_id)
        self._room_spec(roster, room_id)
        key = (space_id, room_id)
        if key not in self._replicas:
            async with self._creating.setdefault(key, asyncio.Lock()):
                if key not in self._replicas:
                    bans = list((await self.store.bans(space_id, room_id)).values())
                    await self._submit(self._input("open", space_id, room_id, bans=bans))
        return self._replicas[key].conference, roster

    @staticmethod
    def _room_spec(roster: Roster, room_id: str) -> RoomCreate:
        room = roster.rooms.get(room_id)
        if room is None or room.spec.kind != "conference":
            raise NotFound("no conference room with that id in this space")
        return room.spec

    def _token(self, subscriber: Subscriber) -> str:
        token = self._tokens.get(subscriber)
        if token is None:
            token = f"{self.events.instance}.{secrets.token_hex(8)}"
            self._tokens[subscriber] = token
            self._by_token[token] = subscriber
        return token

    def _input(self, kind: str, space_id: str, room_id: str, **fields: Any) -> CallInput:
        limits = self.limits
        return CallInput(
            kind,
            space_id,
            room_id,
            now_ms=self.now_ms(),
            sfu=self.sfu_available(),
            limits=[limits.mesh_max, limits.mesh_return_max, limits.max_participants],
            next_call_id=fields.pop("next_call_id", None) or new_id(),
            **fields,
        )

    async def _submit(self, entry: CallInput) -> Any:
        body = input_encoder.encode(entry)
        return await self.events.submit(body, (entry.space_id, entry.room_id), entry.changes_state)

    async def _spend(self, entry: CallInput) -> Any:
        """Submit a member's join, resume or act within its budget for this call (the log
        keeps them until the call ends: spaces/call_log.py)."""
        key = (entry.space_id, entry.room_id)
        replica = self._replicas.get(key)
        spent = replica.spent.get(entry.member, 0) if replica is not None else 0
        pending = (key, entry.member)
        if spent + self._pending.get(pending, 0) >= self.config.conference.max_inputs_per_member:
            raise RateLimited(
                "you have sent too many changes in this call; the server takes no more from "
                "you until it ends"
            )
        self._pending[pending] = self._pending.get(pending, 0) + 1
        try:
            return await self._submit(entry)
        finally:
            left = self._pending[pending] - 1
            if left:
                self._pending[pending] = left
            else:
                del self._pending[pending]

    # -- the replicas: every instance applies every input, in the log's order -----------------

    async def _apply(self, body: bytes, mine: bool, seq: int) -> Any:
        entry = input_decoder.decode(body)
        key = (entry.space_id, entry.room_id)
        replica = self._replicas.get(key)
        if seq == 0:  # one instance: nothing is ever missed
            seq = replica.seq + 1 if replica is not None else 1
        elif replica is not None and seq <= replica.seq:
            # Already in a replay of the log (an input heard after a rebuild had read it).
            if mine:
                raise StorageError("the server re-read that call meanwhile; try again")
            return None
        elif replica is not None and seq > replica.seq + 1:
            log.info("inputs of a call were missed here; rebuilding it from the log")
            replica = await self._rebuild(key, seq - 1)
        elif replica is None and (entry.kind != "open" or seq > 1):
            replica = await self._rebuild(key, seq - 1)  # a call that started before we did
        if replica is None:
            assert entry.kind == "open"
            roster = await self.membership.roster(entry.space_id)
            spec = self._room_spec(roster, entry.room_id)
            self._install(key, Replica.opened(spec, self.limits, entry, seq))
            return None
        if not entry.changes_state:
            replica.seq = seq
            if replica.may_signal(entry):
                recipient = self._sessions[key].get(entry.to)
                if recipient is not None:
                    event = CallSignal(entry.room_id, entry.call_id, entry.member, entry.box)
                    self._push(recipient, event)
            return None
        # The roster first: if it cannot be read (the database away), the input is not
        # counted as applied, and the next one finds the gap and rebuilds from the log.
        roster = await self.membership.roster(entry.space_id)
        replica.seq = seq
        conference = replica.conference
        call_id = conference.call_id  # (the next call's once this input ends it)
        applied = replica.apply(entry)  # raises if refused: the same everywhere
        if entry.kind == "place":
            if applied.placed:
                self._placed(key, replica.placement)
            return replica.placement
        if applied.replaced is not None:
            previous = self._by_token.get(applied.replaced)
            if previous is not None and self._sessions[key].get(entry.member) is previous:
                del self._sessions[key][entry.member]
                self._push(previous, CallEnded(entry.room_id, conference.call_id, "replaced"))
        if entry.kind in ("join", "resume"):
            subscriber = self._by_token.get(entry.session)
            if subscriber is not None and not subscriber.closed:
                self._sessions[key][entry.member] = subscriber
        elif entry.kind == "leave" and applied.change is not None:
            subscriber = self._sessions[key].pop(entry.member, None)
            if subscriber is not None and self._tokens.get(subscriber) == entry.session:
                # A session still connected here whose seat another instance freed: it took
                # this one for dead (silent for seat_grace_seconds: a stall, a pause). Its
                # client must hear that it is out of the call (leave_call and a closed
                # session are no longer in _sessions by now), not stay a ghost in it.
                self._push(subscriber, CallEnded(entry.room_id, call_id, "ended"))
        if applied.change is not None:
            self._announce(conference, roster, applied.change)
            if applied.change.ended and mine:
                asyncio.get_running_loop().create_task(self._compact(key, seq, replica))
        if entry.kind in ("join", "resume"):
            return replica.joined_reply(entry.member, entry.roles, applied.change)
        return applied.change

    def _install(self, key: CallKey, replica: Replica) -> None:
        self._replicas[key] = replica
        self._sessions.setdefault(key, {})

    async def _rebuild(self, key: CallKey, upto: int | None) -> Replica:
        """The room's replica, replayed from its log (spaces/call_log.py); sessions here
        that no longer hold their seat in it are told their part in the call ended."""
        base, rows = await self.events.room_log(key, upto)
        roster = await self.membership.roster(key[0])
        spec = self._room_spec(roster, key[1])
        replica = Replica.replay(
            key[0],
            spec,
            self.limits,
            (base[0], base_decoder.decode(base[1])) if base is not None else None,
            [(seq, input_decoder.decode(body)) for seq, body in rows],
            upto if upto is not None else max([0, *(seq for seq, _ in rows)], default=0),
        )
        old = self._replicas.get(key)
        self._install(key, replica)
        if (old.placement if old is not None else None) != replica.placement:
            self._placed(key, replica.placement)
        if old is not None:
            conference, roles = replica.conference, roles_of(roster)
            sessions = self._sessions[key]
            for member, subscriber in list(sessions.items()):
                if replica.seated.get(member) != self._tokens.get(subscriber):
                    del sessions[member]
                    self._push(subscriber, CallEnded(key[1], old.conference.call_id, "ended"))
                else:
                    self._push(subscriber, CallUpdate(conference.state_for(member, roles), None))
        return replica

    async def _resync(self) -> None:
        """After the bus lost notifications: bring every replica up to its room's log."""
        for key, replica in list(self._replicas.items()):
            try:
                base, rows = await self.events.room_log(key, None)
                newest = max([base[0] if base else 0, *(seq for seq, _ in rows)])
                if newest > replica.seq:
                    await self._rebuild(key, newest)
            except Exception:
                log.exception("rebuilding a call after lost events failed")

    async def _compact(self, key: CallKey, seq: int, replica: Replica) -> None:
        try:
            base = replica.base() if replica.seq == seq and replica.is_idle() else None
            if base is not None:
                await self.events.compact(key, seq, input_encoder.encode(base))
        except Exception:
            log.exception("compacting a call's log failed")

    def _placed(self, key: CallKey, placement: Placement | None) -> None:
        for observer in self.placement_observers:
            observer(key, placement)

    def placements(self) -> dict[CallKey, Placement]:
        """Every current call's placement."""
        return {
            key: placed
            for key, replica in list(self._replicas.items())
            if (placed := replica.placement) is not None
        }

    def placement(self, key: CallKey) -> Placement | None:
        """The node carrying the room's current call, if the log has placed it."""
        replica = self._replicas.get(key)
        return replica.placement if replica is not None else None

    async def place(
        self, key: CallKey, call_id: str, node: str, conference: str, replaces: str
    ) -> Placement | None:
        """Put the call on ``node`` (``""``: on none) unless the log placed it since
        ``replaces`` was read; the placement every replica now has."""
        placed = await self._submit(
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
        replica = self._replicas.get(key)
        return replica.conference if replica is not None else None

    def session_of(self, key: CallKey, member: bytes) -> Subscriber | None:
        """The session through which ``member`` joined the room's call, if it is seated."""
        return self._sessions.get(key, {}).get(member)

    def push(self, key: CallKey, member: bytes, event: msgspec.Struct) -> None:
        subscriber = self.session_of(key, member)
        if subscriber is not None:
            self._push(subscriber, event)

    # -- seats of instances that died --------------------------------------------------------

    async def free_dead_seats(self) -> int:
        """Leave, through the log, every seat held by a session of an instance not heard
        from for ``[conference] seat_grace_seconds``; how many leaves were sent. Only the
        instances' own heartbeats decide (a client names no instance, and its session
        token is made here), and a member whose new session took its seat over meanwhile
        keeps it (the leave names the old session)."""
        live = await self.events.live_instances(self.config.conference.seat_grace_seconds)
        if live is None:
            return 0
        live.add(self.events.instance)
        sent = 0
        for key, replica in list(self._replicas.items()):
            for member, token in list(replica.seated.items()):
                if instance_of(token) in live or token in self._freed:
                    continue
                self._freed.add(token)
                try:
                    await self._submit(self._input("leave", *key, member=member, session=token))
                    sent += 1
                except Exception:
                    self._freed.discard(token)
                    log.exception("freeing a seat of a silent instance failed")
        return sent

    async def _free_dead_seats_forever(self) -> None:
        while True:
            await asyncio.sleep(FREE_SEATS_SECONDS)
            try:
                if await self.free_dead_seats():
                    log.info("freed the call seats of an instance that went silent")
            except Exception:
                log.exception("freeing the seats of silent instances failed")

    # -- pushing -----------------------------------------------------------------------------

    def _push(self, subscriber: Subscriber, event: msgspec.Struct) -> None:
        subscriber.push(encoder.encode(event))

    def _announce(self, conference: Conference, roster: Roster, change: Change) -> None:
        """Tell everyone concerned: removed members hear why, admitted participants get the
        new state; a lobby member only hears about changes to its own seat."""
        for observer in self.observers:
            observer(conference, roster, change)
        key = (conference.space_id, conference.room_id)
        sessions = self._sessions[key]
        for member, reason in change.removed:
            subscriber = sessions.pop(member, None)
            if subscriber is not None:
                self._end(subscriber, conference, reason, change)
        if change.ended:
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
                    if self.hub.closing:
                        # This instance is shutting down (a restart): its members keep
                        # their seats, to take them over through another instance; those
                        # who do not come back are freed once it has been silent for
                        # seat_grace_seconds (free_dead_seats, on the instances left).
                        continue
                    leave = self._input("leave", *key, member=member, session=token)
                    asyncio.get_running_loop().create_task(self._leave_later(leave))

    def _departed(self, space_id: str, member: bytes) -> None:
        """A member is no longer one of the space (removed, banned, gone; every instance
        hears it): its seats leave the space's calls now, through the log, even those
        held through an instance that died (else they would stay, with their admissions,
        until seat_grace_seconds; a session connected here leaves through _session_gone)."""
        for key, replica in list(self._replicas.items()):
            token = replica.seated.get(member)
            if key[0] != space_id or token is None:
                continue
            if token in self._by_token or token in self._freed:
                continue
            self._freed.add(token)
            leave = self._input("leave", *key, member=member, session=token)
            asyncio.get_running_loop().create_task(self._leave_later(leave))

    async def _leave_later(self, leave: CallInput) -> None:
        try:
            await self._submit(leave)
        except Exception:  # the space may be gone; nothing to tell anyone then
            log.exception("announcing a departure failed")

    # -- requests ----------------------------------------------------------------------------

    async def get_call(self, subscriber: Subscriber, message: GetCall) -> CallInfo:
        conference, roster = await self.conference(subscriber.space_id, message.room_id)
        roster.active(subscriber.member)
        return CallInfo(message.id, conference.state_for(subscriber.member, roles_of(roster)))

    async def join_call(self, subscriber: Subscriber, message: JoinCall) -> CallJoined:
        """Join, or — with the very join that holds the member's seat — take the seat over
        from another session (a client back after losing its server: same seat, same sender
        index, same keys, nobody sees it leave)."""
        conference, roster = await self.conference(subscriber.space_id, message.room_id)
        member = subscriber.member
        since = roster.active(member).joined_seq  # this tenure in the space began there
        if message.join.actor != member:
            raise Forbidden("a join must be signed by the session's member")
        seat = conference.seats.get(member)
        # (A seat joined before a removal from the space and a re-join is not taken over.)
        resume = seat is not None and seat.join == message.join and message.join.head_seq >= since
        key = (conference.space_id, conference.room_id)
        token = self._token(subscriber)
        if resume and self._replicas[key].seated.get(member) == token:
            # This session holds the seat already: nothing changes, nothing to log.
            state = self._replicas[key].joined_reply(member, roles_of(roster), None)
            return CallJoined(message.id, state.state, state.status)
        if not resume:
            _check_head(message.join, roster)
        joined = await self._spend(
            self._input(
                "resume" if resume else "join",
                *(conference.space_id, conference.room_id),
                session=token,
                member=member,
                action=message.join,
                roles=roles_of(roster),
                since=since,
            )
        )
        assert isinstance(joined, CallJoined)
        return CallJoined(message.id, joined.state, joined.status)

    async def leave_call(self, subscriber: Subscriber, message: LeaveCall) -> Done:
        conference, _ = await self.conference(subscriber.space_id, message.room_id)
        key = (conference.space_id, conference.room_id)
        sessions = self._sessions[key]
        if sessions.get(subscriber.member) is subscriber:
            leave = self._input(
                "leave", *key, member=subscriber.member, session=self._token(subscriber)
            )
            del sessions[subscriber.member]  # it asked to go: no call_ended for it
            try:
                await self._submit(leave)
            except BaseException:
                if subscriber.member not in sessions and not subscriber.closed:
                    sessions[subscriber.member] = subscriber  # still seated, still here
                raise
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
        change = await self._spend(
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
        key = (conference.space_id, conference.room_id)
        sessions = self._sessions[key]
        if sessions.get(subscriber.member) is not subscriber:
            raise Forbidden("only the session that joined the call may signal in it")
        if not conference.may_relay(subscriber.member, message.to):
            raise Forbidden("signals go only between admitted participants of the call")
        if message.to not in self._replicas[key].seated:
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
        await self._submit(signal)
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

    async def free_dead_seats(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(conferences._free_dead_seats_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(free_dead_seats)
    return conferences
