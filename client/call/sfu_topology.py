"""The SFU topology: one connection to the call's SFU node, every frame SFrame-encrypted.

Media goes to the SFU once and comes back from it for everyone else (``client.call.e2ee_media``
does the codec and SFrame work: VP8 and Opus encoded here, SFrame suite 4 —
AES_128_GCM_SHA256_128 — with the codec header bytes in clear, decoded here). The SFU
forwards ciphertext; it never holds a key. The SDP offer goes to the server unsealed
(:class:`~protocol.conference_wire.SfuOffer`): the SFU terminates DTLS, which therefore only
protects the hop; SFrame is what keeps media end to end.

Keys (:class:`MediaKeyRing`) are the call's per-sender keys from
:class:`~client.call.keys.CallKeys`, with SFrame key id ``media_kid(index, epoch)``:

- every membership change moves every sender to a new epoch — a fresh random key when
  someone leaves or is removed (the removed participant never receives it), the previous
  key ratcheted forward when someone joins (the joiner cannot derive earlier keys);
- a sender encrypts under its new key *at once* (nothing sent after a removal is readable
  with a removed participant's keys) and sends a keyframe with it;
- a receiver installs each sender's new key as soon as it has it, keeps the previous one
  for :data:`OVERLAP_SECONDS` (frames already in flight), and briefly holds frames whose
  key is still on its way (``client.call.e2ee_media.HOLD_SECONDS``) instead of dropping them;
- a participant connects its media only once it holds every current sender's key (or
  after :data:`KEY_WAIT_SECONDS`), so its first frames are ones it can read.

The sending SFrame context belongs to the call (``TopologyContext.sfu``), not to one
topology or connection: a (key, counter) pair is never used twice, whatever reconnects or
switches happen.

Reconnection (:class:`client.call.retry.RetryPolicy`): when the SFU connection fails, goes
silent for a few seconds (a network drop: aiortc would only notice after ~30 s), or never
connects, a *fresh* ``RTCPeerConnection`` is offered to the server again (``sfu_offer``;
the node replaces our old connection) with a jittered back-off, for up to 30 s — aiortc has
no ICE restart. The server says the same when our node left (:meth:`SfuTopology.reconnect`).
The call, our seat and every key stay as they were; only the transport is new.

``$SALON_MEDIA_DEBUG_DIR`` (:class:`MediaDebugLog`) writes every media key this client
holds and a sample of the frames it sends to that directory — like ``SSLKEYLOGFILE``, for
checking the encryption from outside (the tests do). Never set it in normal use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av

from client.call.e2ee_media import MEDIA_SUITE, DecryptingReceiver, SfuSession
from client.call.keys import CallKeys, SenderKey
from client.call.retry import QuietDetector, RetryPolicy, TransportState
from client.call.sframe import KeyUsage, SFrameContext, SFrameError
from client.call.signalling import SignalKind
from client.call.topology import (
    LinkState,
    Peer,
    SourceTap,
    TopologyContext,
    register_topology,
    transport_state,
)
from protocol.media_keys import MAX_EPOCH, KeyIdExhausted, kid_epoch, kid_index, media_kid

log = logging.getLogger(__name__)

# A sender's superseded key stays usable this long after a frame under its newer key has
# decrypted here (frames still in flight, or queued behind ours when we lag) ...
OVERLAP_SECONDS = 2.0
# ... and never longer than this after it was superseded (a leave, a fresh key), whether a
# newer frame comes or not: a server withholding the fresh key cannot keep it alive longer.
SUPERSEDED_MAX_SECONDS = 5.0
# Earlier epochs of a sender's ratchet chain (joins since its last fresh key) kept: anyone
# who holds them held them before, and a sender still sending under one (its new key is
# still on its way to a joiner, §15.5) stays readable.
CHAIN_KEPT = 8
KEY_WAIT_SECONDS = 3.0  # connect without someone's key after this long
TICK_SECONDS = 0.1
SUPERVISE_SECONDS = 0.5  # how often the connection's health is looked at
VIDEO_SLOTS = 6  # the most remote videos (and audios) received at once; the SFU picks
AUDIO_SLOTS = 6  # the most recent speakers when there are more
SCREEN_SLOTS = 2  # shared screens received at once (last-N like the cameras)
REPLAY_WINDOW = 1024  # a sender's audio and video share its counter: allow for skew
DEBUG_ENV = "SALON_MEDIA_DEBUG_DIR"
CAPTURE_EVERY = 10  # the debug log keeps every 10th frame sent (and every keyframe)


class MediaKeyRing:
    """Which SFrame keys this participant sends and receives with (sans-I/O).

    Feed it indexes (:meth:`set_index`), keys as CallKeys learns them (:meth:`install`),
    departures (:meth:`forget`) and the time (:meth:`tick`); it keeps ``send`` (the
    call's sending context) and the receiving contexts in step.

    Receiving keys are kept **per publisher**: one SFrame context (with its own replay
    windows) per sender index, holding only key ids that name that index.
    :meth:`context_for` gives the receivers the context of the publisher the SFU says a
    slot carries, so a frame under Bob's key id on Mallory's slot finds no key and never
    moves Bob's replay window (issue 8 point 4). Key ids never wrap
    (``protocol.media_keys``): one id names one key, except that a participant who joins
    again under the same seat starts over at epoch 0 with a fresh key, which then
    replaces its old incarnation's key under that id.
    """

    def __init__(self, me: bytes, send: SFrameContext, clock: Callable[[], float]) -> None:
        self.me = me
        self.send = send
        self.clock = clock
        self.send_kid: int | None = None
        self.members: dict[int, bytes] = {}  # index -> member, kept after they leave
        self.indexes: dict[bytes, int] = {}
        self._recv: dict[int, SFrameContext] = {}  # sender index -> its receiving context
        self._epochs: dict[bytes, dict[int, int]] = {}  # member -> {kid: epoch} installed
        self._latest: dict[bytes, int] = {}  # member -> latest epoch installed
        self._first: dict[int, int] = {}  # sender index -> the first epoch it gave us
        self._in_use: dict[int, int] = {}  # sender index -> newest epoch a frame decrypted in
        self._keys: dict[int, bytes] = {}  # kid -> the base key last installed under it
        self._sent: dict[int, bytes] = {}  # kid -> the base key we sent with under it
        self._retired: set[int] = set()  # kids whose overlap ended (that key never again)
        self._expiry: dict[int, float] = {}  # received kid -> when it goes

    def set_index(self, member: bytes, index: int) -> bool:
        """Learn ``member``'s sender index; False (nothing changed) if the index already
        named someone else in this call.

        The server hands out indexes and never gives one to two participants of a call (a
        participant who comes back gets a new one). A server that moves an index to
        another member would make frames under the first one's key ids (still held here
        during the overlap, or arriving before the new key) show as the second's, so an
        index stays bound to the first member it named.
        """
        named = self.members.get(index)
        if named is not None and named != member:
            return False
        self.members[index] = member
        self.indexes[member] = index
        return True

    def context_for(self, source: int | None) -> SFrameContext | None:
        """The receiving context of the publisher with sender index ``source`` (the CSRC
        the SFU put on a slot's packets); None for nobody we receive from."""
        if source is None:
            return None
        member = self.members.get(source)
        if member is None or member == self.me:
            return None
        # A known sender whose first key is still on its way gets an empty context: its
        # frames then wait for the key (UnknownKeyError, held) instead of failing.
        return self._context(source)

    def _context(self, index: int) -> SFrameContext:
        ctx = self._recv.get(index)
        if ctx is None:
            ctx = self._recv[index] = SFrameContext(MEDIA_SUITE, replay_window=REPLAY_WINDOW)
        return ctx

    @property
    def recv_kids(self) -> list[int]:
        """Every key id we can decrypt now, over all publishers."""
        return [kid for ctx in self._recv.values() for kid in ctx.kids()]

    def install(self, member: bytes, key: SenderKey, current: bool = True) -> bool:
        """Use ``key`` for ``member`` (ourselves: send with it from now on). True if new.

        A key that is not ``current`` (a sender's previous one) only decrypts, for the
        overlap; it never retires a newer one. An epoch without a key id of its own
        (past ``MAX_EPOCH``) is never installed; for our own key that raises
        :class:`KeyIdExhausted` (the call must end rather than alias a key id).
        """
        index = self.indexes.get(member)
        if index is None:
            return False
        now = self.clock()
        if member == self.me:
            kid = media_kid(index, key.epoch)  # raises KeyIdExhausted past MAX_EPOCH
            if kid == self.send_kid:
                return False
            if self._sent.get(kid, key.key) != key.key:
                raise KeyIdExhausted(f"key id {kid} already named another of our keys")
            # Sending keys are never removed from the call's context: re-adding one would
            # restart its counter, and a (key, counter) pair must never be used twice.
            if kid not in self.send:
                self.send.add_key(kid, key.key, usage=KeyUsage.ENCRYPT)
            self._sent[kid] = key.key
            self.send_kid = kid
            return True
        try:
            kid = media_kid(index, key.epoch)
        except KeyIdExhausted:
            log.warning("a key of sender %d at epoch %d has no key id: ignored", index, key.epoch)
            return False
        ctx = self._context(index)
        same = self._keys.get(kid) == key.key
        if same and (kid in ctx or kid in self._retired):
            return False  # held already, or its overlap is over (no fresh replay window)
        if kid in ctx:  # the member joined again under its seat: a fresh epoch-0 key
            ctx.remove_key(kid)
        self._retired.discard(kid)
        ctx.add_key(kid, key.key, usage=KeyUsage.DECRYPT)
        held = self._epochs.setdefault(member, {})
        held[kid] = key.epoch
        self._first[index] = min(self._first.get(index, key.epoch), key.epoch)
        self._keys[kid] = key.key
        latest = self._latest.get(member)
        if current:
            chain = self._chain(held, key)
            for old in held:
                if old != kid and old not in chain:
                    self._retire_later(old, now)
            for old in sorted(chain)[:-CHAIN_KEPT]:
                self._retire_later(old, now)
            self._expiry.pop(kid, None)
        else:
            self._retire_later(kid, now)
        if latest is None or key.epoch > latest or (current and key.epoch == 0):
            self._latest[member] = key.epoch
        return True

    def supersede(self, member: bytes) -> None:
        """``member``'s keys are superseded (a leave: its fresh key is on its way), its
        ratchet chain with them: they go after the overlap (see :meth:`_retire_later`)."""
        now = self.clock()
        for kid in self._epochs.get(member, {}):
            self._retire_later(kid, now)

    def _chain(self, held: dict[int, int], key: SenderKey) -> set[int]:
        """The held key ids of earlier epochs that ratchet forward to ``key``."""
        chain = set()
        for kid, epoch in held.items():
            steps = key.epoch - epoch
            if not 0 < steps <= CHAIN_KEPT or kid not in self._keys:
                continue
            older = SenderKey(epoch, self._keys[kid])
            for _ in range(steps):
                older = older.ratchet()
            if older.key == key.key:
                chain.add(kid)
        return chain

    def _retire_later(self, kid: int, now: float) -> None:
        """``kid`` is superseded: it goes OVERLAP_SECONDS after a newer epoch of its sender
        decrypts a frame here, and SUPERSEDED_MAX_SECONDS from now at the latest."""
        when = self._expiry.setdefault(kid, now + SUPERSEDED_MAX_SECONDS)
        if self._in_use.get(kid_index(kid), -1) > kid_epoch(kid):
            self._expiry[kid] = min(when, now + OVERLAP_SECONDS)

    def frame_seen(self, kid: int) -> None:
        """A frame under ``kid`` decrypted: its sender's older keys have OVERLAP_SECONDS."""
        index, epoch = kid_index(kid), kid_epoch(kid)
        if epoch <= self._in_use.get(index, -1):
            return
        self._in_use[index] = epoch
        soon = self.clock() + OVERLAP_SECONDS
        for old, when in self._expiry.items():
            if kid_index(old) == index and kid_epoch(old) < epoch and when > soon:
                self._expiry[old] = soon

    def holds(self, member: bytes, key: SenderKey | None) -> bool:
        index = self.indexes.get(member)
        if key is None or index is None or not 0 <= key.epoch <= MAX_EPOCH:
            return False
        return media_kid(index, key.epoch) in self._epochs.get(member, {})

    def forget(self, member: bytes) -> None:
        """``member`` left: its keys go after the overlap (frames still in flight)."""
        now = self.clock()
        for kid in self._epochs.get(member, {}):
            self._expiry.setdefault(kid, now + OVERLAP_SECONDS)
        self._latest.pop(member, None)

    def tick(self) -> None:
        """Drop received keys whose overlap is over."""
        now = self.clock()
        for kid, when in list(self._expiry.items()):
            if when > now:
                continue
            del self._expiry[kid]
            ctx = self._recv.get(kid_index(kid))
            if ctx is not None and kid in ctx:
                ctx.remove_key(kid)
            self._retired.add(kid)
            member = self.members.get(kid_index(kid))
            if member is not None:
                self._epochs.get(member, {}).pop(kid, None)

    def member_of(self, kid: int | None) -> bytes | None:
        return None if kid is None else self.members.get(kid_index(kid))

    def predates(self, kid: int) -> bool:
        """Is ``kid`` an epoch of its sender's from before the first key it gave us? Its
        frames were never ours to read (sent before we joined, or in flight as we did)."""
        first = self._first.get(kid_index(kid))
        return first is not None and kid_epoch(kid) < first

    def may_arrive(self, kid: int) -> bool:
        """Could the key for ``kid`` still come (a current sender's next epoch)? Frames
        under it are worth holding; anything else is undecryptable for good."""
        member = self.member_of(kid)
        if member is None or member == self.me:
            return False
        latest = self._latest.get(member)
        if member not in self._latest and member not in self._epochs:
            return True  # a current sender whose first key has not arrived yet
        return latest is not None and kid_epoch(kid) > latest


class MediaDebugLog:
    """``$SALON_MEDIA_DEBUG_DIR``: keys held and frames sent, as JSON lines (testing only)."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys = open(self.dir / "keys.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._frames = open(self.dir / "frames.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._sent = 0

    @classmethod
    def from_env(cls) -> MediaDebugLog | None:
        directory = os.environ.get(DEBUG_ENV, "").strip()
        return cls(directory) if directory else None

    def _write(self, out: Any, record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    def key(self, member: bytes, key: SenderKey, mine: bool) -> None:
        self._write(
            self._keys,
            {
                "t": time.time(),
                "member": member.hex(),
                "mine": mine,
                "epoch": key.epoch,
                "key": key.key.hex(),
            },
        )

    def follow(self, keys: CallKeys) -> None:
        """Log every key ``keys`` holds, now and whenever it learns one."""
        self.key(keys.me, keys.own, True)

        def changed(member: bytes) -> None:
            key = keys.current(member)
            if key is not None:
                self.key(member, key, member == keys.me)

        keys.listeners.append(changed)

    def sending_context(self) -> SFrameContext:
        """A sending context that also logs a sample of what it encrypts."""
        log_frame = self._frame

        class Capturing(SFrameContext):
            def encrypt(self, kid: int, metadata: bytes, plaintext: bytes) -> bytes:
                out = super().encrypt(kid, metadata, plaintext)
                log_frame(kid, metadata, out, keyframe=len(metadata) == 10)
                return out

        return Capturing(MEDIA_SUITE)

    def _frame(self, kid: int, metadata: bytes, data: bytes, keyframe: bool) -> None:
        self._sent += 1
        if keyframe or self._sent % CAPTURE_EVERY == 0:
            record = {"t": time.time(), "kid": kid, "metadata": metadata.hex(), "data": data.hex()}
            self._write(self._frames, record)


@dataclass
class SfuCounters:
    """What this topology adds to ``--stats`` (under ``"sfu"``)."""

    connects: int = 0
    reconnects: int = 0  # connections attempted after the first
    reconnected: int = 0  # lost connections made again (client.call.retry)
    last_outage_ms: float | None = None  # how long the last one was down
    unattributed_decrypt_failures: int = 0
    departed_frames_dropped: int = 0
    send_key_switches: int = 0
    connected_ms: float | None = None  # from this topology's start to the SFU link up

    def to_json(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "reconnected": self.reconnected,
            "last_outage_ms": None if self.last_outage_ms is None else round(self.last_outage_ms),
            "unattributed_decrypt_failures": self.unattributed_decrypt_failures,
            "departed_frames_dropped": self.departed_frames_dropped,
            "send_key_switches": self.send_key_switches,
            "connected_ms": None if self.connected_ms is None else round(self.connected_ms, 1),
        }


class SfuTopology:
    """Implements :class:`client.call.topology.Topology` through the call's SFU node."""

    name: Literal["mesh", "sfu"] = "sfu"
    e2ee = True
    encryption = (
        "end-to-end (SFrame AES-128-GCM, a key per sender, rekeyed on every leave; "
        "the SFU forwards what it cannot read)"
    )

    def __init__(self, ctx: TopologyContext, clock: Callable[[], float] = time.monotonic) -> None:
        if ctx.sfu is None:
            raise ValueError("the SFU topology needs the call's SFU channel")
        self.ctx = ctx
        self.sfu = ctx.sfu
        self.clock = clock
        self.ring = MediaKeyRing(ctx.me, ctx.sfu.send_frames, clock)
        self.counters = SfuCounters()
        self.peers: dict[bytes, Peer] = {}
        self.refused: set[bytes] = set()
        self.session: SfuSession | None = None
        self.state: LinkState = "waiting"
        self.sending_video = False
        self.sending_audio = False
        self.video = SourceTap(ctx.video) if ctx.video is not None else None
        self.audio = ctx.audio
        self.screen = SourceTap(ctx.screen) if ctx.screen is not None else None
        self._started = clock()
        self._changed = self._started
        self._closed = False
        self._closing_session: SfuSession | None = None
        self._connecting: asyncio.Task[None] | None = None
        # A key change being delivered: our new key waits (see defer_send_key).
        self._deferring: Literal["join", "leave"] | None = None
        self._key_paused = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.policy = RetryPolicy(clock)
        self.ring.set_index(ctx.me, ctx.sfu.my_index)
        self.ring.install(ctx.me, ctx.keys.own)
        ctx.keys.listeners.append(self._on_key)
        self._spawn(self._tick_loop())
        self._spawn(self._supervise())

    # -- keys --------------------------------------------------------------------------------

    def _on_key(self, member: bytes) -> None:
        if self._closed or member in self.refused:
            return
        keys = self.ctx.keys
        if member == self.ctx.me:
            if self._deferring is not None:  # a key change on its way to its recipients
                if self._deferring == "leave" and not self._key_paused:
                    self._key_paused = True  # never the key a leaver holds, nor the next yet
                    self._apply_sending()
                return
            try:
                installed = self.ring.install(member, keys.own)
            except KeyIdExhausted:  # never send under a reused key id (the call ends)
                log.warning("no key id left for our next media key: not sending")
                self.set_sending(video=False, audio=False)
                return
            if not installed:
                return
            self.counters.send_key_switches += 1
            if self.session is not None and self.ring.send_kid is not None:
                self.session.set_send_key(self.ring.send_kid)  # a keyframe follows
            self.ctx.sink.on_send_key(keys.own.epoch)
        elif member in self.peers:
            current = keys.current(member)
            usable = keys.usable(member)
            if not usable:  # it left (and maybe joined again): its keys go after the overlap
                self.ring.forget(member)
            elif current is None:  # a leave made its key stale: its fresh one is on its way
                self.ring.supersede(member)
            added = [self.ring.install(member, k, k == current) for k in usable[::-1]]
            if any(added) and self.session is not None:
                self.session.keys_changed()  # held frames may be readable now

    def defer_send_key(self, kind: Literal["join", "leave"]) -> None:
        """A membership change is about to move our key (§15.5): keep sending under the
        current one (a join: everyone already holding it may still read it), or send
        nothing (a leave: the leaver holds it), until :meth:`release_send_key`."""
        self._deferring = kind

    def release_send_key(self) -> None:
        """Our new key has reached the server for everyone it is for (or we waited long
        enough): send under it from now on."""
        self._deferring = None
        self._on_key(self.ctx.me)
        if self._key_paused:
            self._key_paused = False
            self._apply_sending()

    def _apply_sending(self) -> None:
        if self.session is not None:
            paused = self._key_paused
            self.session.set_sending(
                video=self.sending_video and not paused, audio=self.sending_audio and not paused
            )

    def _ready(self) -> bool:
        """Do we hold every current sender's key (worth connecting now)? A newcomer also
        waits for those in the call before it who have not sealed it their key yet."""
        keys = self.ctx.keys
        if any(m not in self.refused for m in self.ctx.awaited()):
            return False
        return all(
            self.ring.holds(member, keys.current(member))
            for member in self.peers
            if member not in self.refused
        )

    # -- the Topology protocol ---------------------------------------------------------------

    async def set_peers(self, peers: Mapping[bytes, Peer]) -> None:
        for member in list(self.peers):
            if member not in peers:
                del self.peers[member]
                self.ring.forget(member)
                if self.state == "connected":
                    self.ctx.sink.on_link(member, "closed")
        for member, peer in peers.items():
            known = self.peers.get(member)
            self.peers[member] = peer
            if not self.ring.set_index(member, peer.index):
                # A server reusing an index would put one member's frames under another's name.
                if member not in self.refused:
                    reason = f"the server gave them sender index {peer.index}, already another's"
                    await self.refuse(member, reason)
                continue
            if known is None:
                self._on_key(member)
                if self.state == "connected":
                    self.ctx.sink.on_link(member, "connected")
                elif self.state == "failed":
                    self.ctx.sink.on_link(member, "failed", "no connection to the SFU")
        self._changed = self.clock()
        if self.session is None and self._connecting is None and not self._closed:
            self._connecting = self._spawn(self._connect(first=True))

    async def on_signal(self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int) -> None:
        """Peers send no SDP to each other on the SFU (media keys reach us via CallKeys)."""

    async def refuse(self, member: bytes, reason: str) -> None:
        """Their signalling failed verification: never decrypt anything of theirs."""
        self.refused.add(member)
        self.ring.forget(member)
        self.ctx.sink.on_link(member, "refused", reason)

    def set_sending(self, *, video: bool, audio: bool) -> None:
        self.sending_video, self.sending_audio = video, audio
        self._apply_sending()

    async def reconnect(self, reason: str) -> None:
        """The server says our SFU connection is gone (its node left): connect again."""
        if self._closed or self._connecting is not None:
            return
        log.debug("reconnecting to the SFU: %s", reason)
        if self.policy.gave_up:  # a new node to try: watch the connection again
            self.policy = RetryPolicy(self.clock)
            self._spawn(self._supervise())
        self._connecting = self._spawn(self._connect(first=False))

    async def close(self) -> None:
        self._closed = True
        with contextlib.suppress(ValueError):
            self.ctx.keys.listeners.remove(self._on_key)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        await self._drop_session()
        if self.video is not None:
            self.video.stop()  # the source itself is the call's

    def stats(self) -> dict[str, Any]:
        out = self.counters.to_json()
        if self.session is not None:
            session = self.session.stats()
            out["connection_state"] = session["connection_state"]
            out["frames_sent"] = session["frames_sent"]
            out["video_bitrate"] = session["video_bitrate"]
            out["decrypt_failures"] = session["decrypt_failures"]
            reasons: collections.Counter[str] = collections.Counter()
            kids: collections.Counter[str] = collections.Counter()
            for receiver in session["receivers"]:
                reasons.update(receiver["failures_by_reason"])
                kids.update({str(k): n for k, n in receiver["failures_by_kid"].items()})
            out["decrypt_failures_by_reason"] = dict(reasons)
            # Key ids are public (they name a sender index and an epoch): where failures were.
            out["decrypt_failures_by_kid"] = dict(kids)
            out["frames_predating"] = sum(r["frames_predating"] for r in session["receivers"])
            out["frames_skipped_behind"] = sum(r["skipped_behind"] for r in session["receivers"])
            out["frames_held_for_keys"] = sum(r["frames_held"] for r in session["receivers"])
        return out

    # -- the connection ----------------------------------------------------------------------

    async def _connect(self, first: bool) -> None:
        """One attempt at a connection (the first, or a fresh one replacing a lost one);
        :meth:`_supervise` decides whether and when another follows."""
        try:
            if not first:
                self.counters.reconnects += 1
            await self._wait_for_keys()
            if self._closed:
                return
            await self._drop_session()  # a lost or failed one: let it go first
            try:
                await self._open_session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server's refusal, SDP trouble, a dead node
                log.debug("SFU connection failed", exc_info=True)
                await self._drop_session()
                detail = str(exc) or type(exc).__name__
                self._set_state("failed", f"no connection to the SFU: {detail}")
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None

    async def _supervise(self) -> None:
        """Feed the retry policy the connection's health; connect again on its word."""
        quiet = QuietDetector(self.clock)
        watched: SfuSession | None = None
        while not self._closed:
            await asyncio.sleep(SUPERVISE_SECONDS)
            session = self.session
            if session is not watched:
                watched = session
                quiet.reset()
            reconnected = self.policy.reconnects
            state = await self._transport_state(session, quiet)
            self.policy.observe(state, quiet.silent_since if state == "disconnected" else None)
            if self.policy.reconnects > reconnected:
                outage = self.policy.recovered or 0.0
                self.counters.reconnected += 1
                self.counters.last_outage_ms = outage * 1000
                self.ctx.sink.on_reconnected(None, outage)
            decision = self.policy.poll()
            if decision == "give-up":
                limit = self.policy.give_up_after
                self._set_state("failed", f"gave up on the SFU connection after {limit:.0f} s")
                return
            if decision == "retry":
                connecting, self._connecting = self._connecting, None
                if connecting is not None:  # an attempt stuck (its offer or its answer lost)
                    connecting.cancel()
                if self.state == "connected":
                    self._set_state("connecting", "reconnecting to the SFU")
                self._connecting = self._spawn(self._connect(first=False))

    async def _transport_state(
        self, session: SfuSession | None, quiet: QuietDetector
    ) -> TransportState:
        if session is None:
            # Not yet connected (keys on their way) or a failed attempt gone.
            return "connecting" if self._connecting is not None else "failed"
        return await transport_state(session.pc, quiet)

    async def _wait_for_keys(self) -> None:
        while not self._closed:
            now = self.clock()
            if self._ready() or now - self._changed >= KEY_WAIT_SECONDS:
                return
            await asyncio.sleep(TICK_SECONDS / 2)

    async def _open_session(self) -> None:
        ring = self.ring
        publishing = (self.video or self.audio or self.screen) is not None
        session = SfuSession(
            recv_ctx=ring.context_for,  # a slot's frames: only its publisher's keys
            send_ctx=ring.send if publishing else None,
            send_kid=ring.send_kid if publishing else None,
            video=self.video,
            audio=self.audio,
            video_slots=VIDEO_SLOTS,
            audio_slots=AUDIO_SLOTS,
            screen=self.screen,
            screen_slots=SCREEN_SLOTS,
            hold_unknown=ring.may_arrive,  # a sender's new key on its way: wait for it
            predates=ring.predates,  # a sender's key from before our join: not a failure
            kid_source=kid_index,  # a frame's key id must name its slot's publisher
            configuration=self.ctx.ice.configuration(max_bundle=True),
        )
        self.session = session
        self._apply_sending()
        pc = session.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._on_connection_state(session)

        self._set_state("connecting")
        self.counters.connects += 1
        self.policy.attempt_started()
        offer = await session.create_offer()
        self.ctx.ice.check_gathered(offer)
        answer = await self.sfu.sfu_offer(offer)
        if session is not self.session:
            return
        await session.set_answer(answer)
        session.start_receiving(self._on_frame, self._on_decrypt_failure)
        for receiver in session.receivers:
            if receiver.screen:
                receiver.on_decrypt_failure = self._on_screen_decrypt_failure

    def _on_connection_state(self, session: SfuSession) -> None:
        if session is not self.session or self._closed:
            return
        state = session.pc.connectionState
        if state == "connected":
            if self.counters.connected_ms is None:
                self.counters.connected_ms = (self.clock() - self._started) * 1000
            self._set_state("connected")
        elif state in ("failed", "closed"):
            self._set_state("failed", "the SFU connection was lost")  # _supervise retries

    def _set_state(self, state: LinkState, detail: str = "") -> None:
        if self.state == state:
            return
        self.state = state
        for member in self.peers:
            if member not in self.refused:
                self.ctx.sink.on_link(member, state, detail)

    async def _drop_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()

    def _on_frame(self, receiver: DecryptingReceiver, kid: int, frame: Any) -> None:
        self.ring.frame_seen(kid)
        member = self.ring.member_of(kid)
        if member is None or member not in self.peers or member in self.refused:
            return
        if isinstance(frame, av.VideoFrame) and receiver.screen:
            self.ctx.sink.on_screen(member, frame)
        elif isinstance(frame, av.VideoFrame):
            self.ctx.sink.on_video(member, frame)
        elif isinstance(frame, av.AudioFrame):
            self.ctx.sink.on_audio(member, frame)

    def _on_screen_decrypt_failure(self, kid: int | None) -> None:
        self._on_decrypt_failure(kid, screen=True)

    def _on_decrypt_failure(self, kid: int | None, screen: bool = False) -> None:
        member = self.ring.member_of(kid)
        if member is None or member == self.ctx.me:
            self.counters.unattributed_decrypt_failures += 1
        elif member in self.peers and screen:
            self.ctx.sink.on_screen_decrypt_failure(member)
        elif member in self.peers:
            self.ctx.sink.on_decrypt_failure(member)
        else:  # a departed sender's last frames: dropped either way, its keys are gone
            self.counters.departed_frames_dropped += 1

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self.ring.tick()
            except SFrameError:
                log.debug("dropping an expired key failed", exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


register_topology("sfu", SfuTopology)
