"""Conferences on the SFU: media offers, and moderation carried out by the node.

:class:`CallMedia` sits between :class:`~spaces.handlers.conference.Conferences` (who is in
which call, what the hosts decided) and the :class:`~spaces.sfu_registry.SfuRegistry`
(which node carries which call). It

- answers :class:`SfuOffer`: an *admitted* participant of a call that runs on the SFU hands
  over its SDP offer and gets the node's answer (a lobby member gets nothing: no media, and
  no keys either — those travel sealed between participants, who send none to the lobby);
- makes the node enforce what the hosts decided (server-enforced, not left to clients):
  a muted participant's audio is no longer forwarded, a stage listener's audio and video
  neither; a kicked, banned or denied participant's connection is dropped at once; one who
  leaves is let go; when an auto call moves back to a mesh, its SFU connections close after
  ``[sfu] mesh_grace_seconds`` (clients close them themselves once the mesh carries media);
- relays each participant's :class:`SfuView` (how big it shows its receiving slots) to the
  node, for that participant's own slots only;
- relays the node's active speaker (:class:`CallSpeaker`) and tells participants to
  reconnect when their node goes away (:class:`SfuReconnect`).

The node sees an opaque conference id per call and each participant's per-call number,
never a space, room or member key.

Several instances (issue 11). Participants of one call may be connected to different
``salon serve`` instances, so every instance must use the same node, under the same
conference id, for that call. Two ways were open: registrations in PostgreSQL with node
commands forwarded between instances as events, or a node that registers with every
instance (``[sfu] server_urls``). The second is the simpler and the more robust: each
instance drives the node directly over its own authenticated channel (no second hop, no
new event kinds, nothing to lose in between), a node stays usable by the instances that
can reach it when one dies, and the node itself keeps the participants of an instance
whose channel dropped for ``[sfu] orphan_grace_seconds`` (their media keeps flowing while
they rejoin through another instance; :mod:`sfu.standalone`). The choice of node is made
once per call, in the calls' ordered log: the instance that takes the first media offer
submits a ``place`` input naming the least loaded node *it* has and a fresh conference id;
every replica records the first one (:class:`~spaces.handlers.conference.Placement`), so
all instances agree, and an instance never names a node it does not have. An instance
that loses the node carrying a call (its channel drops, not because it shuts down) submits
a ``place`` that replaces that placement (the first instance to notice moves the call; the
others' inputs then change nothing); every instance tells its participants to reconnect
(:class:`SfuReconnect`) and their next offers land on the new node. An offer for a call
placed on a node this instance does not have (not registered here yet, or cut off from
here only) waits up to :data:`NODE_WAIT_SECONDS` for the node to register (a restarted
instance: the node dials it again within its back-off, and the call stays put); then the
instance moves the call, through the log, to a node it has. That converges whenever the
instances with participants share a node (all do when every node registers with every
instance); with disjoint node sets it would move back and forth, at most once per wait.
In-process nodes are per instance (named apart), so a call that spans instances needs
standalone nodes.

Each instance drives the node for the participants connected to it; the node refuses to
let it act on another instance's (:mod:`sfu.standalone`). It also asks the node to drop,
kick or mute a participant connected elsewhere when its replica sees that seat removed,
re-seated (a rejoin) or moderated, the call end, or the member leave the space: the node
obeys only for orphans (their instance's channel is gone), so surviving instances moderate
a dead one's participants. For that every instance follows the seats of every placed
call (from the ``place`` input on), not only of calls with participants connected to it. Node events
reach each instance whose participants are in the conference; the active speaker is named
from the replicated seats, wherever that participant is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from protocol.conference_rules import seat_flags
from protocol.conference_wire import (
    MAX_VIEW_SLOTS,
    CallSpeaker,
    SfuAnswer,
    SfuOffer,
    SfuReconnect,
    SfuView,
    view_problem,
)
from protocol.errors import (
    Forbidden,
    InvalidMessage,
    NotFound,
    ProtocolError,
    RateLimited,
    TooLarge,
)
from protocol.ids import new_id
from protocol.records import Role, Roster
from protocol.wire import Done
from spaces.call_log import Placement
from spaces.conference import Change, Conference, Seat
from spaces.config import Config
from spaces.events import LocalEvents
from spaces.handlers.conference import CONFERENCES, CallKey, Conferences, roles_of
from spaces.limits import KeyedLimiter
from spaces.services import CONFIG, EVENTS, Caller, add_routes
from spaces.sfu_registry import (
    LOCAL_NAME,
    NodeHandle,
    SfuRegistry,
    SfuUnavailable,
    install_registry,
)

log = logging.getLogger(__name__)
KICKED_REASONS = ("removed", "banned", "denied")
MEDIA_MODERATION = ("mute", "unmute", "mute-all", "promote", "demote")
OFFERS_PER_SECOND = 0.5
OFFER_BURST = 6
# A client sends its view when its layout changes (debounced): a resize, a tile moving.
VIEWS_PER_SECOND = 2.0
VIEW_BURST = 10
# How long an offer waits for the call's node to register here before moving the call to a
# node this instance has: a node dials each instance again within sfu.standalone.MAX_BACKOFF.
NODE_WAIT_SECONDS = 12.0


@dataclass
class _SfuCall:
    """One call's media on its node."""

    call_id: str
    conference: str  # the opaque id the node knows it by (the same on every instance)
    connected: dict[bytes, str] = field(default_factory=dict)  # member -> participant number
    # Every joined seat's participant number, wherever it is connected (the replica's view).
    seen: dict[bytes, str] = field(default_factory=dict)
    muted: dict[bytes, tuple[bool, bool]] = field(default_factory=dict)  # applied (audio, video)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    mesh_since: float | None = None


