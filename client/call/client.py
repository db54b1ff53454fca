"""The call client: join a conference room, verify everything, and run the media topology.

:class:`CallClient` is what ``salon call`` runs. It joins with a signed ``join``, then
follows the call's state as the server pushes it, and trusts nothing it cannot check:

- who is in the call, muted, promoted, holding up a hand, admitted from the lobby: derived
  from the signed actions in each state, re-verified against this device's verified roster
  (:func:`protocol.conference_rules.seat_flags`); an action that fails is ignored and
  counted. Whether the room has a lobby or a stage comes from the room's signed record,
  never from the server. Someone who enters after us must do so with a fresh action (their
  join, or in a lobby room their admission), whose nonce no other action used;
- a kick, denial or ban this device verified is honoured whatever the server says next:
  the join it removed (or the banned member) gets no keys and no connection, and if it
  is about us, we leave;
- why our part in the call ended: believed only with a signed action that says so;
- signalling (SDP, media keys): opened and verified end to end (:mod:`client.call.signalling`);
  a pair whose signalling fails is refused and never connects;
- media keys (:mod:`client.call.keys`): sent only to participants this device considers
  admitted, so a lobby member gets none; rekeyed on leave, ratcheted on join; they give the
  verification code every participant shows. Every signal, media keys included, names the
  pair's current joins (its link), so none is taken for another join of either side;
- liveness: who was in the call when we were let in may have entered long ago, so their
  seat (a genuine join and admission) proves nothing about now: a server re-using a call
  id could show an old one whose owner is gone. We connect to such a participant and seal
  our key to them only once they have sent us a signal naming *our* join (its random
  nonce), which only someone in the call now can do. Participants who enter after us
  entered with a fresh action, so we seal to them at once, which is that proof for them.

The decisions above are sans-I/O, in two modules this class drives: :mod:`client.call.ledger`
(the verdicts on single actions: verification, freshness, replays, kicks and bans honoured,
pinned mutes) and :mod:`client.call.admission` (who is in the call for us, given each state: a
:class:`~client.call.admission.CallView` in, an :class:`~client.call.admission.AdmissionDelta`
out; knocks; signals held until their sender is admitted). This class does the I/O they ask
for: requests on the space's connection, the topology and keys, lines on the terminal.

Media goes through a :class:`~client.call.topology.Topology`: a mesh of direct connections
(:mod:`client.call.mesh`) or the call's SFU node (:mod:`client.call.sfu_topology`), whichever the
server's state says. A switch is make-before-break: the old topology keeps delivering each
participant's media until the new one does (or :data:`RETIRE_SECONDS` pass). Frames from a
sender that is muted, or not a speaker on a stage, are dropped here, whatever the topology.

:func:`moderate` and :func:`raise_hand` are ``salon mod`` and ``salon hand``: they sign one
action and send it; the server relays it to the call, whose clients verify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import msgspec
import numpy as np
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from client.call.admission import (
    KNOCK_MAX_AGE_MS,
    PENDING_PER_SENDER,
    PENDING_SIGNAL_SECONDS,
    PENDING_SIGNALS_MAX,
    Admission,
    AdmissionDelta,
    CallView,
    knock_problem,
)
from client.call.e2ee_media import MEDIA_SUITE
from client.call.ice import IceConfig, fetch_ice_servers
from client.call.keys import CallKeys, MediaKeyMessage
from client.call.ledger import FORGET_MS, ActionLedger
from client.call.media import MediaError, dominant_colour, open_screen_source, open_sources
from client.call.mesh import MeshTopology
from client.call.recorder import GridRecorder
from client.call.sframe import SFrameContext
from client.call.sfu_topology import MediaDebugLog, SfuTopology
from client.call.signalling import SignalBody, SignalContext, SignalKind, SignalRejected, link_id
from client.call.signalling import open_signal as open_signal_box
from client.call.signalling import seal_signal as seal_signal_box
from client.call.stats import CallStats, PeerStats
from client.call.topology import TOPOLOGIES, LinkState, Peer, Topology, TopologyContext
from client.call.view import CallPicture, LiveDisplay, PlainDisplay, Row
from client.core import crypto
from client.core.backoff import Backoff
from client.core.errors import ClientError, ServerError, UsageError
from client.core.rooms import RoomView
from client.core.space import SpaceSession
from protocol.conference_rules import (
    RESTRICTIONS,
    TARGETED,
    SeatFlags,
    action_problem,
    end_problem,
    is_host,
    is_locked,
)
from protocol.conference_wire import (
    SEAT_ACTIONS,
    ActInCall,
    ActionName,
    CallAction,
    CallEnded,
    CallInfo,
    CallJoined,
    CallParticipant,
    CallSignal,
    CallSpeaker,
    CallState,
    CallUpdate,
    GetCall,
    JoinCall,
    LeaveCall,
    SendCallSignal,
    SfuAnswer,
    SfuOffer,
    SfuReconnect,
    action_signing_bytes,
)
from protocol.errors import ErrorCode
from protocol.forks import head_problem
from protocol.media_keys import MAX_EPOCH
from protocol.records import Role, RoomCreate, fingerprint
from protocol.wire import Done, RecordAdded, ServerMessage, SessionClosed
from rtc.aiortc_adapter import apply_ice_env, quiet_connect_after_close

log = logging.getLogger(__name__)
TOPOLOGIES.setdefault("mesh", MeshTopology)
TOPOLOGIES.setdefault("sfu", SfuTopology)

JOIN_RETRIES = 3
# The longest our media waits for our new key to reach the server for its recipients (a
# join: we keep the key everyone holds; a leave: we send nothing) before using it anyway.
KEY_SWITCH_SECONDS = 3.0
COLOUR_SAMPLE_EVERY = 5  # decoded frames between dominant-colour samples
REFRESH_SECONDS = 0.5
LEAVE_TIMEOUT = 2.0
# Losing the server (an instance restarted or died behind the server's address): reconnect
# with jittered back-off, for this long at most, and take our seat over with our join.
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 3.0
RECONNECT_GIVE_UP = 60.0
RETIRE_SECONDS = 8.0  # the longest a topology being replaced keeps running
SFU_OFFER_TIMEOUT = 15.0
EXIT_ENDED = 5  # exit code when a host removed, banned or denied us


class CallError(ClientError):
    """The call refused us or ended us; ``str()`` is the one-line reason."""

    def __init__(self, message: str, exit_code: int = EXIT_ENDED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MediaUnavailable(ClientError):
    """A media source or the recording could not be opened (``str()`` says which)."""


@dataclass(frozen=True)
class CallOptions:
    video: str = "test"
    audio: str = "test"
    duration: float | None = None
    record: str | None = None
    relay_only: bool = False  # every connection through the TURN server (client.call.ice)
    screen: str | None = None  # a screen to share: "test" or a media file
    muted: bool = False  # join with the microphone off (said with a signed "mic-off")


@dataclass
class KeyChange:
    """A membership change that moved the media keys on, and when this client caught up
    (unix times, so several participants' records can be put side by side)."""

    version: int
    kind: str  # "join" (ratchet) or "leave" (rekey)
    epoch: int  # our own key's epoch after the change
    seen_at: float
    keys_at: float | None = None  # every remaining sender's new key held
    sending_at: float | None = None  # our media encrypted under the new key (SFU)

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "kind": self.kind,
            "epoch": self.epoch,
            "seen_at": self.seen_at,
            "keys_at": self.keys_at,
            "sending_at": self.sending_at,
        }


