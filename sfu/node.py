"""An SFU node: one aiortc peer connection per participant, RTP forwarded without keys.

The asyncio edge around :class:`sfu.forwarder.Forwarder`. Signalling is not ours: the
conference control plane hands :meth:`SfuNode.join` a participant's SDP offer (a string)
and relays the answer back; it calls :meth:`set_muted` / :meth:`kick` to enforce
moderation and listens to :class:`ParticipantLeft` / :class:`ActiveSpeaker` events.

What the node expects from an offer (``client.call.e2ee_media.SfuSession`` makes one):

* BUNDLE over one transport (aiortc always bundles); audio/video only, no data channel;
* at most one ``sendonly``/``sendrecv`` video (VP8) and audio (Opus) m-line, announcing
  its SSRC — what the participant publishes; a browser's camera may instead be simulcast
  (``a=rid``/``a=simulcast``, up to 3 layers lowest first, no SSRC: each layer's is learned
  from the rtp-stream-id extension; see :mod:`protocol.sfu_sdp`), which aiortc does not
  know: the node reads it from the offer text and writes its side into the answer;
* any number (up to the limit) of ``recvonly`` m-lines — the receiving *slots*.

Per packet the node does no coroutine work: aiortc decrypts SRTP, the adapter hands the
RTP bytes to the forwarder, and each subscriber's re-headed copies go out through an
:class:`rtc.aiortc_adapter.RtpSink` (SRTP-protect + ``sendto``) straight away.

Congestion feedback (issue 13: REMB + receiver-report loss): each forwarded video packet
carries abs-send-time where the slot negotiated it, so subscribers (Chromium, aiortc) send
REMB; a subscriber's REMB and the loss its receiver reports on its slots go to
:meth:`Forwarder.on_feedback`. Towards each publisher the node sends, once a second, an
RTCP RR (the loss on each of its up-tracks) and a REMB (the forwarder's uplink estimate),
which Chromium's bandwidth estimator and the CLI's encoder follow.

The node never decodes, never holds a media key (frames are SFrame ciphertext) and never
logs SDP (it carries addresses). It does read each frame's SFrame key id (in clear): a
participant joined with its ``sender_index`` may only publish under its own key ids, and
every packet forwarded from it carries that index as its CSRC (see :mod:`sfu.forwarder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    sdp,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from protocol.quantiles import percentile
from protocol.sfu_sdp import (
    Simulcast,
    SimulcastError,
    answer_simulcast,
    screen_mids,
    simulcast_sections,
)
from rtc import aiortc_adapter
from sfu import rtp
from sfu.errors import InvalidOffer, InvalidView, NotFound, OfferTooLarge
from sfu.forwarder import (
    DownTrackSpec,
    Forwarder,
    ForwarderConfig,
    KeyframeRequest,
    Kind,
    NackRequest,
    SpeakerChanged,
    UpTrackSpec,
)
from sfu.public_address import advertise_public_address

logger = logging.getLogger(__name__)

__all__ = [
    "ActiveSpeaker",
    "NodeEvent",
    "ParticipantLeft",
    "SfuConfig",
    "SfuNode",
    "default_rtc_configuration",
]

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RETRANSMIT_ENV = "SALON_SFU_RETRANSMIT"  # "0": no NACK answers, no upstream NACKs (benches)
ADAPT_ENV = "SALON_SFU_ADAPT"  # "0": always the top layer, estimates ignored (benches)
FEEDBACK_INTERVAL = 1.0  # seconds between the RR + REMB sent to each publisher
# RTCP taken from one participant (token bucket): nothing else limits it in front of
# aiortc's parser, which takes ~0.3 ms for a crafted 1.2 kB compound of tiny packets (parse
# cost grows with size), then calls us once per sequence number a NACK names (17 per 4
# bytes). A compound costs 1, plus 1 per 100 bytes, plus 1 per 16 sequence numbers its
# NACKs may name: a browser's (reports, REMB, NACKs of a few packets, ~100-200 bytes each,
# a few hundred a second at heavy loss on six slots) stays well inside; a flood of crafted
# compounds gets ~150 a second parsed, of crafted NACKs ~6 (30 000 sequence numbers, of
# which the forwarder's own retransmission budget serves 400). Past it: dropped.
RTCP_PER_SECOND = 2000.0
RTCP_BURST = 2000.0


def rtcp_cost(data: bytes) -> int:
    """Tokens one RTCP compound takes from its sender's bucket."""
    return 1 + len(data) // 100 + rtp.nack_bound(data) // 16