class CallMedia:
    def __init__(
        self,
        conferences: Conferences,
        registry: SfuRegistry,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conferences = conferences
        self.registry = registry
        self.config = config
        self.clock = clock
        self._calls: dict[CallKey, _SfuCall] = {}
        self._by_conference: dict[str, CallKey] = {}
        self._placed: dict[CallKey, str] = {}  # the conference id the log placed each call as
        self._tasks: set[asyncio.Task[Any]] = set()
        # Each offer costs the node a peer connection: a few in a row (reconnects), no more.
        self._offers = KeyedLimiter(OFFERS_PER_SECOND, OFFER_BURST, clock)
        self._views = KeyedLimiter(VIEWS_PER_SECOND, VIEW_BURST, clock)
        conferences.observers.append(self.on_change)
        conferences.placement_observers.append(self.on_placement)
        conferences.sfu_available = registry.available
        conferences.hub.on_departed(self.member_departed)
        registry.events = self

    # -- offers -------------------------------------------------------------------------------

    async def offer(self, caller: Caller, message: SfuOffer) -> SfuAnswer:
        limit = self.config.sfu.max_offer_bytes
        if len(message.sdp.encode("utf-8", "replace")) > limit:
            raise TooLarge(f"an SFU offer is at most {limit} bytes")
        member = caller.member
        if not self._offers.allow(f"{caller.space_id}/{member.hex()}"):  # as views: see there
            raise RateLimited("too many SFU offers; wait a few seconds")
        conference, _ = await self.conferences.conference(caller.space_id, message.room_id)
        key = (conference.space_id, conference.room_id)
        if message.call_id != conference.call_id:
            raise NotFound("that call is over")
        if self.conferences.session_of(key, member) is not caller.subscriber:
            raise Forbidden("only the session that joined the call may connect its media")
        seat = conference.seats.get(member)
        if seat is None or seat.status != "joined":
            raise Forbidden("no media before a host admits you from the lobby")
        if conference.topology != "sfu":
            raise InvalidMessage("this call runs as a mesh now, not on the SFU")
        placement = await self._placement(key, conference.call_id)
        call = self._call_for(key, conference, placement)
        node = self.registry.handle(placement.node)
        if node is None:
            raise SfuUnavailable("the SFU node carrying this call left this server; try again")
        participant = str(seat.index)
        # The node forwards only frames under this seat's SFrame key ids (issue 8 point 4).
        answer = await node.join(call.conference, participant, message.sdp, seat.index)
        self.registry.joined(call.conference, participant)
        seat = conference.seats.get(member)
        if (
            seat is None
            or seat.status != "joined"
            or conference.call_id != call.call_id
            or self._calls.get(key) is not call
        ):  # removed while the node was answering
            await self._quietly(node.kick(call.conference, participant))
            self.registry.left(call.conference, participant)
            raise NotFound("you are no longer in that call")
        call.connected[member] = participant
        call.muted.pop(member, None)
        async with call.lock:  # before the answer goes out: no unmuted moment
            await self._apply_mutes(call, conference, node, [member])
        return SfuAnswer(message.id, answer)

    async def view(self, caller: Caller, message: SfuView) -> Done:
        """Hand the caller's view of its own slots to the node carrying its media (it
        changes only which simulcast layer the node sends into those slots)."""
        if len(message.slots) > MAX_VIEW_SLOTS:
            raise TooLarge(f"a view names at most {MAX_VIEW_SLOTS} slots")
        problem = view_problem(message.slots)
        if problem is not None:
            raise InvalidMessage(problem)
        member = caller.member
        # Per member, not per room named: a made-up room id must not get a fresh bucket (nor
        # fill the limiter, evicting real members' buckets). One member, one call at a time.
        if not self._views.allow(f"{caller.space_id}/{member.hex()}"):
            raise RateLimited("too many SFU views; send one when the layout changes")
        conference, _ = await self.conferences.conference(caller.space_id, message.room_id)
        key = (conference.space_id, conference.room_id)
        if message.call_id != conference.call_id:
            raise NotFound("that call is over")
        if self.conferences.session_of(key, member) is not caller.subscriber:
            raise Forbidden("only the session that joined the call may send its view")
        call = self._calls.get(key)
        participant = call.connected.get(member) if call is not None else None
        node = self._node(call) if call is not None else None
        if call is None or participant is None or call.call_id != conference.call_id:
            raise NotFound("your media is not connected to the SFU (send an SfuOffer first)")
        if node is None:
            raise SfuUnavailable("the SFU node carrying this call left this server; try again")
        heights = {slot.mid: slot.height for slot in message.slots}
        await node.set_view(call.conference, participant, heights)
        return Done(message.id)

    async def _placement(self, key: CallKey, call_id: str) -> Placement:
        """The call's node as the log says, placing it first (on the least loaded node
        this instance has: never one it does not have) if the log has not yet. A node not
        registered here is waited for (a node dials a restarted instance again within its
        back-off), then replaced by one this instance has."""
        placed = self.conferences.placement(key)
        if placed is not None and self.registry.handle(placed.node) is None:
            if await self.registry.wait_for(placed.node, NODE_WAIT_SECONDS) is None:
                log.info("the SFU node of a call is not registered here: moving the call")
            now = self.conferences.placement(key)
            if now is not None and now != placed:
                return now  # moved meanwhile (by this instance or another)
        if placed is None or self.registry.handle(placed.node) is None:
            node = self.registry.choose()
            replaces = placed.conference if placed is not None else ""
            placed = await self.conferences.place(key, call_id, node, new_id(), replaces)
            if placed is None or placed.call_id != call_id:
                raise NotFound("that call is over")
        return placed

    def _call_for(self, key: CallKey, conference: Conference, placement: Placement) -> _SfuCall:
        call = self._calls.get(key)
        if call is None or call.call_id != conference.call_id:
            if call is not None:
                self._spawn(self._finish(key, call))
            call = _SfuCall(conference.call_id, placement.conference, seen=_joined(conference))
            self._calls[key] = call
            self._by_conference[call.conference] = key
        # The node carrying it, as the log says: after a move back to a mesh forgot the
        # call's SFU side, its placement is unchanged and nothing else assigns it again
        # (without it no kick, mute or stage change would reach the node).
        if self.registry.assigned_to(call.conference) != placement.node:
            self.registry.assign(call.conference, placement.node)
        return call

    def on_placement(self, key: CallKey, placement: Placement | None) -> None:
        """The log (re)placed a call: every instance records it (for the nodes' load);
        participants connected here to the call's old node are told to reconnect, and let
        go there."""
        self._unplace(key)
        if placement is not None:
            self.registry.assign(placement.conference, placement.node)
            self._placed[key] = placement.conference
        call = self._calls.get(key)
        if call is not None and (placement is None or call.conference != placement.conference):
            event = SfuReconnect(key[1], call.call_id, "the SFU node carrying this call went away")
            for member in call.connected:
                self.conferences.push(key, member, event)
            old = self.registry.handle(self.registry.assigned_to(call.conference) or "")
            participants = list(call.connected.values())
            self._forget(key, call)
            if old is not None:
                for participant in participants:
                    self._spawn(self._quietly(old.leave(call.conference, participant)))
        # Follow every placed call's seats, whether or not anyone connected here offers
        # media: if another instance dies, this one must be able to drop its participants
        # (orphans on the node) when they are kicked or the call ends.
        conference = self.conferences.call(key)
        if (
            placement is not None
            and conference is not None
            and conference.call_id == placement.call_id
            and key not in self._calls
        ):
            self._call_for(key, conference, placement)

    # -- following the conference -----------------------------------------------------------

    def on_change(self, conference: Conference, roster: Roster, change: Change) -> None:
        """Every join, leave and action of every call passes here (synchronously)."""
        key = (conference.space_id, conference.room_id)
        if change.ended:  # placed calls count towards a node's load until they end
            self._unplace(key)
        call = self._calls.get(key)
        if call is None:
            placed = self.conferences.placement(key)
            if placed is not None and not change.ended and conference.topology == "sfu":
                self._call_for(key, conference, placed)  # back from a mesh: follow it again
            return
        if change.ended or call.call_id != conference.call_id:
            self._spawn(self._finish(key, call))
            return
        kicked = [m for m, reason in change.removed if reason in KICKED_REASONS]
        # Seats connected elsewhere that are gone (or rejoined under a new number): the node
        # lets us drop them only if their instance's channel is gone (orphans, which no one
        # else moderates any more); otherwise it refuses and their own instance does it.
        now = _joined(conference)
        elsewhere = [
            (member, participant, member in kicked)
            for member, participant in call.seen.items()
            if member not in call.connected and now.get(member) != participant
        ]
        call.seen = now
        # And a host's media moderation of a participant connected elsewhere (same rule).
        action, muting = change.action, []
        if action is not None and action.action in MEDIA_MODERATION:
            named = list(now) if action.action == "mute-all" else [action.target]
            muting = [m for m in named if m in now and m not in call.connected]
        roles = roles_of(roster)
        self._spawn(self._reconcile(key, call, kicked, roles, elsewhere, muting))

    async def _reconcile(
        self,
        key: CallKey,
        call: _SfuCall,
        kicked: list[bytes],
        roles: dict[bytes, Role],
        elsewhere: list[tuple[bytes, str, bool]] | None = None,
        muting: list[bytes] | None = None,
    ) -> None:
        conference = self.conferences.call(key)
        if conference is None:
            return
        node = self._node(call)
        async with call.lock:
            if node is None:
                return
            for member in kicked:  # first: a kick drops the connection at once
                participant = call.connected.pop(member, None)
                if participant is not None:
                    await self._quietly(node.kick(call.conference, participant))
                    self.registry.left(call.conference, participant)
            for _, participant, kick in elsewhere or ():
                drop = node.kick if kick else node.leave
                await self._quietly(drop(call.conference, participant))
            for member, participant in list(call.connected.items()):
                seat = conference.seats.get(member)
                if seat is None or seat.status != "joined":
                    del call.connected[member]
                    await self._quietly(node.leave(call.conference, participant))
                    self.registry.left(call.conference, participant)
            if conference.topology == "mesh":
                await self._back_to_mesh(key, call, node)
                return
            call.mesh_since = None
            await self._apply_mutes(call, conference, node, list(call.connected), roles)
            for member in muting or ():
                await self._mute_elsewhere(call, conference, node, member, roles)

    def member_departed(self, space_id: str, member: bytes) -> None:
        """A member left the space or was removed from it: their connections to its calls'
        nodes go at once. One connected here is kicked (its session's leave comes later);
        one connected through a dead instance (an orphan) too: nobody is left to take its
        seat out of the call, so no leave ever would, and it would keep its media until
        the node's orphan grace ends (a live instance's participant the node keeps to it)."""
        for key, call in list(self._calls.items()):
            if key[0] == space_id and member in call.seen:
                self._spawn(self._drop_departed(call, member))

    async def _drop_departed(self, call: _SfuCall, member: bytes) -> None:
        node = self._node(call)
        async with call.lock:
            if node is None:
                return
            participant = call.connected.pop(member, None)
            if participant is not None:
                self.registry.left(call.conference, participant)
            else:
                participant = call.seen.get(member)
            if participant is not None:
                await self._quietly(node.kick(call.conference, participant))

    async def _back_to_mesh(self, key: CallKey, call: _SfuCall, node: NodeHandle) -> None:
        grace = self.config.sfu.mesh_grace_seconds
        now = self.clock()
        if call.mesh_since is None:
            call.mesh_since = now
            self._spawn(self._later(grace, key, call))
        elif now - call.mesh_since >= grace:
            for participant in call.connected.values():
                await self._quietly(node.leave(call.conference, participant))
            self._forget(key, call)

    async def _later(self, delay: float, key: CallKey, call: _SfuCall) -> None:
        await asyncio.sleep(delay)
        if self._calls.get(key) is call:
            conference = self.conferences.call(key)
            roles = {} if conference is None else await self._roles(conference)
            await self._reconcile(key, call, [], roles)

    async def _roles(self, conference: Conference) -> dict[bytes, Role]:
        roster = await self.conferences.membership.roster(conference.space_id)
        return roles_of(roster)

    async def _apply_mutes(
        self,
        call: _SfuCall,
        conference: Conference,
        node: NodeHandle,
        members: list[bytes],
        roles: dict[bytes, Role] | None = None,
    ) -> None:
        """Make the node forward exactly what each participant may send now."""
        if roles is None:
            roles = await self._roles(conference)
        for member in members:
            seat, participant = conference.seats.get(member), call.connected.get(member)
            if seat is None or participant is None:
                continue
            wanted = _held_back(conference, seat, roles)
            applied = call.muted.get(member, (False, False))
            for kind, want, have in zip(("audio", "video"), wanted, applied, strict=True):
                if want != have:
                    await self._quietly(node.set_muted(call.conference, participant, kind, want))
            call.muted[member] = wanted

    async def _mute_elsewhere(
        self,
        call: _SfuCall,
        conference: Conference,
        node: NodeHandle,
        member: bytes,
        roles: dict[bytes, Role],
    ) -> None:
        """What :meth:`_apply_mutes` does, for a participant connected through another
        instance: the node obeys only if that instance is gone (an orphan)."""
        seat, participant = conference.seats.get(member), call.seen.get(member)
        if seat is None or participant is None:
            return
        wanted = _held_back(conference, seat, roles)
        for kind, want in zip(("audio", "video"), wanted, strict=True):
            await self._quietly(node.set_muted(call.conference, participant, kind, want))

    async def _finish(self, key: CallKey, call: _SfuCall) -> None:
        """The call is over (or started over): let every connection go, ours and those
        connected elsewhere (the node lets us drop only orphans, whose instance is gone)."""
        node = self._node(call)
        async with call.lock:
            if node is not None:
                for participant in call.connected.values():
                    await self._quietly(node.leave(call.conference, participant))
                for member, participant in call.seen.items():
                    if member not in call.connected:
                        await self._quietly(node.leave(call.conference, participant))
            self._forget(key, call)

    def _forget(self, key: CallKey, call: _SfuCall) -> None:
        call.connected.clear()
        self.registry.release(call.conference)
        self._by_conference.pop(call.conference, None)
        if self._calls.get(key) is call:
            del self._calls[key]

    def _unplace(self, key: CallKey) -> None:
        conference = self._placed.pop(key, None)
        if conference is not None and conference not in self._by_conference:
            self.registry.release(conference)  # (a call connected here releases it itself)

    def _node(self, call: _SfuCall) -> NodeHandle | None:
        return self.registry.assigned(call.conference)

    # -- events from the nodes ----------------------------------------------------------------

    def _member(self, conference: str, participant: str) -> tuple[CallKey, _SfuCall, bytes] | None:
        key = self._by_conference.get(conference)
        call = self._calls.get(key) if key is not None else None
        if key is None or call is None:
            return None
        member = next((m for m, p in call.connected.items() if p == participant), None)
        return None if member is None else (key, call, member)

    def participant_left(self, conference: str, participant: str, reason: str) -> None:
        if reason in ("left", "kicked", "replaced"):
            return  # we asked for it, or a new connection took over
        found = self._member(conference, participant)
        if found is not None:
            _, call, member = found
            del call.connected[member]
            call.muted.pop(member, None)

    def speaker(self, conference: str, participant: str | None) -> None:
        key = self._by_conference.get(conference)
        call = self._calls.get(key) if key is not None else None
        if key is None or call is None:
            return
        member = b""
        replica = self.conferences.call(key)
        if participant is not None and replica is not None and replica.call_id == call.call_id:
            # Connected here or through another instance: the replicated seats know.
            member = next(
                (s.member for s in replica.seats.values() if str(s.index) == participant), b""
            )
        event = CallSpeaker(key[1], call.call_id, member)
        for listener in call.connected:
            self.conferences.push(key, listener, event)

    def node_lost(self, conferences: list[str]) -> None:
        """A node's channel to this instance dropped: move its calls elsewhere, through the
        log (the first instance to say so moves them; the others' inputs change nothing)."""
        if self.registry.closing:
            return  # this instance is going away, not the node: its calls stay where they are
        lost = set(conferences)
        for key, placed in list(self.conferences.placements().items()):
            if placed.conference in lost:
                self._spawn(self._replace(key, placed))

    async def _replace(self, key: CallKey, placed: Placement) -> None:
        try:
            node = self.registry.choose()
        except SfuUnavailable:
            node = ""  # none here: the call's next offer (here or elsewhere) places it
        await self.conferences.place(key, placed.call_id, node, new_id(), placed.conference)

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    async def _quietly(request: Awaitable[None]) -> None:
        """A node request whose failure changes nothing for the caller (the participant
        is gone already, or the node is: either way there is nothing left to stop)."""
        try:
            await request
        except ProtocolError as exc:
            log.debug("SFU request failed: %s", exc.message)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception:  # one call's trouble must not stop the others'
            log.exception("SFU bookkeeping failed")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _joined(conference: Conference) -> dict[bytes, str]:
    """member -> participant number (the node's name for it) of every joined seat."""
    return {m: str(s.index) for m, s in conference.seats.items() if s.status == "joined"}


CALL_MEDIA = web.AppKey("call_media", CallMedia)


async def _sfu_offer(caller: Caller, message: SfuOffer) -> msgspec.Struct:
    return await caller.app[CALL_MEDIA].offer(caller, message)


async def _sfu_view(caller: Caller, message: SfuView) -> msgspec.Struct:
    return await caller.app[CALL_MEDIA].view(caller, message)


def install_call_media(app: web.Application) -> CallMedia:
    """Add the SFU (registry, in-process node, node endpoint) and the offer route to a
    spaces app that already has conferences (:func:`install_conferences`)."""
    config = app[CONFIG]
    # Several instances: each one's in-process node is its own, so it must not share a name
    # with another's (a call placed on one is carried by no other instance's).
    alone = isinstance(app[EVENTS], LocalEvents)
    registry = install_registry(
        app,
        config.sfu.enabled,
        bool(config.sfu.node_secret),
        config.sfu.public_address,
        LOCAL_NAME if alone else f"{LOCAL_NAME}-{secrets.token_hex(4)}",
    )
    media = CallMedia(app[CONFERENCES], registry, config)
    app[CALL_MEDIA] = media
    add_routes(app, {SfuOffer: _sfu_offer, SfuView: _sfu_view})

    async def stop(app: web.Application) -> None:
        await media.close()

    app.on_cleanup.append(stop)
    return media


def _held_back(conference: Conference, seat: Seat, roles: dict[bytes, Role]) -> tuple[bool, bool]:
    """(audio, video): what the node must not forward of a participant now — a muted one's
    audio, a listener's audio and video (its seat's flags: the server checked each action
    when it took it)."""
    flags = seat_flags(
        seat.wire(), conference.room, conference.call_id, roles, lambda _action: True
    )
    return (flags.muted or not flags.speaker, not flags.speaker)