class _Feed:
    """The sink one topology delivers to. While a switch is under way both topologies
    deliver; the old one's frames of a participant stop counting once the new one
    delivers that participant, and only the current topology reports link states."""

    def __init__(self, client: CallClient) -> None:
        self.client = client
        self.topology: Topology | None = None
        self.delivered: set[bytes] = set()

    def _superseded(self, member: bytes) -> bool:
        self.delivered.add(member)
        client = self.client
        current = client.feed
        return current is not self and current is not None and member in current.delivered

    def on_video(self, member: bytes, frame: av.VideoFrame) -> None:
        if not self._superseded(member):
            self.client.on_video(member, frame)

    def on_audio(self, member: bytes, frame: av.AudioFrame) -> None:
        if not self._superseded(member):
            self.client.on_audio(member, frame)

    def on_link(self, member: bytes, state: LinkState, detail: str = "") -> None:
        if self.client.feed is self:
            self.client.on_link(member, state, detail)

    def on_decrypt_failure(self, member: bytes) -> None:
        self.client.on_decrypt_failure(member)

    def on_screen(self, member: bytes, frame: av.VideoFrame) -> None:
        if self.client.feed is self:  # during a switch, only the current topology's
            self.client.on_screen(member, frame)

    def on_screen_decrypt_failure(self, member: bytes) -> None:
        self.client.on_screen_decrypt_failure(member)

    def on_send_key(self, epoch: int) -> None:
        self.client.on_send_key(epoch)

    def on_reconnected(self, member: bytes | None, outage: float) -> None:
        if self.client.feed is self:
            self.client.on_reconnected(member, outage)

    def on_retransmission(self, member: bytes, *, nacked: int = 0, resent: int = 0) -> None:
        self.client.on_retransmission(member, nacked=nacked, resent=resent)


@dataclass
class _Running:
    """A topology with what was made for it (its feed, its readers of our sources)."""

    topology: Topology
    feed: _Feed
    tracks: list[MediaStreamTrack]
    peers: set[bytes]
    retire_by: float = math.inf


@dataclass(frozen=True)
class CallOutcome:
    reason: str  # the stats' ended_reason
    message: str  # one line for the user
    exit_code: int = 0


MAX_EPOCH_ENV = "SALON_CALL_MAX_EPOCH"  # testing only: end the call after fewer key changes


def max_epoch_from_env() -> int:
    """The last media key epoch (``$SALON_CALL_MAX_EPOCH`` may only lower it, for tests)."""
    value = os.environ.get(MAX_EPOCH_ENV, "").strip()
    return min(int(value), MAX_EPOCH) if value.isdigit() else MAX_EPOCH


def sign_action(
    session: SpaceSession,
    room_id: str,
    call_id: str,
    name: ActionName,
    target: bytes = b"",
    join_ref: bytes = b"",
) -> CallAction:
    unsigned = CallAction(
        space_id=session.space_id,
        room_id=room_id,
        call_id=call_id,
        actor=session.member_key,
        action=name,
        target=target,
        issued_at=now_ms(),
        nonce=secrets.token_bytes(16),
        head_seq=session.verified.head_seq,
        head_hash=session.verified.head_hash,
        join_ref=join_ref,
    )
    signature = crypto.sign(session.m.signing_seed, action_signing_bytes(unsigned))
    return msgspec.structs.replace(unsigned, sig=signature)


def _seat_actions(state: CallState) -> list[CallAction | None]:
    return [
        a
        for p in state.participants
        for a in (p.join, p.admission, p.mute, p.hand, p.stage, p.mic, p.camera)
    ]


def now_ms() -> int:
    return int(time.time() * 1000)


def roles_of(session: SpaceSession) -> dict[bytes, Role]:
    return {key: member.role for key, member in session.verified.members.items()}


def _dbfs(frame: av.AudioFrame) -> float:
    samples = frame.to_ndarray().astype(np.float64)
    rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