_CODEC_FOR_KIND = {"video": "vp8", "audio": "opus"}
_ANY_HEIGHT = 0x3FFF  # taller than any layer: the tile cannot limit it


def _kind(transceiver: RTCRtpTransceiver, screens: set[str]) -> Kind:
    if transceiver.kind == "audio":
        return "audio"
    return "screen" if transceiver.mid in screens else "video"


def _muted_kinds(kind: str) -> tuple[Kind, ...]:
    """What a mute of ``kind`` stops: a video mute (stage listener) stops the screen too."""
    return ("video", "screen") if kind == "video" else ("audio",)


@dataclass(slots=True)
class SfuConfig:
    max_offer_bytes: int = 65_536
    max_media_sections: int = 34  # 2 published + 16 slots per kind
    max_candidates: int = 32  # distinct ones (bundled sections repeat them)
    connect_timeout: float = 20.0  # a participant not connected by then is dropped
    tick_interval: float = 0.05
    write_buffer_limit: int = 256 * 1024  # per subscriber socket; above it we queue/drop
    latency_samples: int = 50_000  # processing-time samples kept for stats()
    # Behind a 1:1 NAT: the address clients reach us at, written into our host candidates.
    public_address: str = ""
    forwarder: ForwarderConfig = field(default_factory=lambda: forwarder_config_from_env())


def forwarder_config_from_env() -> ForwarderConfig:
    """The default forwarding config, with retransmission off if ``$SALON_SFU_RETRANSMIT``
    is ``0`` and bandwidth adaptation off if ``$SALON_SFU_ADAPT`` is ``0`` (so a bench
    measures with and without them on the same build)."""
    return ForwarderConfig(
        retransmit=os.environ.get(RETRANSMIT_ENV, "1").strip() != "0",
        adapt=os.environ.get(ADAPT_ENV, "1").strip() != "0",
    )


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    conference_id: str
    participant_id: str
    reason: str  # "left", "kicked", "disconnected", "timeout", "replaced"


@dataclass(frozen=True, slots=True)
class ActiveSpeaker:
    conference_id: str
    participant_id: str | None


NodeEvent = ParticipantLeft | ActiveSpeaker


