"""The mesh topology: one direct aiortc connection per pair of participants.

Media between two participants is protected by DTLS-SRTP end to end: the keys are agreed
by the two machines alone, and each checks the other's DTLS certificate against the
fingerprint in the SDP it received — SDP that came sealed and signed end to end
(:mod:`client.call.signalling`), so the server cannot substitute its own fingerprint. A signal
that fails those checks never reaches this module: the call client calls :meth:`refuse`,
and the pair stays down.

Each pair negotiates once: the participant with the lower member key offers, with an audio, a
video and a screen-share video transceiver in both directions (VP8, Opus; max-bundle), and
the answerer answers. Sending
starts and stops by attaching or detaching the local sources (no renegotiation), so muting
and stage promotion are instant. One local source feeds every pair through a
:class:`~aiortc.contrib.media.MediaRelay`.

Reconnection (:class:`client.call.retry.RetryPolicy`): when a pair fails (ICE or DTLS), goes
silent for a few seconds (nothing received: a network drop), an offer or answer cannot be
used, or an attempt never connects, the offerer makes a *fresh* ``RTCPeerConnection`` and
offers again under a higher ``attempt`` — aiortc has no ICE restart, so this is ours — with
a jittered back-off, for up to 30 s; the answerer answers any higher attempt (replayed
offers are ignored). The call, its seat and its keys are untouched: DTLS-SRTP keys are per
connection anyway. A pair *refused* because its signalling failed verification is never
retried (until either side joins again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Literal

import av
from aiortc import (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from client.call.retry import QuietDetector, RetryPolicy
from client.call.signalling import SignalKind, SignalRejected, check_sdp
from client.call.topology import LinkState, Peer, SourceTap, TopologyContext, transport_state
from rtc import aiortc_adapter

log = logging.getLogger(__name__)


async def add_bundled_candidates(pc: RTCPeerConnection, sdp: str) -> None:
    """Hand aiortc every ICE candidate of a remote description.

    With max-bundle our three transceivers share one ICE transport, and aiortc's
    setRemoteDescription keeps the candidates of only one m-section of the bundle, while a
    browser lists them in the first section only. A direct link survived that by learning
    peer-reflexive candidates from the browser's checks; a relay-only link cannot (the TURN
    server drops the checks until we create a permission for the browser's relay), so it
    never connected. aioice ignores a candidate whose address it already has."""
    seen: set[str] = set()
    for line in sdp.splitlines():
        if not line.startswith("a=candidate:"):
            continue
        value = line[len("a=candidate:") :].strip()
        if value in seen:
            continue
        seen.add(value)
        candidate = candidate_from_sdp(value)
        candidate.sdpMLineIndex = 0  # the bundle's transport
        await pc.addIceCandidate(candidate)


TICK_SECONDS = 0.5  # how often a pair's health is looked at


def _prefer(transceiver: RTCRtpTransceiver, mime: str) -> None:
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    preferred = [c for c in codecs if c.mimeType == mime]
    rtx = [c for c in codecs if c.mimeType.endswith("/rtx")]
    transceiver.setCodecPreferences(preferred + rtx)


class _Link:
    """The connection to one peer, across restarts."""

    def __init__(self, mesh: MeshTopology, peer: Peer) -> None:
        self.mesh = mesh
        self.peer = peer
        self.state: LinkState = "waiting"
        self.attempt = 0  # offerer: our latest offer; answerer: the latest offer answered
        self.policy = RetryPolicy(time.monotonic)
        self.pc: RTCPeerConnection | None = None
        self._audio: RTCRtpTransceiver | None = None
        self._video: RTCRtpTransceiver | None = None
        self._screen: RTCRtpTransceiver | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.remb_bps: int | None = None  # the peer's last estimate for our camera (REMB)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._new_pc()
        if self.peer.offerer:
            self._spawn(self._offer())
        self._spawn(self._supervise())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A failure in one pair's negotiation ends that pair, never the call."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("link to %s failed", self.peer.label, exc_info=True)
            self._set("failed", str(exc) or type(exc).__name__)

    def _new_pc(self) -> None:
        # max-bundle: with aiortc's default (balanced) the second video transceiver (the
        # screen) can stay on a transport that BUNDLE negotiation then stops.
        pc = RTCPeerConnection(self.mesh.ctx.ice.configuration(max_bundle=True))
        self._audio = pc.addTransceiver("audio", direction="sendrecv")
        self._video = pc.addTransceiver("video", direction="sendrecv")
        # Both sides add the same three in this order, so the answer matches them in
        # order: the second video section is each side's screen share.
        screen = self._screen = pc.addTransceiver("video", direction="sendrecv")
        _prefer(self._audio, "audio/opus")
        _prefer(self._video, "video/VP8")
        _prefer(screen, "video/VP8")
        sink, member = self.mesh.ctx.sink, self.peer.member
        for transceiver in (self._video, screen):  # aiortc NACKs and resends video only
            # A frame behind a lost packet waits a moment for its retransmission, NACKed
            # again until it comes, instead of holding every later frame back until aiortc's
            # jitter buffer overflows (seconds at 10 % loss).
            aiortc_adapter.use_marker_release(transceiver.receiver, "video")
            aiortc_adapter.count_nacks_sent(
                transceiver.receiver, lambda n: sink.on_retransmission(member, nacked=n)
            )
            aiortc_adapter.count_retransmits(
                transceiver.sender, lambda: sink.on_retransmission(member, resent=1)
            )
        # aiortc's encoder follows the peer's REMB on its own; keep it for --stats.
        aiortc_adapter.on_remb(self._video.sender, self._on_remb)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._consume(pc, track, track is screen.receiver.track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                self._set("connected")
            elif pc.connectionState == "failed":
                self._set("failed", "the connection failed (ICE or DTLS)")

        self.pc = pc
        self.apply_sending()

    def _on_remb(self, bps: int) -> None:
        self.remb_bps = bps

    def video_send(self) -> dict[str, int | None]:
        """Our camera towards this peer: its last REMB and aiortc's encoder target, kbit/s."""
        target = None
        if self._video is not None:
            target = aiortc_adapter.encoder_target_bitrate(self._video.sender)
        return {
            "estimate_kbps": None if self.remb_bps is None else round(self.remb_bps / 1000),
            "target_kbps": None if target is None else round(target / 1000),
        }

    # -- reconnection ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Feed the retry policy the pair's health; restart (offerer) or give up on its word."""
        quiet = QuietDetector(time.monotonic)
        watched: RTCPeerConnection | None = None
        while self.state not in ("refused", "closed"):
            await asyncio.sleep(TICK_SECONDS)
            pc = self.pc
            if pc is not watched:
                watched = pc
                quiet.reset()
            reconnects = self.policy.reconnects
            state = await transport_state(pc, quiet)
            self.policy.observe(state, quiet.silent_since if state == "disconnected" else None)
            if self.policy.reconnects > reconnects:
                self.mesh.ctx.sink.on_reconnected(self.peer.member, self.policy.recovered or 0.0)
            decision = self.policy.poll()
            if decision == "give-up":
                limit = self.policy.give_up_after
                what = "gave up reconnecting" if self.policy.ever_connected else "no connection"
                self._set("failed", f"{what} after {limit:.0f} s of trying")
                return
            if decision == "retry" and not self.policy.ever_connected and self.policy.retries == 1:
                what = "no answer" if self.peer.offerer else "no verified offer"
                deadline = self.policy.connect_deadline
                self._set("failed", f"{what} within {deadline:.0f} s")
            if decision == "retry" and self.peer.offerer:
                self._set(
                    "connecting", "reconnecting" if self.policy.ever_connected else "retrying"
                )
                await self._close_pc()
                self._new_pc()
                self._spawn(self._offer())

    async def close(self, state: LinkState = "closed", detail: str = "") -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self._close_pc()
        self._set(state, detail)

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is None:
            return
        for transceiver in pc.getTransceivers():
            track = transceiver.sender.track
            if track is not None:
                transceiver.sender.replaceTrack(None)
                track.stop()
        with contextlib.suppress(Exception):
            await pc.close()

    def _set(self, state: LinkState, detail: str = "") -> None:
        if self.state == state or self.state in ("refused", "closed"):
            return
        self.state = state
        self.mesh.ctx.sink.on_link(self.peer.member, state, detail)

    # -- negotiation -------------------------------------------------------------------------

    async def _offer(self) -> None:
        pc = self.pc
        assert pc is not None
        self.attempt += 1
        self.policy.attempt_started()
        await pc.setLocalDescription(await pc.createOffer())
        if pc is not self.pc:
            return
        self.mesh.ctx.ice.check_gathered(pc.localDescription.sdp)
        self._set("connecting")
        sdp = pc.localDescription.sdp.encode()
        await self.mesh.ctx.signaller.send(self.peer, "offer", sdp, self.attempt)

    async def on_signal(self, kind: SignalKind, payload: bytes, attempt: int) -> None:
        if self.state in ("refused", "closed"):
            return
        sdp = payload.decode("utf-8", "replace")
        try:
            check_sdp(sdp)
        except SignalRejected as exc:
            await self.refuse(f"{kind} from {self.peer.label}: {exc}")
            return
        if kind == "offer":
            if self.peer.offerer:
                await self.refuse(f"{self.peer.label} sent an offer where we make the offer")
            elif attempt > self.attempt:  # anything else is a replay of an old offer
                self.attempt = attempt
                if self.policy.gave_up:  # they kept trying longer than we did: watch again
                    self.policy = RetryPolicy(time.monotonic)
                    self._spawn(self._supervise())
                self._spawn(self._answer(sdp, attempt))
        elif kind == "answer":
            pc = self.pc
            if not self.peer.offerer or pc is None:
                await self.refuse(f"{self.peer.label} sent an answer we did not ask for")
            elif attempt == self.attempt and pc.remoteDescription is None:
                self._spawn(self._accept(pc, sdp))

    async def _answer(self, sdp: str, attempt: int) -> None:
        if self.pc is None or self.pc.remoteDescription is not None:
            await self._close_pc()  # the offerer restarted: start over
            self._new_pc()
        pc = self.pc
        assert pc is not None
        self.policy.attempt_started()
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(plain_connection_lines(sdp), "offer")
            )
            await add_bundled_candidates(pc, sdp)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises several types for SDP it cannot use
            # Verified, so theirs: a transport problem, not an attack; the offerer retries.
            self._set("failed", f"unusable offer from {self.peer.label}: {exc}")
            await self._close_pc()
            return
        self.mesh.ctx.ice.check_gathered(pc.localDescription.sdp)
        self._set("connecting")
        answer = pc.localDescription.sdp.encode()
        await self.mesh.ctx.signaller.send(self.peer, "answer", answer, attempt)

    async def _accept(self, pc: RTCPeerConnection, sdp: str) -> None:
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(plain_connection_lines(sdp), "answer")
            )
            await add_bundled_candidates(pc, sdp)
        except Exception as exc:  # verified, so theirs: retried like a failed connection
            self._set("failed", f"unusable answer from {self.peer.label}: {exc}")
            await self._close_pc()

    async def refuse(self, reason: str) -> None:
        await self.close("refused", reason)

    # -- media -------------------------------------------------------------------------------

    def apply_sending(self) -> None:
        mesh = self.mesh
        for transceiver, source, allowed in (
            (self._audio, mesh.audio, mesh.sending_audio),
            (self._video, mesh.video, mesh.sending_video),
            (self._screen, mesh.screen, mesh.sending_video),  # a screen is video
        ):
            if transceiver is None:
                continue
            sender = transceiver.sender
            want = allowed and source is not None and source.readyState == "live"
            if want and sender.track is None:
                assert source is not None
                sender.replaceTrack(mesh.relay.subscribe(source, buffered=False))
            elif not want and sender.track is not None:
                track = sender.track
                sender.replaceTrack(None)
                track.stop()

    async def _consume(self, pc: RTCPeerConnection, track: MediaStreamTrack, screen: bool) -> None:
        sink = self.mesh.ctx.sink
        member = self.peer.member
        with contextlib.suppress(MediaStreamError):
            while pc is self.pc:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame) and screen:
                    sink.on_screen(member, frame)
                elif isinstance(frame, av.VideoFrame):
                    sink.on_video(member, frame)
                elif isinstance(frame, av.AudioFrame):
                    sink.on_audio(member, frame)