class CallClient:
    """One participant in one call; :meth:`run` returns how it ended (see module doc)."""

    def __init__(
        self,
        session: SpaceSession,
        room: RoomView,
        options: CallOptions,
        display: PlainDisplay | LiveDisplay,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.room = room
        self.options = options
        self.display = display
        self.clock = clock
        self.me = session.member_key
        self.stats = CallStats()
        self.keys = CallKeys(self.me, max_epoch=max_epoch_from_env())
        self.call_id = ""
        self.state: CallState | None = None
        # The verdicts on the call's signed actions, and who is in the call for us (both
        # sans-I/O: this class does the I/O they decide).
        # (The clock is looked up at each call, so a test may set this module's now_ms.)
        self.ledger = ActionLedger(self._verify, lambda: now_ms())
        self.admission = Admission(self.me, self.ledger, lambda: now_ms())
        # The join this device signed: what a kick or denial of us must name (the server's
        # view of our seat could show an earlier join of ours, whose kick is genuine).
        self.my_join_nonce = b""
        self.my_join: CallAction | None = None  # the join holding our seat (to take it over)
        self.server_reconnects: list[float] = []  # seconds each reconnection took
        self.seated = False
        self.topology: Topology | None = None
        self.feed: _Feed | None = None
        self._current: _Running | None = None
        self._retiring: _Running | None = None
        self.video: MediaStreamTrack | None = None
        self.audio: MediaStreamTrack | None = None
        self.screen: MediaStreamTrack | None = None
        self.recorder: GridRecorder | None = None
        self.ice = IceConfig(relay_only=options.relay_only)
        self.relay = MediaRelay()  # each topology reads our sources through its own proxy
        self.debug = MediaDebugLog.from_env()
        # The call's one sending SFrame context: counters outlive SFU reconnects and switches.
        self._send_frames = (
            self.debug.sending_context() if self.debug else SFrameContext(MEDIA_SUITE)
        )
        self.key_changes: list[KeyChange] = []
        self.speaker: bytes | None = None
        self._tried_head = -1  # the furthest action head we synced for
        # Our own "mic-off"/"camera-off" said for a join of ours (field -> join nonce): once
        # per join, so a later "salon mic on" is not overruled.
        self._said: dict[str, bytes] = {}
        self._saying: set[asyncio.Task[None]] = set()
        self._key_switches = 0  # membership changes whose new key we may still hold back
        self._switching: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._join_started = 0.0
        self._last_refresh = 0.0
        self._topology_noted = ""

    # -- helpers -----------------------------------------------------------------------------

    @property
    def room_id(self) -> str:
        return self.room.room_id

    # (Who is in the call, as :class:`Admission` decided.)
    @property
    def seats(self) -> dict[bytes, CallParticipant]:
        return self.admission.seats

    @property
    def flags(self) -> dict[bytes, SeatFlags]:
        return self.admission.flags

    @property
    def admitted(self) -> dict[bytes, bytes]:
        """Admitted peers -> their join nonce."""
        return self.admission.admitted

    @property
    def me_admitted(self) -> bool:
        return self.admission.me_admitted

    def label(self, member: bytes) -> str:
        if member == self.me:
            return "you"
        name = self.session.profile(member).display_name
        return f"{name} ({fingerprint(member)[:8]})"

    def note(self, text: str) -> None:
        self.display.note(text)

    def valid(self, action: CallAction) -> bool:
        return self.ledger.valid(action)

    @property
    def room_spec(self) -> RoomCreate:
        """The room's signed record as this device verified it (lobby, stage come from here)."""
        room = self.session.verified.rooms.get(self.room_id)
        return room.spec if room is not None else self.room.spec

    def _verify(self, action: CallAction) -> str | None:
        """Why ``action`` does not verify against this device's roster (the ledger's check,
        cached there per signature)."""
        problem = action_problem(
            action,
            roles_of(self.session),
            space_id=self.session.space_id,
            room_id=self.room_id,
            call_id=None if action.action in RESTRICTIONS else self.call_id,
        )
        if problem is None:
            # Signed on a roster head that is not on our chain: a forked history.
            # (_catch_up has synced first if the head was ahead of ours.)
            roster = self.session.verified
            problem = head_problem(
                self.session.hash_at, roster.head_seq, action.head_seq, action.head_hash
            )
        return problem

    async def _catch_up(self, actions: list[CallAction | None]) -> None:
        """Sync once if an action names a roster head beyond ours (the actor saw a record
        we have not fetched yet); if the server still shows none, the action is refused."""
        ahead = max((a.head_seq for a in actions if a is not None), default=-1)
        if ahead > self.session.verified.head_seq and ahead > self._tried_head:
            self._tried_head = ahead
            await self.session.sync()
            self.ledger.forget_checks()
        for action in actions:  # heads older than the roster keeps hashes of
            if action is not None and self.session.hash_at(action.head_seq) is None:
                await self.session.load_hash(action.head_seq)
                self.ledger.recheck(action)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> CallOutcome:
        apply_ice_env()
        quiet_connect_after_close(asyncio.get_running_loop())
        try:
            video, audio = open_sources(
                self.options.video, self.options.audio, self.session.m.display_name
            )
        except MediaError as exc:
            raise MediaUnavailable(str(exc)) from None
        self.video, self.audio = video, audio
        if self.options.screen is not None:
            try:
                self.screen = open_screen_source(self.options.screen, self.session.m.display_name)
            except MediaError as exc:
                for track in (video, audio):
                    if track is not None:
                        track.stop()
                raise MediaUnavailable(str(exc)) from None
        outcome = CallOutcome("interrupted", "the call was interrupted", 1)
        try:
            if self.options.record:
                recorder = GridRecorder(self.options.record)
                try:
                    await recorder.start()
                except MediaError as exc:
                    raise MediaUnavailable(str(exc)) from None
                self.recorder = recorder
            if self.debug is not None:
                self.debug.follow(self.keys)
                self.note(
                    "SALON_MEDIA_DEBUG_DIR is set: media keys and frames are written to "
                    f"{self.debug.dir} (for testing only)"
                )
            refused = await self._join()
            outcome = refused if refused is not None else await self._serve()
        finally:
            self.stats.ended_reason = outcome.reason
            await self._shutdown()
        return outcome

    async def _fetch_ice_servers(self) -> None:
        self.ice.asking()
        was_relay_only = self.ice.relay_only
        self.ice.update(await fetch_ice_servers(self.session.conn))
        if self.ice.relay_only and not was_relay_only:
            self.note("relay calls: this server sends every connection through its TURN server")
        if self.ice.relay_only and not self.ice.has_turn:
            raise CallError(
                "--relay-only needs a TURN server, and this server offers none "
                "(its [ice] turn_urls)",
                1,
            )

    async def _renew_ice_servers(self) -> None:
        """New TURN credentials for connections made from now on; the old ones stay in use
        if the server cannot give new ones (relays in use keep theirs anyway)."""
        try:
            await self._fetch_ice_servers()
        except (ClientError, TimeoutError) as exc:
            self.note(f"could not renew the TURN credentials: {exc}")

    async def _join(self) -> CallOutcome | None:
        conn = self.session.conn
        await self._fetch_ice_servers()
        for _ in range(JOIN_RETRIES):
            info = await conn.request(GetCall(conn.next_id(), self.room_id), CallInfo)
            self.call_id = info.state.call_id
            action = sign_action(self.session, self.room_id, self.call_id, "join", self.me)
            self.my_join_nonce = action.nonce
            self.my_join = action
            self._join_started = self.clock()
            try:
                joined = await conn.request(
                    JoinCall(conn.next_id(), self.room_id, action), CallJoined
                )
            except ServerError as exc:
                if exc.code == ErrorCode.STALE_CALL:
                    continue
                if exc.code in (ErrorCode.BANNED, ErrorCode.LOCKED, ErrorCode.CALL_FULL):
                    return CallOutcome("denied", f"cannot join: {exc}", EXIT_ENDED)
                raise
            self.seated = True
            self.stats.call_id = self.call_id
            self.note(f"joined call {self.call_id} in {self.room.name!r}")
            await self._apply_state(joined.state, None)
            return None
        raise CallError("the call keeps restarting; try again", 1)

    async def _serve(self) -> CallOutcome:
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
                handled.append(sig)
        duration = self.options.duration
        deadline = self.clock() + duration if duration is not None else math.inf
        try:
            while True:
                if self._stop.is_set():
                    return CallOutcome("interrupted", "you left the call")
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return CallOutcome("duration", f"the call ended after {duration:g} s")
                events = self.session.conn.events  # a new one after a reconnection
                try:
                    event = await asyncio.wait_for(events.get(), min(REFRESH_SECONDS, remaining))
                except TimeoutError:
                    event = None
                if event is not None:
                    outcome = await self._handle(event)
                    if outcome is not None:
                        return outcome
                self._expire_pending()
                if self.ice.stale():
                    await self._renew_ice_servers()
                await self._check_retiring()
                self._refresh()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    async def _shutdown(self) -> None:
        for task in list(self._switching):
            task.cancel()
        self._refresh(force=True)  # the last picture shows the call as it was
        if self.seated:
            with contextlib.suppress(ClientError, TimeoutError):
                conn = self.session.conn
                await asyncio.wait_for(
                    conn.request(LeaveCall(conn.next_id(), self.room_id), Done), LEAVE_TIMEOUT
                )
        self._finish_stats()
        for running in (self._retiring, self._current):
            if running is not None:
                await self._close_running(running)
        for track in (self.video, self.audio, self.screen):
            if track is not None:
                track.stop()
        if self.recorder is not None:
            try:
                await self.recorder.stop()
            except MediaError as exc:
                self.note(f"recording failed: {exc}")

    # -- events ------------------------------------------------------------------------------

    async def _handle(self, event: ServerMessage) -> CallOutcome | None:
        if isinstance(event, CallUpdate):
            state = event.state
            if state.room_id == self.room_id and state.call_id == self.call_id:
                await self._apply_state(state, event.action)
                if self.keys.exhausted:
                    return CallOutcome(
                        "key-ids-exhausted",
                        "this call changed keys too often for its key ids; join it again",
                        1,
                    )
                return self._removed_anyway()
            elif event.action is not None and state.room_id == self.room_id:
                self.ledger.learn(event.action)
        elif isinstance(event, CallSignal):
            if event.room_id == self.room_id and event.call_id == self.call_id:
                await self._on_signal(event)
        elif isinstance(event, CallEnded):
            if event.room_id == self.room_id and event.call_id == self.call_id:
                await self._catch_up([event.action])
                return self._ended(event)
        elif isinstance(event, CallSpeaker):
            if event.room_id == self.room_id and event.call_id == self.call_id:
                self._on_speaker(event.member or None)
        elif isinstance(event, SfuReconnect):
            ours = event.room_id == self.room_id and event.call_id == self.call_id
            if ours and isinstance(self.topology, SfuTopology):
                self.note(f"reconnecting to the SFU: {event.reason}")
                await self.topology.reconnect(event.reason)
        elif isinstance(event, RecordAdded):
            await self._resync()
        elif isinstance(event, SessionClosed):
            if event.reason in ("disconnected", "shutdown") and self.seated:
                return await self._reconnect(event.reason)
            self.seated = False
            if event.reason in ("removed", "banned"):
                return CallOutcome("removed", "you were removed from the space", EXIT_ENDED)
            return CallOutcome(
                "interrupted", f"lost the connection to the server ({event.reason})", 3
            )
        return None

    async def _reconnect(self, why: str) -> CallOutcome | None:
        """The server connection went (an instance restarted or died): connect again,
        through the same address, and take our seat over with the join that holds it — the
        same seat, sender index and keys, so nobody in the call sees us leave, and the
        media connections, which never went through the server, keep flowing meanwhile."""
        started = self.clock()
        self.note(f"lost the connection to the server ({why}); reconnecting, media keeps flowing")
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        while True:
            if self._stop.is_set():
                self.seated = False
                return CallOutcome("interrupted", "you left the call")
            try:
                await self.session.reconnect()
                break
            except (ClientError, OSError, TimeoutError) as exc:
                if self.clock() - started > RECONNECT_GIVE_UP:
                    self.seated = False
                    return CallOutcome(
                        "interrupted", f"lost the connection to the server ({why}): {exc}", 3
                    )
                log.debug("reconnecting failed: %s", exc)
                await backoff.wait()
        conn = self.session.conn
        assert self.my_join is not None
        try:
            joined = await conn.request(
                JoinCall(conn.next_id(), self.room_id, self.my_join), CallJoined
            )
        except ServerError as exc:
            self.seated = False
            return CallOutcome(
                "interrupted", f"reconnected, but the server did not give our seat back: {exc}", 3
            )
        took = self.clock() - started
        self.server_reconnects.append(took)
        self.note(f"reconnected to the server after {took:.1f} s; still in the call")
        await self._apply_state(joined.state, None)
        return None

    async def _resync(self) -> None:
        await self.session.sync()
        self.ledger.forget_checks()  # roles may have changed
        if self.state is not None:
            await self._apply_state(self.state, None)

    def _ended(self, event: CallEnded) -> CallOutcome:
        self.seated = False
        action, reason = event.action, event.reason
        problem = end_problem(reason, action, self.me, self.my_join_nonce)
        if not problem and action is not None:
            invalid = self.ledger.event_problem(action)
            problem = (
                f"with a signed {action.action!r} that is invalid: {invalid}" if invalid else ""
            )
        if reason == "replaced" and not problem:
            return CallOutcome(
                "interrupted",
                "the server says you joined this call from another session (it needs no "
                "signed action for that)",
                1,
            )
        if problem or action is None:
            self.stats.rejected_actions += 1
            return CallOutcome(
                "interrupted",
                f"the server dropped you from the call (it says {reason!r}) {problem}; "
                "nothing a host signed shows that",
                1,
            )
        who = self.label(action.actor)
        if event.reason == "removed":
            return CallOutcome("removed", f"{who} removed you from the call", EXIT_ENDED)
        if event.reason == "banned":
            return CallOutcome("removed", f"{who} banned you from this call", EXIT_ENDED)
        if event.reason == "denied":
            return CallOutcome("denied", f"{who} denied your request to join", EXIT_ENDED)
        return CallOutcome("ended", f"{who} ended the call for everyone")

    def _removed_anyway(self) -> CallOutcome | None:
        """A host removed, banned or turned us away with a signed action the server told us
        about but did not carry out: we go, as the host meant."""
        barring = self.admission.barring_us(self.my_join_nonce)
        if barring is None:
            return None  # (still seated: leaving tells the server we went)
        who = self.label(barring.actor)
        kept = "; the server kept you in the call, so you left it"
        if barring.action == "deny":
            return CallOutcome("denied", f"{who} denied your request to join{kept}", EXIT_ENDED)
        did = "banned you from this call" if barring.action == "ban" else "removed you"
        if barring.action == "kick":
            did += " from the call"
        return CallOutcome("removed", f"{who} {did}{kept}", EXIT_ENDED)

    # -- state -------------------------------------------------------------------------------

    async def _apply_state(self, state: CallState, action: CallAction | None) -> None:
        roster = self.session.verified
        if any(p.member not in roster.members for p in state.participants):
            await self.session.sync()  # someone joined the space since we last looked
            self.ledger.forget_checks()
        await self._catch_up([action, state.lock, *state.bans, *_seat_actions(state)])
        self.state = state
        roles = roles_of(self.session)
        view = CallView(state, self.call_id, roles, self.room_spec, action)
        delta = self.admission.step(view)  # what to do; below, doing it
        if action is not None:
            self._note_action(action, delta.event_problem)
        if delta.where == "absent":
            return
        self.stats.topology = state.topology
        if delta.where == "lobby":
            if delta.waiting:
                self.note("waiting in the lobby until a host admits you (no media, no keys yet)")
            return
        self._note_lobby(delta)
        await self._ensure_topology(state)
        assert self.topology is not None
        for member, barring in delta.barred:
            did = {"kick": "removed", "deny": "turned away", "ban": "banned"}[barring.action]
            self.note(
                f"the server still lists {self.label(member)}, whom "
                f"{self.label(barring.actor)} {did} (signed): ignoring them, no keys for them"
            )
        for member, why in delta.unverified:
            self.note(
                f"the server lists {self.label(member)} in the call, but their join or "
                f"admission does not verify{f' ({why})' if why else ''}: not connecting "
                "to them, no keys for them"
            )
        joined, left, first = delta.joined, delta.left, delta.first
        if first:
            self.stats.admitted = True
            self.keys.baseline(state.version)
        else:
            # Someone who joined again is in both lists: their old incarnation left (rekey).
            before = self.keys.own.epoch
            sfu = self.topology if isinstance(self.topology, SfuTopology) else None
            if sfu is not None and (joined or left):
                # Our next key goes out before we send under it (§15.5): see below.
                sfu.defer_send_key("leave" if left else "join")
            self.keys.membership(state.version, joined, left)
            if self.keys.exhausted:  # no key id left for a new key: never alias one
                self.topology.set_sending(video=False, audio=False)
                return
            if self.keys.own.epoch != before:
                kind = "leave" if left else "join"
                change = KeyChange(state.version, kind, self.keys.own.epoch, time.time())
                self.key_changes.append(change)
        recipients = self.admission.admit(delta)
        for member in delta.gone:
            self.note(f"{self.label(member)} left")
        for member in joined:
            self._peer_stats(member)
            self.note(f"{self.label(member)} is in the call")
        await self._set_live_peers()
        retiring = self._retiring
        if retiring is not None:  # the old topology keeps its remaining peers, gains none
            retiring.peers &= set(self.admission.live)
            await retiring.topology.set_peers({m: self._peer(m) for m in retiring.peers})
        # Concurrently: a rekey is done when the last participant has our new key.
        sending = asyncio.gather(*(self._send_key(self._peer(member)) for member in recipients))
        if first or not (joined or left) or not isinstance(self.topology, SfuTopology):
            await sending
        else:  # in the background: keys others send us meanwhile are not kept waiting
            self._key_switches += 1
            latest = self.key_changes[-1] if self.key_changes else None
            switch = self._switch_send_key(self.topology, sending, self._key_switches, latest)
            task = asyncio.create_task(switch)
            self._switching.add(task)
            task.add_done_callback(self._switching.discard)
        self._apply_own_flags()
        for member, stats in self.stats.peers.items():
            flags = self.flags.get(member)
            if flags is not None:
                stats.muted, stats.hand_raised = flags.muted, flags.hand_raised
                stats.mic_off, stats.camera_off = flags.mic_off, flags.camera_off
                stats.role = "host" if flags.host else "speaker" if flags.speaker else "listener"
        self._update_code()
        await self._retry_pending()
        self.admission.settled()
        self._refresh(force=True)

    async def _switch_send_key(
        self,
        sfu: SfuTopology,
        sending: asyncio.Future[list[None]],
        generation: int,
        change: KeyChange | None,
    ) -> None:
        """Send under our new key once the server has taken it for every recipient, or after
        KEY_SWITCH_SECONDS (§15.5): a receiver then holds it (or is about to) when the
        first frame under it comes, however slowly this side or the relay runs. A later
        change's switch supersedes this one (it releases our newest key when it is due)."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sending), KEY_SWITCH_SECONDS)
        finally:  # never left deferred, whatever happened
            if generation == self._key_switches:
                sfu.release_send_key()
                if change is not None and change.sending_at is None:
                    change.sending_at = time.time()
        try:
            await sending  # still ours to finish (a relay slower than the bound)
        except ClientError as exc:  # the connection went: the next state says what now
            log.debug("a media key was not relayed: %s", exc)

    async def _set_live_peers(self) -> None:
        assert self.topology is not None
        live = self.admission.live
        await self.topology.set_peers({m: self._peer(m) for m in live})
        if self._current is not None:
            self._current.peers = set(live)

    async def _now_live(self, member: bytes) -> None:
        """``member``, in the call when we were let in, sent us a signal naming our join:
        they are in the call now, so connect to them and give them our key."""
        self.admission.now_live(member)
        await self._set_live_peers()
        await self._send_key(self._peer(member))

    async def _ensure_topology(self, state: CallState) -> None:
        if self.topology is not None and self.topology.name == state.topology:
            return
        factory = TOPOLOGIES.get(state.topology)
        if factory is None:
            raise CallError(f"this client cannot take part in a {state.topology} call yet", 1)
        old = self._current
        if self._retiring is not None:  # a switch within a switch: the oldest goes now
            await self._close_running(self._retiring)
            self._retiring = None
        feed = _Feed(self)
        tracks = [self.relay.subscribe(t, buffered=False) for t in (self.video, self.audio) if t]
        video = next((t for t in tracks if t.kind == "video"), None)
        audio = next((t for t in tracks if t.kind == "audio"), None)
        screen = None
        if self.screen is not None:
            screen = self.relay.subscribe(self.screen, buffered=False)
            tracks.append(screen)
        context = TopologyContext(
            self.me,
            self.keys,
            feed,
            self,
            video,
            audio,
            sfu=self,
            ice=self.ice,
            screen=screen,
            awaited=self.admission.awaited,
        )
        topology = factory(context)
        feed.topology = topology
        self._current = _Running(topology, feed, tracks, set())
        self.topology, self.feed = topology, feed
        if old is not None:  # make before break: the old one runs until the new delivers
            old.retire_by = self.clock() + RETIRE_SECONDS
            self._retiring = old
        self.stats.topology = topology.name
        self.stats.e2ee = topology.e2ee
        self.stats.topologies.append(topology.name)
        note = self._topology_note(state)
        moved = f"moved from {old.topology.name} to " if old is not None else ""
        self.note(
            f"topology {moved}{topology.name}{f' ({note})' if note else ''}; "
            f"encryption: {topology.encryption}"
        )

    async def _check_retiring(self) -> None:
        """Close the old topology once the new one delivers everyone it delivered."""
        retiring, current = self._retiring, self._current
        if retiring is None or current is None:
            return
        waiting = (retiring.feed.delivered & set(self.admitted)) - current.feed.delivered
        if waiting and self.clock() < retiring.retire_by:
            return
        self._retiring = None
        await self._close_running(retiring)

    async def _close_running(self, running: _Running) -> None:
        self._topology_stats(running)
        await running.topology.close()
        for track in running.tracks:
            track.stop()

    def _finish_stats(self) -> None:
        for running in (self._retiring, self._current):
            if running is not None:
                self._topology_stats(running)
        self.stats.key_changes = [change.to_json() for change in self.key_changes]
        self.stats.server_reconnects = list(self.server_reconnects)

    def _topology_stats(self, running: _Running) -> None:
        topology = running.topology
        if isinstance(topology, SfuTopology):
            self.stats.sfu = topology.stats()
        elif isinstance(topology, MeshTopology):
            for member, sent in topology.video_send().items():
                if member in self.stats.peers:
                    self.stats.peers[member].video_send = sent

    def _topology_note(self, state: CallState) -> str:
        notes = []
        stage = self.room_spec.stage
        if (state.requested_topology == "sfu" or stage) and state.topology == "mesh":
            notes.append("the room asks for an SFU; this server has none, so it runs as a mesh")
        elif state.requested_topology == "auto" and state.topology == "mesh":
            notes.append("auto: a mesh while the call is small")
        elif state.requested_topology == "auto":
            notes.append("auto: on the SFU while the call is large")
        if stage:
            notes.append("stage: only speakers send")
        return "; ".join(notes)

    # -- the SFU channel (client.call.topology.SfuChannel) ----------------------------------------

    @property
    def my_index(self) -> int:
        return self.seats[self.me].index

    @property
    def send_frames(self) -> SFrameContext:
        return self._send_frames

    async def sfu_offer(self, sdp: str) -> str:
        conn = self.session.conn
        offer = SfuOffer(conn.next_id(), self.room_id, self.call_id, sdp)
        answer = await asyncio.wait_for(conn.request(offer, SfuAnswer), SFU_OFFER_TIMEOUT)
        return answer.sdp

    def _on_speaker(self, member: bytes | None) -> None:
        self.speaker = member if member in self.admitted else None

    def _peer(self, member: bytes) -> Peer:
        seat = self.seats[member]
        # Our join as this device signed it, not as the server shows it: a signal for an
        # earlier join of ours must never match.
        mine = self.my_join_nonce
        offerer = self.me < member
        link = link_id(mine, seat.join.nonce) if offerer else link_id(seat.join.nonce, mine)
        return Peer(member, seat.index, link, offerer, self.label(member))

    def _peer_stats(self, member: bytes) -> PeerStats:
        stats = self.stats.peers.get(member)
        if stats is None:
            name = self.session.profile(member).display_name
            stats = PeerStats(member, name, fingerprint(member))
            self.stats.peers[member] = stats
        return stats

    def _apply_own_flags(self) -> None:
        flags = self.flags.get(self.me)
        if flags is None or self.topology is None:
            return
        was_muted, was_role = self.stats.muted, self.stats.role
        role = "host" if flags.host else "speaker" if flags.speaker else "listener"
        self.stats.muted, self.stats.hand_raised, self.stats.role = (
            flags.muted,
            flags.hand_raised,
            role,
        )
        was_off = self.stats.mic_off, self.stats.camera_off
        self.stats.mic_off, self.stats.camera_off = flags.mic_off, flags.camera_off
        if was_off != (flags.mic_off, flags.camera_off) and self.me_admitted:
            mic = "off" if flags.mic_off else "on"
            camera = "off" if flags.camera_off else "on"
            self.note(f"your microphone is {mic}, your camera {camera} (others see this)")
        self._say_self_state(flags)
        if flags.muted and not was_muted:
            by = self.label(flags.muted_by) if flags.muted_by else "a host"
            self.note(f"{by} muted you: your audio is no longer sent")
        if was_role != role and self.me_admitted and (role == "listener" or was_role == "listener"):
            self.note(f"you are a {role} now" + (": your media is sent" if flags.speaker else ""))
        # A host's mute and our own "mic-off" each stop our audio; only a host lifts theirs.
        video = flags.speaker and not flags.camera_off
        audio = flags.speaker and not flags.muted and not flags.mic_off
        self.topology.set_sending(video=video, audio=audio)
        if self._retiring is not None:
            self._retiring.topology.set_sending(video=video, audio=audio)

    def _say_self_state(self, flags: SeatFlags) -> None:
        """Joined without a microphone (``--muted``, ``--audio none``) or a camera (``--video
        none``): tell the others, with our signed "mic-off"/"camera-off", once per join."""
        seat = self.seats.get(self.me)
        if seat is None or seat.status != "joined" or seat.join.nonce != self.my_join_nonce:
            return
        wanted: list[ActionName] = []
        if (self.options.muted or self.options.audio == "none") and not flags.mic_off:
            wanted.append("mic-off")
        if self.options.video == "none" and not flags.camera_off:
            wanted.append("camera-off")
        for name in wanted:
            field = name.split("-")[0]
            if self._said.get(field) == self.my_join_nonce:
                continue
            self._said[field] = self.my_join_nonce
            task = asyncio.create_task(self._say(name))
            self._saying.add(task)
            task.add_done_callback(self._saying.discard)

    async def _say(self, name: ActionName) -> None:
        action = sign_action(self.session, self.room_id, self.call_id, name, self.me)
        conn = self.session.conn
        try:
            await conn.request(ActInCall(conn.next_id(), self.room_id, action), Done)
        except ClientError as exc:
            self.note(f"could not tell the others your {name.split('-')[0]} is off: {exc}")

    def _note_lobby(self, delta: AdmissionDelta) -> None:
        """(Hosts) tell of each lobby seat once: a knock to admit, or why it is none."""
        for member, problem in delta.knocks:
            if problem is not None:
                self.note(
                    f"the server shows {self.label(member)} in the lobby, but not as a "
                    f"knock you may admit: {problem}"
                )
                continue
            space = self.session.m.name or self.session.space_id
            self.note(
                f"{self.label(member)} is waiting in the lobby; admit with: salon mod "
                f"'{space}' '{self.room.name}' admit {fingerprint(member)[:8]}"
            )

    def _note_action(self, action: CallAction, problem: str | None) -> None:
        """Tell of an event the ledger judged (``problem``: why it is ignored)."""
        if problem is not None:
            self.stats.rejected_actions += 1
            self.note(f"ignored an unverifiable {action.action!r} event: {problem}")
            return
        who, name = self.label(action.actor), action.action
        target = self.label(action.target) if action.target else ""
        texts = {
            "hand-up": f"{who} raised a hand",
            "hand-down": f"{who} lowered their hand",
            "mic-off": f"{who} turned their microphone off",
            "mic-on": f"{who} turned their microphone on",
            "camera-off": f"{who} turned their camera off",
            "camera-on": f"{who} turned their camera on",
            "lower-hand": f"{who} lowered "
            + ("your hand" if action.target == self.me else f"{target}'s hand"),
            "mute": f"{who} muted {target}",
            "mute-all": f"{who} muted everyone",
            "admit": f"{who} admitted {target}",
            "deny": f"{who} turned {target} away",
            "kick": f"{who} removed {target} from the call",
            "ban": f"{who} banned {target} from this call",
            "unban": f"{who} lifted the ban on {target}",
            "lock": f"{who} locked the call",
            "unlock": f"{who} unlocked the call",
            "promote": f"{who} made {target} a speaker",
            "demote": f"{who} made {target} a listener",
        }
        if name == "mute" and action.target == self.me:
            return  # _apply_own_flags says it, with what it means
        if name == "unmute":
            if action.target == self.me:
                self.note(f"{who} asks you to unmute: your microphone is on again")
            else:
                self.note(f"{who} asked {target} to unmute")
        elif name in texts:
            self.note(texts[name])

    # -- keys and the verification code ------------------------------------------------------

    async def _send_key(self, peer: Peer) -> None:
        payload = msgspec.msgpack.encode(self.keys.message())
        await self.send(peer, "media-key", payload, 0)

    def _update_code(self) -> None:
        if not self.me_admitted or not self.admitted:
            return  # alone in the call there is nobody to compare a code with
        code = self.keys.code(self.admitted)
        if code is not None:
            now = time.time()
            for change in self.key_changes:
                if change.keys_at is None:
                    change.keys_at = now
        if code is not None and self.stats.add_code(code):
            people = len(self.admitted) + 1
            self.note(f"verification code {code} ({people} in the call; compare it out of band)")

    # -- signalling --------------------------------------------------------------------------

    async def send(self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int) -> None:
        """Seal, sign and relay a signal (the topology's :class:`Signaller`)."""
        box_key = self.session.verified.box_keys.get(peer.member)
        if box_key is None:
            return
        body = SignalBody(
            space_id=self.session.space_id,
            room_id=self.room_id,
            call_id=self.call_id,
            sender=self.me,
            recipient=peer.member,
            kind=kind,
            link=peer.link,
            attempt=attempt,
            payload=payload,
        )
        m = self.session.m
        box = seal_signal_box(m.signing_seed, m.box_secret, box_key, body)
        conn = self.session.conn
        try:
            await conn.request(
                SendCallSignal(conn.next_id(), self.room_id, self.call_id, peer.member, box), Done
            )
        except ClientError as exc:  # they left, or the server went: the next state says
            log.debug("signal not relayed: %s", exc)

    async def _on_signal(self, event: CallSignal) -> None:
        sender = event.sender
        if self.admission.holds(sender):  # until their seat verifies for us (capped)
            self.admission.pending.hold(event, self.clock())
            return
        box_key = self.session.verified.box_keys.get(sender)
        context = SignalContext(self.session.space_id, self.room_id, self.call_id, self.me)
        try:
            if box_key is None:
                raise SignalRejected("its sender is not a member of the space")
            body = open_signal_box(self.session.m.box_secret, box_key, sender, event.box, context)
        except SignalRejected as exc:
            await self._refuse(sender, str(exc))
            return
        peer = self._peer(sender)
        if body.link != peer.link:
            if body.kind == "media-key":  # an offer may just be for an earlier connection
                self.stats.rejected_signals += 1
                self.note(
                    f"ignored a media key from {self.label(sender)}: it is for another join "
                    "of theirs or ours (a replay)"
                )
            return
        if self.admission.proves_live(sender):
            await self._now_live(sender)  # it names our join: they are here now
        if body.kind == "media-key":
            try:
                message = msgspec.msgpack.decode(body.payload, type=MediaKeyMessage)
            except msgspec.DecodeError:
                await self._refuse(sender, "its media key is malformed")
                return
            if self.keys.receive(sender, message):
                self._update_code()
            return
        assert self.topology is not None
        topology = self.topology
        if topology.name != "mesh" and self._retiring is not None:
            topology = self._retiring.topology  # the mesh being replaced may still restart
        await topology.on_signal(peer, body.kind, body.payload, body.attempt)

    async def _refuse(self, sender: bytes, reason: str) -> None:
        self.stats.rejected_signals += 1
        self.note(
            f"refused signalling from {self.label(sender)}: {reason}; "
            "not connecting to them (no insecure fallback)"
        )
        if sender in self.stats.peers:
            self.stats.peers[sender].connection = "refused"
            self.stats.peers[sender].connection_detail = reason
        if self.topology is not None:
            await self.topology.refuse(sender, reason)
        if self._retiring is not None:
            await self._retiring.topology.refuse(sender, reason)

    async def _retry_pending(self) -> None:
        for event in self.admission.pending.release(self.admitted):
            await self._on_signal(event)

    def _expire_pending(self) -> None:
        self.admission.pending.expire(self.clock())

    # -- the media sink ----------------------------------------------------------------------

    def on_video(self, member: bytes, frame: av.VideoFrame) -> None:
        stats, flags = self.stats.peers.get(member), self.flags.get(member)
        if stats is None:
            return
        if flags is None or not flags.speaker or member not in self.admitted:
            stats.video_frames_dropped += 1  # and anyone removed, whatever the server does
            return
        stats.video_frames_decoded += 1
        stats.video_height = frame.height
        stats.video_frame_at(self.clock())
        # The frame is ours alone until recorder.update() below hands it to the recorder's
        # thread; PyAV frames must not be converted from two threads at once.
        if stats.first_video_frame_ms is None:
            stats.first_video_frame_ms = (self.clock() - self._join_started) * 1000
            self.note(
                f"first video from {self.label(member)} "
                f"{stats.first_video_frame_ms:.0f} ms after joining"
            )
        if stats.video_frames_decoded % COLOUR_SAMPLE_EVERY == 1:
            stats.dominant_colour = dominant_colour(frame.to_ndarray(format="bgr24"))
        if self.recorder is not None:
            self.recorder.update(stats.fingerprint, stats.display_name, frame)

    def on_screen(self, member: bytes, frame: av.VideoFrame) -> None:
        stats, flags = self.stats.peers.get(member), self.flags.get(member)
        if stats is None:
            return
        screen = stats.screen
        screen.frames_received += 1
        if flags is None or not flags.speaker or member not in self.admitted:
            screen.frames_dropped += 1
            return
        screen.frames_decoded += 1
        if screen.frames_decoded == 1:
            self.note(f"{self.label(member)} is sharing a screen")
        if screen.frames_decoded % COLOUR_SAMPLE_EVERY == 1:
            screen.dominant_colour = dominant_colour(frame.to_ndarray(format="bgr24"))
        if self.recorder is not None:
            self.recorder.update(
                f"{stats.fingerprint}/screen", f"{stats.display_name} (screen)", frame
            )

    def on_screen_decrypt_failure(self, member: bytes) -> None:
        screen = self._peer_stats(member).screen
        screen.frames_received += 1
        screen.decrypt_failures += 1

    def on_audio(self, member: bytes, frame: av.AudioFrame) -> None:
        stats, flags = self.stats.peers.get(member), self.flags.get(member)
        if stats is None:
            return
        if flags is None or flags.muted or not flags.speaker or member not in self.admitted:
            stats.audio_frames_dropped += 1  # a muted sender's audio is never played
            return
        stats.audio_frames_decoded += 1
        stats.audio_level_dbfs = _dbfs(frame)
        stats.audio_level_at = self.clock()

    def on_link(self, member: bytes, state: LinkState, detail: str = "") -> None:
        stats = self._peer_stats(member)
        if stats.connection == "refused" or (state == "closed" and stats.connection != "connected"):
            return  # keep why a pair never worked, rather than "closed" when they leave
        stats.connection, stats.connection_detail = state, detail
        if state == "connected":
            assert self.topology is not None
            self.note(f"connected to {self.label(member)}: {self.topology.encryption}")
        elif state in ("failed", "refused"):
            self.note(f"no connection to {self.label(member)}: {detail or state}")

    def on_decrypt_failure(self, member: bytes) -> None:
        self._peer_stats(member).decrypt_failures += 1

    def on_reconnected(self, member: bytes | None, outage: float) -> None:
        """A lost media link is back (same call, same seat, same keys): count and say so."""
        if member is not None:
            self._peer_stats(member).reconnects += 1
        who = "the SFU" if member is None else self.label(member)
        self.note(f"reconnected to {who} after {outage:.1f} s")

    def on_retransmission(self, member: bytes, *, nacked: int = 0, resent: int = 0) -> None:
        stats = self.stats.peers.get(member)
        if stats is not None:
            stats.packets_nacked += nacked
            stats.packets_resent += resent

    def on_send_key(self, epoch: int) -> None:
        now = time.time()
        for change in self.key_changes:
            if change.epoch == epoch and change.sending_at is None:
                change.sending_at = now

    # -- the terminal ------------------------------------------------------------------------

    def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_refresh < REFRESH_SECONDS:
            return
        self._last_refresh = now
        state = self.state
        mine = self.seats.get(self.me)
        picture = CallPicture(room=self.room.name)
        if mine is None:
            picture.status = "not in the call"
        elif mine.status == "lobby":
            picture.status = "waiting in the lobby for a host"
        else:
            picture.status = f"in the call ({len(self.admitted) + 1} participants)"
        if state is not None:
            picture.topology = state.topology
            picture.topology_note = self._topology_note(state)
            picture.locked = is_locked(state, self.valid)
        if self.topology is not None:
            picture.encryption = self.topology.encryption
        picture.code = self.stats.verification_codes[-1] if self.stats.verification_codes else None
        picture.me_muted, picture.me_hand = self.stats.muted, self.stats.hand_raised
        picture.me_mic_off, picture.me_camera_off = self.stats.mic_off, self.stats.camera_off
        picture.me_role = self.stats.role
        for member in self.admitted:
            stats = self._peer_stats(member)
            level = stats.audio_level_dbfs if now - stats.audio_level_at < 1.0 else -math.inf
            picture.rows.append(
                Row(
                    name=stats.display_name,
                    fingerprint=stats.fingerprint[:8],
                    role=stats.role,
                    connection=stats.connection,
                    level_dbfs=level,
                    muted=stats.muted,
                    hand_raised=stats.hand_raised,
                    video_frames=stats.video_frames_decoded,
                    audio_frames=stats.audio_frames_decoded,
                    active_speaker=member == self.speaker,
                    mic_off=stats.mic_off,
                    camera_off=stats.camera_off,
                )
            )
        picture.lobby = [self.label(m) for m in self.admission.lobby()]
        self.display.refresh(picture)


# -- one-shot commands -------------------------------------------------------------------------


async def current_call(session: SpaceSession, room: RoomView) -> CallState:
    conn = session.conn
    return (await conn.request(GetCall(conn.next_id(), room.room_id), CallInfo)).state


async def moderate(
    session: SpaceSession, room: RoomView, action: ActionName, member: str | None
) -> str:
    """Sign and send one host action (``salon mod``); returns what was done, as a line."""
    me = session.member_key
    if not is_host(session.verified.members[me].role):
        raise CallError("only the space's owners and moderators can moderate calls", 1)
    if action in TARGETED and not member:
        raise UsageError(f"'{action}' needs a MEMBER (display name or fingerprint prefix)")
    if action not in TARGETED and member:
        raise UsageError(f"'{action}' takes no MEMBER")
    state = await current_call(session, room)
    if not state.participants and action not in ("ban", "unban", "lock", "unlock"):
        raise CallError(f"nobody is in the call in {room.name!r} right now", 1)
    target = session.resolve_member(member) if member else None
    # Seat actions name the join they are about (the server refuses one for another join).
    seat = next((p for p in state.participants if target and p.member == target.key), None)
    if action in SEAT_ACTIONS and target is not None and seat is None:
        where = "in the lobby" if action in ("admit", "deny") else "in the call"
        raise CallError(f"{target.display_name} is not {where} in {room.name!r} right now", 1)
    if action == "admit" and seat is not None and seat.status == "lobby" and target is not None:
        roles = roles_of(session)

        def valid(join: CallAction) -> bool:
            problem = action_problem(
                join, roles, space_id=session.space_id, room_id=room.room_id, call_id=state.call_id
            )
            roster = session.verified
            return problem is None and (
                head_problem(session.hash_at, roster.head_seq, join.head_seq, join.head_hash)
                is None
            )

        problem = knock_problem(seat, state.call_id, valid, now_ms())
        if problem is not None:
            raise CallError(f"{target.display_name} cannot be admitted: {problem}", 1)
    join_ref = seat.join.nonce if seat is not None and action in SEAT_ACTIONS else b""
    signed = sign_action(
        session, room.room_id, state.call_id, action, target.key if target else b"", join_ref
    )
    conn = session.conn
    try:
        await conn.request(ActInCall(conn.next_id(), room.room_id, signed), Done)
    except ServerError as exc:
        raise CallError(f"the server refused {action!r}: {exc}", 1) from None
    who = f" {target.display_name} ({target.fingerprint})" if target else ""
    return f"{action}{who}: done in {room.name!r}."


async def raise_hand(session: SpaceSession, room: RoomView, up: bool) -> str:
    """``salon hand``: raise or lower your own hand in the call you are in."""
    await say_self_state(session, room, "hand-up" if up else "hand-down")
    return f"hand {'raised' if up else 'lowered'} in {room.name!r}."


async def say_self_state(session: SpaceSession, room: RoomView, name: ActionName) -> None:
    """Sign and send one self-state action (hand, microphone, camera) in the call you are
    in: ``salon hand``, ``salon mic``, ``salon camera``. A running ``salon call`` of yours
    follows its own "mic-off"/"camera-off" (it stops sending that medium)."""
    state = await current_call(session, room)
    if session.member_key not in {p.member for p in state.participants}:
        raise CallError(
            f"you are not in the call in {room.name!r}; join it with 'salon call' first", 1
        )
    signed = sign_action(session, room.room_id, state.call_id, name, session.member_key)
    conn = session.conn
    try:
        await conn.request(ActInCall(conn.next_id(), room.room_id, signed), Done)
    except ServerError as exc:
        raise CallError(f"the server refused: {exc}", 1) from None


__all__ = [
    # (FORGET_MS, KNOCK_MAX_AGE_MS, PENDING_*, knock_problem: re-exported from
    # client.call.admission and client.call.ledger, where they moved.)
    "FORGET_MS",
    "KNOCK_MAX_AGE_MS",
    "PENDING_PER_SENDER",
    "PENDING_SIGNALS_MAX",
    "PENDING_SIGNAL_SECONDS",
    "CallClient",
    "CallError",
    "CallOptions",
    "CallOutcome",
    "MediaUnavailable",
    "knock_problem",
    "moderate",
    "raise_hand",
    "say_self_state",
    "sign_action",
]