def default_rtc_configuration() -> RTCConfiguration:
    """No STUN/TURN (the node is reached directly), one transport for every m-line.

    max-bundle: with aiortc's default (balanced), a second transceiver of one kind can
    stay on a transport that BUNDLE negotiation then stops.
    """
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class _IdleTrack(MediaStreamTrack):
    """What an SFU slot's aiortc sender "plays": nothing, until stopped.

    Media for the slot bypasses the sender (see ``RtpSink``); the sender only exists so
    the slot is negotiated and its RTCP (PLI, reports) is handled.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


@dataclass(eq=False)
class _Peer:
    conference_id: str
    participant_id: str
    pc: RTCPeerConnection
    dtls: RTCDtlsTransport
    sink: aiortc_adapter.RtpSink
    uptracks: list[UpTrackSpec]
    downtracks: list[DownTrackSpec]
    receivers: dict[int, RTCRtpReceiver]  # published SSRC -> receiver (for PLIs)
    joined_at: float
    sender_index: int | None = None  # its frames' SFrame key ids must name this index
    forwarding: bool = False
    closed: bool = False
    feedback_at: float = 0.0  # when the last RR + REMB went to it (a publisher)
    rembs: int = 0  # REMBs on its slots it sent us (a subscriber)
    loss_reports: int = 0  # RTCP reports with blocks on its slots
    feedback_sent: int = 0  # RR + REMB compounds we sent it (a publisher)
    rtcp_tokens: float = RTCP_BURST  # RTCP compounds it may still send now ...
    rtcp_at: float = 0.0  # ... as of then
    rtcp_received: int = 0  # RTCP compounds it sent us ...
    rtcp_dropped: int = 0  # ... and those over the limit

    @property
    def rtcp_ssrc(self) -> int:
        """The sender SSRC of the RTCP we originate towards it: one of our own streams
        to it (any of ours would do; receivers only match report blocks' media SSRCs)."""
        return self.downtracks[0].ssrc if self.downtracks else 1

    def receiver(self, ssrc: int) -> RTCRtpReceiver | None:
        """The receiver of published SSRC ``ssrc`` (RTCP goes through it); a simulcast
        layer's SSRC is not in the offer: it is the simulcast camera's (kept under 0)."""
        return self.receivers.get(ssrc) or self.receivers.get(0)


@dataclass(eq=False)
class _Conference:
    forwarder: Forwarder
    peers: dict[str, _Peer] = field(default_factory=dict)


class SfuNode:
    """Media forwarding for any number of conferences on one event loop."""

    def __init__(
        self,
        config: SfuConfig | None = None,
        *,
        on_event: Callable[[NodeEvent], None] | None = None,
        rtc_configuration: Callable[[], RTCConfiguration] | None = None,
    ) -> None:
        self.config = config or SfuConfig()
        self._on_event = on_event
        self._rtc_configuration = rtc_configuration or default_rtc_configuration
        self._conferences: dict[str, _Conference] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._processing_ns: deque[int] = deque(maxlen=self.config.latency_samples)
        # Mutes outlive a reconnect ("replaced") and apply once forwarding starts.
        self._mutes: dict[tuple[str, str], set[str]] = {}
        # Each subscriber's view (slot mid -> height shown): outlives a reconnect like mutes.
        self._views: dict[tuple[str, str], dict[str, int]] = {}
        self.packets_in = 0
        self._packets_out_gone = 0  # sent to participants who have left since
        self._totals_gone: Counter[str] = Counter()  # forwarder totals of ended conferences
        # Forwarding time per packet for /metrics: latency_counts[n] counts the packets that
        # took [2**(n-1), 2**n) ns (n = the time's bit length: one cheap call per packet).
        self.latency_counts = [0] * 64

    # ------------------------------------------------------------------ control API

    async def join(
        self,
        conference_id: str,
        participant_id: str,
        offer_sdp: str,
        *,
        sender_index: int | None = None,
    ) -> str:
        """Connect a participant; return the SDP answer for its offer.

        ``sender_index`` is the participant's per-call sender index: only frames under its
        SFrame key ids are forwarded, each packet naming it in its CSRC (see
        :mod:`sfu.forwarder`). The control plane always gives it.
        Media starts flowing once ICE/DTLS complete. A second join of the same participant
        replaces the first connection. Raises :class:`sfu.errors.SfuError` subclasses for
        offers the node cannot or will not serve.
        """
        offer = self._parse_offer(offer_sdp)
        conference = self._conferences.get(conference_id)
        if conference is not None and participant_id in conference.peers:
            await self._drop(conference_id, participant_id, "replaced")
        self._ensure_ticker()
        pc = RTCPeerConnection(self._rtc_configuration())
        try:
            peer = await self._negotiate(conference_id, participant_id, pc, offer, offer_sdp)
        except BaseException:
            await pc.close()
            raise
        conference = self._conferences.setdefault(
            conference_id, _Conference(Forwarder(self.config.forwarder))
        )
        peer.sender_index = sender_index
        conference.peers[participant_id] = peer

        @pc.on("connectionstatechange")
        def on_state_change() -> None:
            self._on_connection_state(peer)

        answer = answer_simulcast(str(pc.localDescription.sdp), _simulcast(offer_sdp))
        if self.config.public_address:
            answer = advertise_public_address(answer, self.config.public_address)
        return answer

    async def leave(self, conference_id: str, participant_id: str) -> None:
        """The participant left: stop forwarding and close its connection."""
        await self._drop(conference_id, participant_id, "left", must_exist=True)

    async def kick(self, conference_id: str, participant_id: str) -> None:
        """Drop the participant's connection at once (moderation); media stops both ways."""
        await self._drop(conference_id, participant_id, "kicked", must_exist=True)

    def set_muted(
        self, conference_id: str, participant_id: str, muted: bool, kind: Kind = "audio"
    ) -> None:
        """Stop (or resume) forwarding what the participant publishes of ``kind``.

        Server-enforced: the participant's own client is not trusted to stop sending. Holds
        across a reconnect (a second ``join``) until unmuted or the participant leaves.
        Use ``kind="video"`` as well for a stage listener.
        """
        peer = self._peer(conference_id, participant_id)
        peer_mutes = self._mutes.setdefault((conference_id, participant_id), set())
        if muted:
            peer_mutes.add(kind)
        else:
            peer_mutes.discard(kind)
        fwd = self._conferences[conference_id].forwarder
        if peer.forwarding:
            for each in _muted_kinds(kind):
                fwd.set_muted(participant_id, each, muted)

    def set_view(self, conference_id: str, participant_id: str, heights: Mapping[str, int]) -> None:
        """How big the participant shows each of its receiving video and screen slots (slot
        mid -> height in device pixels, 0: not shown), so the forwarder picks a simulcast
        layer per slot. The whole view: a slot left out is shown as big as available. Holds
        across a reconnect until the next view; the control plane checked its bounds.
        Raises :class:`InvalidView` for a mid that is not one of its video or screen slots.
        """
        peer = self._peer(conference_id, participant_id)
        unknown = sorted(set(heights) - set(_slot_ssrcs(peer)))
        if unknown:
            raise InvalidView(f"the view names {unknown[0]!r}, not one of your video slots")
        self._views[(conference_id, participant_id)] = dict(heights)
        if peer.forwarding:
            self._apply_view(peer)

    def _apply_view(self, peer: _Peer) -> None:
        view = self._views.get((peer.conference_id, peer.participant_id))
        if view is None:
            return
        # A whole view: a slot it leaves out is shown as big as there is (the tallest layer).
        heights = {ssrc: view.get(mid, _ANY_HEIGHT) for mid, ssrc in _slot_ssrcs(peer).items()}
        self._conferences[peer.conference_id].forwarder.set_view(peer.participant_id, heights)

    def is_muted(self, conference_id: str, participant_id: str, kind: Kind = "audio") -> bool:
        self._peer(conference_id, participant_id)
        return kind in self._mutes.get((conference_id, participant_id), set())

    def active_speaker(self, conference_id: str) -> str | None:
        conference = self._conferences.get(conference_id)
        return conference.forwarder.active_speaker if conference else None

    @property
    def packets_out(self) -> int:
        """RTP packets sent to subscribers since the node started."""
        live = sum(c.forwarder.packets_sent for c in self._conferences.values())
        return self._packets_out_gone + live

    def forwarder(self, conference_id: str) -> Forwarder | None:
        """The conference's routing state (read-only use: stats, routes, active speaker)."""
        conference = self._conferences.get(conference_id)
        return conference.forwarder if conference else None

    def participants(self, conference_id: str) -> list[str]:
        conference = self._conferences.get(conference_id)
        return list(conference.peers) if conference else []

    def load(self) -> int:
        """Subscriber streams currently routed (what the control plane balances nodes on)."""
        total = 0
        for conference in self._conferences.values():
            for pid in conference.forwarder.participant_ids():
                total += sum(
                    1 for src in conference.forwarder.routes(pid).values() if src is not None
                )
        return total

    def stats(self) -> dict[str, Any]:
        samples = list(self._processing_ns)

        def pct(q: float) -> float | None:
            return percentile(samples, q) / 1e6 if samples else None

        return {
            "conferences": {
                cid: {
                    "participants": {
                        pid: {
                            "connection_state": peer.pc.connectionState,
                            "forwarding": peer.forwarding,
                            "muted": sorted(self._mutes.get((cid, pid), set())),
                            "view": dict(self._views.get((cid, pid), {})),
                            "socket_congested": peer.sink.congested,
                            "rembs_received": peer.rembs,
                            "loss_reports_received": peer.loss_reports,
                            "feedback_sent": peer.feedback_sent,
                            "rtcp_received": peer.rtcp_received,
                            "rtcp_dropped": peer.rtcp_dropped,
                        }
                        for pid, peer in conference.peers.items()
                    },
                    "forwarder": conference.forwarder.stats(),
                }
                for cid, conference in self._conferences.items()
            },
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "processing_ms": {"p50": pct(0.5), "p99": pct(0.99), "samples": len(samples)},
        }

    def totals(self) -> dict[str, int]:
        """Node-wide counters since start (``/metrics``): the forwarders' drops, keyframe
        requests and PLIs summed over every conference, ended ones included, and the
        packets received and forwarded."""
        total = Counter(self._totals_gone)
        for conference in self._conferences.values():
            total.update(conference.forwarder.totals())
        return {
            **total,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "conferences": len(self._conferences),
            "participants": sum(len(c.peers) for c in self._conferences.values()),
        }

    def reset_latency_samples(self) -> None:
        self._processing_ns.clear()

    async def close(self) -> None:
        """Drop every participant and stop background work."""
        for cid, conference in list(self._conferences.items()):
            for pid in list(conference.peers):
                await self._drop(cid, pid, "left")
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    # ------------------------------------------------------------------ negotiation

    def _parse_offer(self, offer_sdp: str) -> sdp.SessionDescription:
        cfg = self.config
        if len(offer_sdp.encode("utf-8", "replace")) > cfg.max_offer_bytes:
            raise OfferTooLarge(f"offer larger than {cfg.max_offer_bytes} bytes")
        if _distinct_candidates(offer_sdp) > cfg.max_candidates:
            raise OfferTooLarge(f"offer has more than {cfg.max_candidates} candidates")
        try:
            offer = sdp.SessionDescription.parse(offer_sdp)
        except Exception as exc:  # aiortc's parser raises assorted errors on garbage
            raise InvalidOffer("unparsable SDP offer") from exc
        if not offer.media:
            raise InvalidOffer("offer has no media")
        if len(offer.media) > cfg.max_media_sections:
            raise OfferTooLarge(f"offer has more than {cfg.max_media_sections} media sections")
        published: set[str] = set()
        screens = screen_mids(offer_sdp)
        simulcast = _simulcast(offer_sdp)
        for media in offer.media:
            if media.kind not in ("audio", "video"):
                raise InvalidOffer(f"unsupported media kind {media.kind!r}")
            if media.direction in ("sendonly", "sendrecv"):
                kind = "screen" if media.rtp.muxId in screens else media.kind
                if kind in published:
                    raise InvalidOffer(f"more than one published {kind} track")
                if media.rtp.muxId in simulcast:
                    if kind != "video":
                        raise InvalidOffer("only the published camera may be simulcast")
                elif not media.ssrc:
                    raise InvalidOffer(f"published {kind} track without an SSRC")
                published.add(kind)
            elif media.rtp.muxId in simulcast:
                raise InvalidOffer("simulcast on a section that publishes nothing")
        bundle = next((g for g in offer.group if g.semantic == "BUNDLE"), None)
        mids = {m.rtp.muxId for m in offer.media}
        if bundle is None or set(bundle.items) != mids:
            raise InvalidOffer("offer must BUNDLE every media section")
        return offer

    async def _negotiate(
        self,
        conference_id: str,
        participant_id: str,
        pc: RTCPeerConnection,
        offer: sdp.SessionDescription,
        offer_sdp: str,
    ) -> _Peer:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise InvalidOffer(f"offer rejected: {exc}") from exc
        offered = {m.rtp.muxId: m for m in offer.media}
        screens = screen_mids(offer_sdp)
        simulcast = _simulcast(offer_sdp)
        slots: list[RTCRtpTransceiver] = []
        publishing: list[tuple[RTCRtpTransceiver, int]] = []
        for t in pc.getTransceivers():
            media = offered.get(t.mid or "")
            if media is None:
                continue
            if media.direction == "recvonly":
                t.direction = "sendonly"
                t.sender.replaceTrack(_IdleTrack(t.kind))
                slots.append(t)
            elif media.direction in ("sendonly", "sendrecv"):
                t.direction = "recvonly"
                # A simulcast track's layers may list SSRCs (Firefox) or not (Chromium): they
                # are learned from their RIDs either way (0).
                ssrc = 0 if media.rtp.muxId in simulcast else media.ssrc[0].ssrc
                publishing.append((t, ssrc))
            else:
                t.direction = "inactive"
        await pc.setLocalDescription(await pc.createAnswer())

        uptracks: list[UpTrackSpec] = []
        receivers: dict[int, RTCRtpReceiver] = {}
        for t, ssrc in publishing:
            media = offered[t.mid or ""]
            uptracks.append(_uptrack_spec(t, ssrc, media, screens, simulcast.get(t.mid or "")))
            receivers[ssrc] = t.receiver  # a simulcast track's under 0: see _Peer.receiver
        downtracks: list[DownTrackSpec] = []
        for t in slots:
            codecs = _media_codecs(t)
            if not codecs or codecs[0].name.lower() != _CODEC_FOR_KIND[t.kind]:
                raise InvalidOffer(f"{t.kind} slots must accept {_CODEC_FOR_KIND[t.kind]}")
            ssrc = aiortc_adapter.sender_ssrc(t.sender)
            rtx_pt = _rtx_payload_type(t, codecs[0].payloadType)
            downtracks.append(
                DownTrackSpec(
                    _kind(t, screens),
                    ssrc,
                    codecs[0].payloadType or 0,
                    codecs[0].clockRate,
                    _extension_id(t, AUDIO_LEVEL_URI),
                    rtx_ssrc=aiortc_adapter.sender_rtx_ssrc(t.sender) if rtx_pt else None,
                    rtx_payload_type=rtx_pt,
                    abs_send_time_id=_extension_id(t, rtp.ABS_SEND_TIME_URI),
                )
            )
            aiortc_adapter.on_keyframe_request(
                t.sender, self._keyframe_callback(conference_id, participant_id, ssrc)
            )
            aiortc_adapter.on_nack(
                t.sender, self._nack_callback(conference_id, participant_id, ssrc)
            )

        transports = {t.receiver.transport for t in pc.getTransceivers()}
        if len(transports) != 1:
            raise InvalidOffer("offer must BUNDLE every media section")
        dtls = transports.pop()
        peer = _Peer(
            conference_id,
            participant_id,
            pc,
            dtls,
            aiortc_adapter.RtpSink(dtls, self.config.write_buffer_limit),
            uptracks,
            downtracks,
            receivers,
            time.monotonic(),
        )
        aiortc_adapter.intercept_rtp(dtls, self._rtp_callback(peer), self._rtcp_callback(peer))
        return peer

    # ------------------------------------------------------------------ media path

    def _rtp_callback(self, source: _Peer) -> Callable[[bytes], None]:
        samples = self._processing_ns
        counts = self.latency_counts
        clock = time.perf_counter_ns
        conference_id, participant_id = source.conference_id, source.participant_id

        def on_rtp(data: bytes) -> None:
            start = clock()
            if source.closed:  # a replaced or dropped connection's late packets
                return
            conference = self._conferences.get(conference_id)
            if conference is None:
                return
            self.packets_in += 1
            fwd = conference.forwarder
            queued = fwd.on_rtp(participant_id, data)  # sent through the sinks already
            for sub in queued:  # congested subscribers: try again, in order
                peer = conference.peers.get(sub)
                if peer is not None:
                    fwd.drain(sub, peer.sink)
            if fwd.has_events:  # a gap: NACK the publisher now, not on the next tick
                self._handle_events(conference_id, conference)
            elapsed = clock() - start
            samples.append(elapsed)
            counts[elapsed.bit_length()] += 1

        return on_rtp

    def _rtcp_callback(self, subscriber: _Peer) -> Callable[[bytes], bool]:
        """A subscriber's RTCP: its REMB and the worst loss it reports on its slots (what
        the forwarder's per-subscriber estimate is made of). aiortc handles the rest."""
        slots = frozenset(dt.ssrc for dt in subscriber.downtracks)
        conference_id, participant_id = subscriber.conference_id, subscriber.participant_id

        def on_rtcp(data: bytes) -> bool:
            subscriber.rtcp_received += 1
            now = time.monotonic()
            tokens = min(
                RTCP_BURST, subscriber.rtcp_tokens + (now - subscriber.rtcp_at) * RTCP_PER_SECOND
            )
            subscriber.rtcp_at = now
            cost = rtcp_cost(data)
            if tokens < cost:
                subscriber.rtcp_tokens = tokens
                subscriber.rtcp_dropped += 1
                return False  # neither we nor aiortc parse it
            subscriber.rtcp_tokens = tokens - cost
            if subscriber.closed or not subscriber.forwarding:
                return True
            conference = self._conferences.get(conference_id)
            if conference is None:
                return True
            feedback = rtp.parse_rtcp_feedback(data)
            remb = next((r.bitrate for r in feedback.rembs if not slots.isdisjoint(r.ssrcs)), None)
            losses = [b.fraction_lost for b in feedback.reports if b.ssrc in slots]
            if remb is None and not losses:
                return True
            subscriber.rembs += remb is not None
            subscriber.loss_reports += bool(losses)
            conference.forwarder.on_feedback(
                participant_id,
                remb_bps=remb,
                fraction_lost=max(losses) / 256 if losses else None,
            )
            return True

        return on_rtcp

    def _send_feedback(self, fwd: Forwarder, peer: _Peer) -> None:
        """An RTCP RR on what we receive from ``peer`` and a REMB with our estimate of its
        uplink, as one compound packet (nothing before its first packet reached us)."""
        receptions = fwd.reception_reports(peer.participant_id)
        if not receptions:
            return
        sender = peer.rtcp_ssrc
        packet = rtp.build_receiver_report(
            sender,
            [
                rtp.ReportBlock(
                    r.ssrc, r.fraction_lost, r.cumulative_lost, r.extended_highest_seq, r.jitter
                )
                for r in receptions
            ],
        )
        # Adaptation off (a bench's baseline): no REMB, so publishers' encoders do not adapt.
        estimate = fwd.uplink_estimate(peer.participant_id) if fwd.config.adapt else None
        if estimate is not None:
            ssrcs = {r.ssrc for r in receptions}
            ssrcs.update(up.ssrc for up in peer.uptracks if up.ssrc)
            packet += rtp.build_remb(sender, estimate, sorted(ssrcs))
        if peer.sink.send_rtcp(packet):
            peer.feedback_sent += 1

    def _keyframe_callback(
        self, conference_id: str, participant_id: str, ssrc: int
    ) -> Callable[[], None]:
        def on_keyframe_request() -> None:
            conference = self._conferences.get(conference_id)
            if conference is not None:
                conference.forwarder.on_keyframe_request(participant_id, ssrc)

        return on_keyframe_request

    def _nack_callback(
        self, conference_id: str, participant_id: str, ssrc: int
    ) -> Callable[[int], None]:
        def on_nack(sequence_number: int) -> None:
            conference = self._conferences.get(conference_id)
            if conference is None:
                return
            fwd = conference.forwarder
            fwd.on_nack(participant_id, ssrc, (sequence_number,))
            peer = conference.peers.get(participant_id)
            if peer is not None and fwd.queued(participant_id):
                fwd.drain(participant_id, peer.sink)
            if fwd.has_events:
                self._handle_events(conference_id, conference)

        return on_nack

    # ------------------------------------------------------------------ lifecycle

    def _on_connection_state(self, peer: _Peer) -> None:
        if peer.closed:
            return
        state = peer.pc.connectionState
        if state == "connected" and not peer.forwarding:
            aiortc_adapter.receive_rtp_from_socket(peer.dtls, self._rtp_callback(peer))
            self._start_forwarding(peer)
        elif state in ("failed", "closed"):
            self._spawn(self._drop(peer.conference_id, peer.participant_id, "disconnected", peer))

    def _start_forwarding(self, peer: _Peer) -> None:
        conference = self._conferences.get(peer.conference_id)
        if conference is None or conference.peers.get(peer.participant_id) is not peer:
            return
        fwd = conference.forwarder
        fwd.add_participant(
            peer.participant_id, peer.uptracks, peer.downtracks, sender_index=peer.sender_index
        )
        fwd.set_sink(peer.participant_id, peer.sink)
        for kind in self._mutes.get((peer.conference_id, peer.participant_id), set()):
            for muted in _muted_kinds(kind):
                fwd.set_muted(peer.participant_id, muted, True)
        self._apply_view(peer)
        peer.forwarding = True
        self._handle_events(peer.conference_id, conference)

    async def _drop(
        self,
        conference_id: str,
        participant_id: str,
        reason: str,
        only: _Peer | None = None,
        *,
        must_exist: bool = False,
    ) -> None:
        conference = self._conferences.get(conference_id)
        peer = conference.peers.get(participant_id) if conference else None
        if conference is None or peer is None or (only is not None and peer is not only):
            if must_exist:
                raise NotFound(f"no participant {participant_id!r} in that conference")
            return
        peer.closed = True
        del conference.peers[participant_id]
        self._packets_out_gone += conference.forwarder.sent_to(participant_id)
        conference.forwarder.remove_participant(participant_id)
        if reason != "replaced":
            self._mutes.pop((conference_id, participant_id), None)
            self._views.pop((conference_id, participant_id), None)
        self._handle_events(conference_id, conference)
        if not conference.peers:
            del self._conferences[conference_id]
            self._totals_gone.update(conference.forwarder.totals())
        self._emit(ParticipantLeft(conference_id, participant_id, reason))
        await peer.pc.close()

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_loop())

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            now = time.monotonic()
            for cid, conference in list(self._conferences.items()):
                fwd = conference.forwarder
                fwd.tick()
                self._handle_events(cid, conference)
                for pid, peer in list(conference.peers.items()):
                    if peer.forwarding:
                        if fwd.queued(pid):  # a congested subscriber may have room now
                            fwd.drain(pid, peer.sink)
                        if peer.uptracks and now - peer.feedback_at >= FEEDBACK_INTERVAL:
                            peer.feedback_at = now
                            self._send_feedback(fwd, peer)
                    elif now - peer.joined_at > self.config.connect_timeout:
                        self._spawn(self._drop(cid, pid, "timeout", peer))

    def _handle_events(self, conference_id: str, conference: _Conference) -> None:
        for event in conference.forwarder.events():
            if isinstance(event, KeyframeRequest):
                peer = conference.peers.get(event.publisher)
                receiver = peer.receiver(event.ssrc) if peer else None
                if receiver is not None:
                    self._spawn(aiortc_adapter.send_pli(receiver, event.ssrc))
            elif isinstance(event, NackRequest):
                peer = conference.peers.get(event.publisher)
                receiver = peer.receiver(event.ssrc) if peer else None
                if receiver is not None:
                    self._spawn(aiortc_adapter.send_nack(receiver, event.ssrc, event.sequences))
            elif isinstance(event, SpeakerChanged):
                self._emit(ActiveSpeaker(conference_id, event.participant))

    def _emit(self, event: NodeEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("SFU event handler failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("SFU background task failed: %r", task.exception())

    def _peer(self, conference_id: str, participant_id: str) -> _Peer:
        conference = self._conferences.get(conference_id)
        peer = conference.peers.get(participant_id) if conference else None
        if peer is None:
            raise NotFound(f"no participant {participant_id!r} in that conference")
        return peer


def _distinct_candidates(offer_sdp: str) -> int:
    """The offer's ICE candidates, each counted once: an offer repeats its transport's
    candidates in every BUNDLEd media section (aiortc does, RFC 8843 §7.2 allows it), so
    with 16 sections three host addresses would make 48 lines. The byte limit bounds the rest."""
    return len({line.strip() for line in offer_sdp.splitlines() if line.startswith("a=candidate:")})


def _simulcast(offer_sdp: str) -> dict[str, Simulcast]:
    """The offer's simulcast sections by mid (:func:`protocol.sfu_sdp.simulcast_sections`)."""
    try:
        return simulcast_sections(offer_sdp)
    except SimulcastError as exc:
        raise InvalidOffer(str(exc)) from exc


def _uptrack_spec(
    t: RTCRtpTransceiver,
    ssrc: int,
    media: sdp.MediaDescription,
    screens: set[str],
    simulcast: Simulcast | None,
) -> UpTrackSpec:
    """What the forwarder needs of a published track: its negotiated codec, SSRC (0 for
    simulcast: the layers' SSRCs are learned from their RIDs) and RTX."""
    codecs = _media_codecs(t)
    if not codecs or codecs[0].name.lower() != _CODEC_FOR_KIND[t.kind]:
        raise InvalidOffer(f"published {t.kind} must be {_CODEC_FOR_KIND[t.kind]}")
    rtx_pt = _rtx_payload_type(t, codecs[0].payloadType)
    rtx_ssrc = next(
        (
            g.items[1]
            for g in media.ssrc_group
            if g.semantic == "FID" and len(g.items) == 2 and g.items[0] == ssrc
        ),
        None,
    )
    return UpTrackSpec(
        _kind(t, screens),
        ssrc,
        frozenset(c.payloadType for c in codecs if c.payloadType is not None),
        _extension_id(t, AUDIO_LEVEL_URI),
        rtx_ssrc=int(rtx_ssrc) if rtx_pt is not None and rtx_ssrc else None,
        rtx_payload_type=rtx_pt,
        rtx_apt=codecs[0].payloadType,
        rids=simulcast.rids if simulcast else (),
        rid_ext_id=simulcast.rid_ext_id if simulcast else None,
        repaired_rid_ext_id=simulcast.repaired_rid_ext_id if simulcast else None,
    )


def _slot_ssrcs(peer: _Peer) -> dict[str, int]:
    """mid -> SSRC of each of the participant's receiving video (camera and screen) slots."""
    return {
        t.mid: aiortc_adapter.sender_ssrc(t.sender)
        for t in peer.pc.getTransceivers()
        if t.kind == "video" and t.direction == "sendonly" and t.mid is not None
    }


def _media_codecs(t: RTCRtpTransceiver) -> list[Any]:
    return [c for c in aiortc_adapter.negotiated_codecs(t) if c.name.lower() != "rtx"]


def _extension_id(t: RTCRtpTransceiver, uri: str) -> int | None:
    for ext in aiortc_adapter.negotiated_header_extensions(t):
        if ext.uri == uri:
            return int(ext.id)
    return None


def _rtx_payload_type(t: RTCRtpTransceiver, apt: int | None) -> int | None:
    """The negotiated RTX payload type carrying ``apt`` (RFC 4588), if any."""
    for codec in aiortc_adapter.negotiated_codecs(t):
        if codec.name.lower() == "rtx" and codec.parameters.get("apt") == apt:
            return codec.payloadType
    return None