_CONNECTION_LINE = re.compile(r"^c=IN (IP4|IP6) (\S+)$", re.MULTILINE)


def plain_connection_lines(sdp: str) -> str:
    """``sdp`` with every ``c=`` line that names no IP address (Firefox writes its default
    candidate there, an mDNS ``….local`` name when it hides its host addresses) set to the
    null address: aiortc accepts such a description but raises ``ValueError`` whenever it
    writes it out again (``pc.remoteDescription``). ICE uses the candidates, never ``c=``;
    aioice resolves the ``.local`` candidates themselves."""

    def plain(match: re.Match[str]) -> str:
        family, address = match.group(1), match.group(2)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return f"c=IN {family} {'0.0.0.0' if family == 'IP4' else '::'}"
        return match.group(0)

    return _CONNECTION_LINE.sub(plain, sdp.replace("\r\n", "\n")).replace("\n", "\r\n")


class MeshTopology:
    """Implements :class:`client.call.topology.Topology` with direct pairs (see module doc)."""

    name: Literal["mesh", "sfu"] = "mesh"
    e2ee = True
    encryption = "end-to-end (DTLS-SRTP per pair; fingerprints in signed, sealed SDP)"

    def __init__(self, ctx: TopologyContext) -> None:
        self.ctx = ctx
        self.relay = MediaRelay()
        self.video = SourceTap(ctx.video) if ctx.video is not None else None
        self.audio = SourceTap(ctx.audio) if ctx.audio is not None else None
        self.screen = SourceTap(ctx.screen) if ctx.screen is not None else None
        self.sending_video = False
        self.sending_audio = False
        self._links: dict[bytes, _Link] = {}
        self._video_sent: dict[bytes, dict[str, int | None]] = {}  # of links closed since

    def video_send(self) -> dict[bytes, dict[str, int | None]]:
        """Per peer, how our camera's bitrate follows its feedback (:meth:`_Link.video_send`),
        as last seen for peers whose link has closed."""
        live = {member: link.video_send() for member, link in self._links.items()}
        return {**self._video_sent, **live}

    def link_state(self, member: bytes) -> LinkState | None:
        link = self._links.get(member)
        return link.state if link else None

    async def set_peers(self, peers: Mapping[bytes, Peer]) -> None:
        for member, link in list(self._links.items()):
            peer = peers.get(member)
            if peer is None or peer.link != link.peer.link:
                del self._links[member]
                self._video_sent[member] = link.video_send()
                await link.close()
        for member, peer in peers.items():
            if member not in self._links:
                link = _Link(self, peer)
                self._links[member] = link
                link.start()

    async def on_signal(self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int) -> None:
        link = self._links.get(peer.member)
        if link is not None and link.peer.link == peer.link and kind in ("offer", "answer"):
            await link.on_signal(kind, payload, attempt)

    async def refuse(self, member: bytes, reason: str) -> None:
        link = self._links.get(member)
        if link is not None:
            await link.refuse(reason)

    def set_sending(self, *, video: bool, audio: bool) -> None:
        self.sending_video, self.sending_audio = video, audio
        for link in self._links.values():
            link.apply_sending()

    async def close(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        for tap in (self.video, self.audio, self.screen):
            if tap is not None:
                tap.stop()  # the relay's reader ends; the source is the call client's
