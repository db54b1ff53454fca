"""Forwarding decisions for one conference, sans-I/O: RTP bytes in, RTP bytes per subscriber out.

The SFU forwards *below* the encoded-frame layer (DESIGN §6): every inbound RTP packet is
re-headed for each subscriber — SSRC, sequence number and timestamp rewritten onto that
subscriber's outbound stream — and its payload (an SFrame ciphertext the SFU cannot read)
is copied as is. Nothing here decodes, reassembles frames or holds a key.

Model:

* A *participant* publishes up to one camera ("video"), one screen-share ("screen") and one
  audio *up-track* (SSRCs from its SDP offer) and receives on a fixed set of *down-tracks*
  ("slots", one outbound SSRC each, negotiated once) of those kinds. A slot carries one
  publisher's track of its kind at a time; when there are more publishers than slots the
  most recent active speakers get them (last-N). A screen is VP8 video like the camera
  (keyframe gating, PLIs, rate limit) on slots of its own.
* Nobody speaks as someone else: every receiver holds every sender's key, so a participant
  *could* encrypt under another's SFrame key id. A participant added with its
  ``sender_index`` may only publish frames whose key id names that index
  (``protocol.media_keys``): the SFrame header at the start of each frame is read (a few
  bytes, no key) and a frame under another index is dropped whole (``dropped_kid``). Each
  forwarded packet names its publisher's index in its one CSRC, so a receiver tries only
  that publisher's keys (``client.call.sfu_topology``): a forged frame never reaches anyone as
  the real sender, nor moves the real sender's replay window.
* Mute is enforced here: a muted up-track's packets are dropped on arrival. So is a rate
  limit per up-track (token bucket), since every byte a publisher sends is multiplied.
* Packets that arrive far later than their RTP timestamp says (the node fell behind) are
  dropped rather than forwarded late, so an overloaded node sheds load and catches up.
* Video slots are *gated*: a subscriber gets a publisher's video only from the start of a
  keyframe (VP8 keyframe flag, kept in clear by SFrame), so it never starts on a delta frame.
* Keyframe requests (a new subscriber, a subscriber's PLI/FIR, a dropped packet) are
  coalesced to at most one PLI per publisher track per ``pli_interval``.
* Each subscriber has a non-blocking ``send`` (see :meth:`Forwarder.set_sink`) and its own
  bounded queue for when ``send`` cannot take more. A subscriber that cannot keep up loses
  its own oldest packets (and waits for a keyframe), never delaying anyone else.
* The active speaker is the loudest smoothed RFC 6464 audio level, with hysteresis.
* Retransmission (``ForwarderConfig.retransmit``, issue 13): each video up-track keeps its
  last ``history_packets`` packets as they arrived (one reference per packet, shared by every
  subscriber). A subscriber's NACK (:meth:`Forwarder.on_nack`) is answered from it, re-headed
  onto that subscriber's numbering — as RTX (RFC 4588) where the slot negotiated it, plain
  otherwise; what the SFU never received is asked of the publisher (:class:`NackRequest`),
  as is every gap the SFU sees in a publisher's numbering, at most once per
  ``nack_interval`` per packet. A publisher's RTX is unwrapped on arrival; a retransmission
  the SFU already had is dropped, one it lacked is forwarded like any packet. Still below the
  frame layer: a retransmitted packet carries the same SFrame ciphertext.

The edge (``sfu/node.py``) gives each subscriber a sink, calls :meth:`Forwarder.on_rtp`
for every inbound packet and :meth:`Forwarder.drain` for each subscriber it returns (those
with queued packets), :meth:`Forwarder.tick` a few times a second, and acts on
:meth:`Forwarder.events` (send PLIs, publish the active speaker).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from protocol.media_keys import EPOCH_BITS
from sfu import rtp
from sfu.bandwidth import BandwidthConfig, DownlinkEstimate, UplinkEstimate
from sfu.layers import Layer, SlotNeed, allocate

__all__ = [
    "DownTrackSpec",
    "Event",
    "Forwarder",
    "ForwarderConfig",
    "KeyframeRequest",
    "Kind",
    "NackRequest",
    "Reception",
    "SpeakerChanged",
    "UpTrackSpec",
]

Kind = Literal["audio", "video", "screen"]
KINDS: tuple[Kind, ...] = ("video", "screen", "audio")


def is_video(kind: Kind) -> bool:
    """Camera and screen share are both VP8 video: keyframe-gated, PLI-driven, 90 kHz."""
    return kind != "audio"


Clock = Callable[[], float]
Sink = Callable[[bytes], bool]  # non-blocking send; False: not taken (congested)


@dataclass(frozen=True, slots=True)
class UpTrackSpec:
    """A track a participant publishes, as negotiated in its offer."""

    kind: Kind
    ssrc: int
    payload_types: frozenset[int]
    audio_level_id: int | None = None  # RFC 6464 extension id in this participant's SDP
    # RFC 4588 retransmission stream, when negotiated: its SSRC (ssrc-group FID), its
    # payload type and the one it carries (apt).
    rtx_ssrc: int | None = None
    rtx_payload_type: int | None = None
    rtx_apt: int | None = None
    # Simulcast (issue 13): the RIDs of the layers this video is sent in, lowest resolution
    # first. ``ssrc`` is then ignored (a browser does not announce its layers' SSRCs): each
    # layer's SSRC is learned from the first packet whose rtp-stream-id extension names its
    # RID, each layer's RTX SSRC likewise from repaired-rtp-stream-id.
    rids: tuple[str, ...] = ()
    rid_ext_id: int | None = None
    repaired_rid_ext_id: int | None = None


@dataclass(frozen=True, slots=True)
class DownTrackSpec:
    """An outbound slot towards a participant: the SFU sender's SSRC and negotiated codec."""

    kind: Kind
    ssrc: int
    payload_type: int
    clock_rate: int
    audio_level_id: int | None = None
    # RFC 4588 retransmission towards the subscriber, when negotiated for this slot.
    rtx_ssrc: int | None = None
    rtx_payload_type: int | None = None
    # abs-send-time written on every packet (the node's clock), when negotiated: what the
    # subscriber's receive-side estimator needs to send REMB (sfu/bandwidth.py).
    abs_send_time_id: int | None = None


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    """Ask ``publisher`` for a keyframe on its track ``ssrc`` (the edge sends an RTCP PLI)."""

    publisher: str
    ssrc: int


@dataclass(frozen=True, slots=True)
class SpeakerChanged:
    """The dominant speaker is now ``participant`` (``None``: nobody)."""

    participant: str | None


@dataclass(frozen=True, slots=True)
class NackRequest:
    """Ask ``publisher`` to retransmit ``sequences`` of its track ``ssrc`` (an RTCP NACK)."""

    publisher: str
    ssrc: int
    sequences: tuple[int, ...]


Event = KeyframeRequest | SpeakerChanged | NackRequest


@dataclass(frozen=True, slots=True)
class Reception:
    """What an RTCP receiver-report block says of one up-track (RFC 3550 §6.4.1), since the
    previous :meth:`Forwarder.reception_reports`."""

    ssrc: int
    fraction_lost: int  # 0-255: lost / expected in the interval, × 256
    cumulative_lost: int
    extended_highest_seq: int
    jitter: int = 0


@dataclass(slots=True)
class ForwarderConfig:
    queue_packets: int = 256  # per subscriber; ~0.5 s of 4 publishers' video + audio
    pli_interval: float = 1.0  # at most one PLI per publisher track per interval
    speaking_level: int = 70  # -dBov; a smoothed level louder than this counts as speech
    speaker_margin: float = 8.0  # loudness (dB) a challenger needs above the current speaker
    speaker_timeout: float = 1.0  # no audio level for this long counts as silence
    level_smoothing: float = 0.15  # EMA weight of one audio packet (~20 ms)
    # What one publisher may send (the SFU multiplies it by the subscriber count); well
    # above VP8 at 720p (~2.5 Mb/s) and Opus (~0.1 Mb/s), with a burst for keyframes.
    max_video_bps: int = 6_000_000
    max_audio_bps: int = 300_000
    rate_burst_seconds: float = 0.5
    # Drop packets arriving this much later than their media time says (None: never);
    # after stale_reset seconds of it, assume the sender's timestamps jumped instead.
    stale_after: float | None = 0.4
    stale_reset: float = 2.0
    # Drop frames under a key id that is not the publisher's (participants added with a
    # sender_index). Off only to show that receivers refuse such frames on their own.
    check_key_ids: bool = True
    # Retransmission: answer subscribers' NACKs from a per-video-up-track history, ask
    # publishers for what never arrived. history_packets: a power of two (~2 s of 720p).
    retransmit: bool = True
    history_packets: int = 512
    nack_interval: float = 0.05  # ask a publisher again for one packet after this long
    nack_give_up: float = 0.3  # ... until this long after the first ask (receivers move on)
    nack_gap_max: int = 64  # a bigger jump in a publisher's numbering is not NACKed
    # Sequence numbers asked of one up-track at a time: a publisher skipping 64 at every
    # packet would otherwise make each tiny packet a NACK back and grow the table to 65 536
    # entries, walked on every tick (real loss asks for a few dozen at most).
    nack_pending_max: int = 256
    # Retransmissions one subscriber may ask for (token bucket, packets): at 20 % loss on six
    # top-layer slots a receiver asks for ~200 a second. A NACK of 17 packets fits in 4 bytes,
    # so without a bound one RTCP compound asked for thousands of 1.2 kB packets.
    retransmit_per_second: float = 400.0
    retransmit_burst: float = 400.0
    # Bandwidth adaptation (issue 13): each subscriber's video slots get the simulcast layer
    # its downlink estimate, its tile size and the active speaker call for (sfu/layers.py),
    # switched on the new layer's keyframe. Off: always the top layer, feedback ignored.
    adapt: bool = True
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    allocate_interval: float = 0.5  # re-run the allocation (and measure rates) this often
    layer_silent_after: float = 1.0  # a layer with no packet for this long is not arriving


class _UpTrack:
    __slots__ = (
        "audio_level_id",
        "bitrate",
        "bytes_in",
        "clock_rate",
        "down",
        "frame_ok",
        "group",
        "height",
        "history",
        "kind",
        "layer",
        "level_at",
        "loudness",
        "max_seq",
        "min_lag",
        "muted",
        "nack_at",
        "owner",
        "payload_types",
        "pli_pending",
        "pli_sent_at",
        "received",
        "refill_at",
        "rid",
        "rr_base",
        "rr_max",
        "rr_prior_expected",
        "rr_prior_received",
        "rtx_apt",
        "rtx_payload_type",
        "seen_at",
        "ssrc",
        "stale_since",
        "switching",
        "tokens",
        "ts_ext",
        "ts_last",
    )

    def __init__(
        self, owner: _Participant, spec: UpTrackSpec, layer: int = 0, rid: str | None = None
    ) -> None:
        self.owner = owner
        self.kind: Kind = spec.kind
        self.ssrc = spec.ssrc  # 0 for a simulcast layer until its first packet names it
        # Simulcast: this track is layer ``layer`` of ``group`` (the publisher's layers of one
        # source, lowest first; [self] without simulcast). Slots route to the group; each
        # subscriber gets one layer of it. ``switching``: slots moving onto this layer at its
        # next keyframe.
        self.group: list[_UpTrack] = [self]
        self.layer = layer
        self.rid = rid
        self.switching: set[_DownTrack] = set()
        self.bytes_in = 0  # forwardable bytes since the last rate measurement
        self.bitrate = 0.0  # bit/s, smoothed
        self.height = 0  # picture height of its last keyframe (clear VP8 header), 0: unknown
        # Reception, for the receiver reports sent to the publisher: packets received, the
        # first and highest extended sequence numbers, and their values at the last report.
        self.received = 0
        self.rr_base = 0
        self.rr_max = 0
        self.rr_prior_expected = 0
        self.rr_prior_received = 0
        self.payload_types = spec.payload_types
        self.audio_level_id = spec.audio_level_id
        self.muted = False
        # The KID check's verdict on the frame in progress: a VP8 frame's later packets
        # carry no SFrame header and follow its first packet's verdict.
        self.frame_ok = False
        self.down: set[_DownTrack] = set()
        self.pli_sent_at = -1e9
        self.pli_pending = False
        self.loudness = 0.0  # 127 - smoothed level: 0 silent … 127 loudest
        self.level_at = -1e9
        self.tokens = 0.0  # rate limit: bytes this track may still send now
        self.refill_at: float | None = None
        # Staleness: arrival time minus media time, against the smallest seen so far.
        self.clock_rate = 90_000 if is_video(spec.kind) else 48_000  # RFC 7741, RFC 7587
        self.ts_last: int | None = None
        self.ts_ext = 0  # unwrapped RTP timestamp
        self.min_lag = 0.0
        self.seen_at = 0.0
        self.stale_since: float | None = None
        # Retransmission (video only, when on): the packets as they arrived, by sequence
        # number modulo the size; the highest sequence number seen (-1: none yet); when each
        # missing one was last asked of the publisher (seq -> time, pruned on the way).
        self.history: list[bytes | None] | None = None
        self.max_seq = -1
        self.nack_at: dict[int, tuple[float, float]] = {}  # seq -> first, last asked
        self.rtx_payload_type = spec.rtx_payload_type
        self.rtx_apt = spec.rtx_apt


class _DownTrack:
    __slots__ = (
        "abs_send_time_id",
        "audio_level_id",
        "clock_rate",
        "epoch_seq",
        "kind",
        "last_sent_at",
        "last_seq",
        "last_ts",
        "owner",
        "paused",
        "payload_type",
        "resync",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "sent_any",
        "seq_offset",
        "source",
        "ssrc",
        "target",
        "ts_offset",
        "view_height",
        "waiting_keyframe",
    )

    def __init__(self, owner: _Participant, spec: DownTrackSpec) -> None:
        self.owner = owner
        self.kind: Kind = spec.kind
        self.ssrc = spec.ssrc
        self.payload_type = spec.payload_type
        self.clock_rate = spec.clock_rate
        self.audio_level_id = spec.audio_level_id
        self.source: _UpTrack | None = None
        self.waiting_keyframe = False
        self.resync = True
        self.seq_offset = 0
        self.ts_offset = 0
        # Start numbering somewhere unguessable (the SSRC is random) and low enough that
        # SRTP's rollover guess is never confused by an early wrap (as aiortc does).
        self.last_seq = (spec.ssrc & 0x7FFF) - 1
        self.last_ts = (spec.ssrc * 2654435761) & 0xFFFFFFFF
        self.sent_any = False
        self.last_sent_at = 0.0
        # The first outbound sequence number under the current offsets: a NACK for an
        # earlier one cannot be mapped back onto the source's numbering.
        self.epoch_seq = 0
        self.rtx_ssrc = spec.rtx_ssrc
        self.rtx_payload_type = spec.rtx_payload_type
        self.rtx_seq = (spec.ssrc >> 3) & 0x7FFF  # RTX numbering of its own (RFC 4588 §4)
        self.abs_send_time_id = spec.abs_send_time_id
        # Layers: ``source`` is the layer forwarded now; ``target`` the one it moves to at
        # that layer's next keyframe; ``paused``: nothing forwarded (a hidden tile).
        self.target: _UpTrack | None = None
        self.paused = False
        self.view_height: int | None = None  # as the subscriber shows it; None: unknown


@dataclass(slots=True)
class _Counters:
    packets_in: int = 0
    bytes_in: int = 0
    dropped_malformed: int = 0
    dropped_unknown: int = 0
    dropped_kid: int = 0  # frames under a key id that is not this publisher's
    dropped_muted: int = 0
    dropped_rate: int = 0
    dropped_stale: int = 0
    dropped_queue: int = 0
    keyframe_requests: int = 0
    # Retransmission: sequence numbers this participant NACKed as a subscriber, packets
    # re-sent to it from history; sequence numbers asked of it as a publisher, its
    # retransmissions that filled a gap, and those that duplicated what had arrived.
    nacks_received: int = 0
    retransmits: int = 0
    dropped_nacks: int = 0  # sequence numbers NACKed past its retransmission budget
    nacks_upstream: int = 0
    recovered: int = 0
    dropped_duplicate: int = 0
    layer_switches: int = 0  # as a subscriber: a slot moved to another simulcast layer


COUNTER_NAMES = tuple(_Counters.__dataclass_fields__)


def _add_counters(into: _Counters, other: _Counters) -> None:
    for name in COUNTER_NAMES:
        setattr(into, name, getattr(into, name) + getattr(other, name))


@dataclass(eq=False)
class _Participant:
    pid: str
    order: int
    downlink: DownlinkEstimate
    uplink: UplinkEstimate
    sender_index: int | None = None  # the index its SFrame key ids must name (None: any)
    tracks: list[_UpTrack] = field(default_factory=list)  # every up-track, layers included
    uptracks: dict[int, _UpTrack] = field(default_factory=dict)  # by SSRC, once known
    rtx_uptracks: dict[int, _UpTrack] = field(default_factory=dict)  # RTX SSRC -> its track
    # Simulcast layers whose SSRC (RTX SSRC) is not known yet, by RID; the extension ids.
    unbound: dict[str, _UpTrack] = field(default_factory=dict)
    unbound_rtx: dict[str, _UpTrack] = field(default_factory=dict)
    rid_ext_id: int | None = None
    repaired_rid_ext_id: int | None = None
    downtracks: list[_DownTrack] = field(default_factory=list)
    queue: deque[tuple[_DownTrack, bytes]] = field(default_factory=deque)
    counters: _Counters = field(default_factory=_Counters)
    last_spoke: float = -1e9
    send: Sink | None = None
    sent: int = 0  # packets handed to ``send``
    bytes_sent: int = 0  # since the last rate measurement
    send_bps: float = 0.0  # what the SFU sends it, smoothed
    report_bytes_in: int = 0  # counters.bytes_in at the last reception report ...
    report_at: float | None = None  # ... and when
    retransmit_tokens: float = -1.0  # retransmissions it may still ask for (-1: a full bucket)
    retransmit_at: float = 0.0


class Forwarder:
    """Routing state of one conference. Not thread-safe: call it from one event loop."""

    def __init__(self, config: ForwarderConfig | None = None, clock: Clock = time.monotonic):
        self.config = config or ForwarderConfig()
        history = self.config.history_packets
        if history < 1 or history & (history - 1):
            raise ValueError(f"history_packets must be a power of two, not {history}")
        self._clock = clock
        self._participants: dict[str, _Participant] = {}
        self._joins = 0
        self._events: list[Event] = []
        self._speaker: _Participant | None = None
        self.plis_sent = 0
        self.plis_coalesced = 0
        self._gone = _Counters()  # the counters of participants removed since
        self._measured_at: float | None = None  # last rate measurement and allocation

    # ------------------------------------------------------------------ membership

    def add_participant(
        self,
        participant_id: str,
        uptracks: Sequence[UpTrackSpec] = (),
        downtracks: Sequence[DownTrackSpec] = (),
        *,
        sender_index: int | None = None,
    ) -> None:
        """Start routing for a participant (raises ``ValueError`` if already present).

        With ``sender_index``, only frames under that sender's SFrame key ids are forwarded
        and every forwarded packet carries the index as its CSRC; without it (tests, tools)
        the key id is not checked and packets carry no CSRC.
        """
        if participant_id in self._participants:
            raise ValueError(f"participant {participant_id!r} is already forwarded")
        if sender_index is not None and not 0 <= sender_index <= 0xFFFFFFFF:
            raise ValueError("a sender index is a 32-bit CSRC")
        self._joins += 1
        now = self._clock()
        bandwidth = self.config.bandwidth
        p = _Participant(
            participant_id,
            self._joins,
            DownlinkEstimate(bandwidth, now),
            UplinkEstimate(bandwidth),
            sender_index,
        )
        for spec in uptracks:
            if spec.rids and is_video(spec.kind):
                self._add_layers(p, spec)
                continue
            up = p.uptracks[spec.ssrc] = _UpTrack(p, spec)
            p.tracks.append(up)
            if is_video(spec.kind) and self.config.retransmit:
                up.history = [None] * self.config.history_packets
                if spec.rtx_ssrc is not None and spec.rtx_payload_type is not None:
                    p.rtx_uptracks[spec.rtx_ssrc] = up
        p.downtracks = [_DownTrack(p, spec) for spec in downtracks]
        self._participants[participant_id] = p
        for other in self._participants.values():
            self._fill_slots(other)

    def remove_participant(self, participant_id: str) -> None:
        """Stop routing to and from a participant (kick, leave, disconnect). Idempotent."""
        p = self._participants.pop(participant_id, None)
        if p is None:
            return
        for up in p.tracks:
            for dt in [*up.down, *up.switching]:
                self._detach(dt)
        for dt in p.downtracks:
            self._detach(dt)
        p.queue.clear()
        _add_counters(self._gone, p.counters)
        if self._speaker is p:
            self._speaker = None
            self._events.append(SpeakerChanged(None))
        for other in self._participants.values():
            self._fill_slots(other)

    def __contains__(self, participant_id: object) -> bool:
        return participant_id in self._participants

    def participant_ids(self) -> list[str]:
        return list(self._participants)

    def set_sink(self, participant_id: str, send: Sink | None) -> None:
        """Send the participant's packets straight through ``send`` while it takes them.

        ``send`` must not block; when it returns False the packet (and every later one,
        in order) waits in the participant's bounded queue for :meth:`drain`. Without a
        sink every packet waits for :meth:`drain`.
        """
        self._participants[participant_id].send = send

    def set_muted(self, participant_id: str, kind: Kind, muted: bool) -> None:
        """Drop (``muted``) or forward again a participant's up-track(s) of ``kind``."""
        p = self._participants.get(participant_id)
        if p is None:
            raise KeyError(participant_id)
        for up in p.tracks:
            if up.kind != kind or up.muted == muted:
                continue
            up.muted = muted
            if muted:
                up.loudness = 0.0
                continue
            for dt in up.down:
                dt.resync = True  # the gap must not look like packet loss
                if is_video(kind):
                    dt.waiting_keyframe = True
            if is_video(kind) and up.down:
                self._request_keyframe(up)

    def is_muted(self, participant_id: str, kind: Kind) -> bool:
        p = self._participants[participant_id]
        return any(up.muted for up in p.tracks if up.kind == kind)

    # ------------------------------------------------------------------ media

    def on_rtp(self, participant_id: str, data: bytes) -> list[str]:
        """Route one inbound RTP packet; return the subscribers left with queued output.

        Never raises on malformed input: such packets are counted and dropped.
        """
        p = self._participants.get(participant_id)
        if p is None:
            return []
        c = p.counters
        c.packets_in += 1
        c.bytes_in += len(data)
        hdr = rtp.parse_rtp(data)
        if hdr is None:
            c.dropped_malformed += 1
            return []
        up = p.uptracks.get(hdr.ssrc)
        if up is None and (p.unbound or p.unbound_rtx) and hdr.ssrc not in p.rtx_uptracks:
            self._learn_layer_ssrc(p, data, hdr)
            up = p.uptracks.get(hdr.ssrc)
        if up is None:
            up = p.rtx_uptracks.get(hdr.ssrc)
            if up is None or hdr.payload_type != up.rtx_payload_type or up.rtx_apt is None:
                c.dropped_unknown += 1
                return []
            if hdr.payload_end == hdr.payload_start:
                return []  # padding only: a browser probing bandwidth over its RTX stream
            unwrapped = _unwrap_rtx(data, hdr, up.rtx_apt, up.ssrc)
            hdr = rtp.parse_rtp(unwrapped) if unwrapped is not None else None
            if unwrapped is None or hdr is None:
                c.dropped_malformed += 1
                return []
            data = unwrapped
        elif hdr.payload_type not in up.payload_types:
            c.dropped_unknown += 1
            return []
        else:  # what arrived on the media stream itself: for receiver reports
            up.received += 1
            if up.received == 1:
                up.rr_base = up.rr_max = hdr.sequence
            else:
                ahead = (hdr.sequence - up.rr_max) & 0xFFFF
                if ahead < 0x8000:
                    up.rr_max += ahead
        if up.muted:
            c.dropped_muted += 1
            return []
        now = self._clock()
        # Retransmission: a gap in the publisher's numbering is asked for at once; a packet
        # older than the newest is a retransmission (or reordered), forwarded if it fills a
        # gap, dropped if it was here already.
        history = up.history
        late = False
        if history is not None:
            seq = hdr.sequence
            ahead = (seq - up.max_seq) & 0xFFFF
            if ahead == 1 or up.max_seq < 0:
                up.max_seq = seq
            elif ahead == 0:
                c.dropped_duplicate += 1
                return []
            elif ahead < 0x8000:
                if ahead <= self.config.nack_gap_max:
                    missing = [(up.max_seq + i) & 0xFFFF for i in range(1, ahead)]
                    self._nack_upstream(up, missing, now)
                up.max_seq = seq
            else:
                old = history[seq & (len(history) - 1)]
                if old is not None and old[2] == data[2] and old[3] == data[3]:
                    c.dropped_duplicate += 1
                    return []
                late = True
                if up.nack_at.pop(seq, None) is not None:
                    c.recovered += 1
        video = is_video(up.kind)
        # Where the VP8 frame starts, parsed once for the key id and the keyframe flag.
        vp8_start = rtp.vp8_frame_start(data, hdr) if video else -1
        index = p.sender_index
        if index is not None and self.config.check_key_ids:
            kid = rtp.sframe_kid_at(data, hdr, vp8_start if video else None)
            if late:  # an old frame's packet: its own verdict, not the current frame's
                ok = up.frame_ok if kid == rtp.NOT_FRAME_START else _kid_ok(kid, index)
            else:
                if kid != rtp.NOT_FRAME_START:
                    up.frame_ok = _kid_ok(kid, index)
                ok = up.frame_ok
            if not ok:
                c.dropped_kid += 1
                return []
        if not self._within_rate(up, len(data), now):
            c.dropped_rate += 1
            return []
        # The track's rate, as the layer allocation weighs it in every subscriber's budget:
        # only what may be forwarded. Bytes dropped above (muted, another's key id, over the
        # limit) cost subscribers nothing and must not push their video down.
        up.bytes_in += len(data)
        if late:
            return self._forward_late(up, data, hdr)
        if self._stale(up, hdr.timestamp, now):
            c.dropped_stale += 1
            for dt in up.down:  # the picture breaks: resume on a keyframe
                if is_video(dt.kind):
                    dt.waiting_keyframe = True
            return []
        keyframe = False
        level = -1
        if video:
            keyframe = vp8_start >= 0 and data[vp8_start] & 0x01 == 0  # RFC 6386 §9.1
            if keyframe:
                up.pli_pending = False
                # The keyframe header (start code, then 14-bit width and height, little
                # endian) is kept in clear by SFrame: the layer's picture height.
                if hdr.payload_end >= vp8_start + 10 and data[vp8_start + 3] == 0x9D:
                    up.height = (data[vp8_start + 8] | data[vp8_start + 9] << 8) & 0x3FFF
                if up.switching:
                    self._switch_to(up)
        elif up.audio_level_id is not None:
            found = rtp.audio_level(data, hdr, up.audio_level_id)
            if found is not None:
                level = found
                up.loudness += self.config.level_smoothing * ((127 - level) - up.loudness)
                up.level_at = now
        if history is not None:
            history[hdr.sequence & (len(history) - 1)] = data
        if not up.down:
            return []
        payload = data[hdr.payload_start : hdr.payload_end]
        seq, ts, marker = hdr.sequence, hdr.timestamp, hdr.marker
        touched: list[str] = []
        # abs-send-time is the same for every copy of this packet: built once per extension id
        # the subscribers negotiated (almost always one), not once per copy.
        abs_ext: dict[int, bytes] = {}
        for dt in up.down:
            if dt.paused:
                continue
            if dt.waiting_keyframe:
                if not keyframe:
                    continue
                dt.waiting_keyframe = False
                dt.resync = True
            if dt.resync:
                self._resync(dt, seq, ts, now)
            out_seq = (seq + dt.seq_offset) & 0xFFFF
            out_ts = (ts + dt.ts_offset) & 0xFFFFFFFF
            if rtp.seq_newer(out_seq, dt.last_seq):
                dt.last_seq = out_seq
                dt.last_ts = out_ts
            dt.last_sent_at = now
            ext = b""
            if level >= 0 and dt.audio_level_id is not None:
                ext = rtp.build_audio_level_extension(dt.audio_level_id, level)
            elif dt.abs_send_time_id is not None:
                ext = abs_ext.get(dt.abs_send_time_id, b"")
                if not ext:
                    send_time = int(now * 262144) & 0xFFFFFF  # 6.18 fixed-point seconds
                    ext = rtp.build_abs_send_time_extension(dt.abs_send_time_id, send_time)
                    abs_ext[dt.abs_send_time_id] = ext
            packet = rtp.build_rtp(
                marker, dt.payload_type, out_seq, out_ts, dt.ssrc, payload, ext, index
            )
            sub = dt.owner
            sub.bytes_sent += len(packet)
            send = sub.send
            if send is not None and not sub.queue and send(packet):
                sub.sent += 1
                continue
            self._enqueue(dt, packet)
            touched.append(sub.pid)
        return touched

    def drain(self, participant_id: str, send: Callable[[bytes], bool]) -> int:
        """Hand a subscriber's queued packets to ``send`` until it returns False (congested).

        Returns how many packets were sent; the rest stay queued for the next call.
        """
        p = self._participants.get(participant_id)
        if p is None:
            return 0
        q = p.queue
        sent = 0
        while q:
            if not send(q[0][1]):
                break
            q.popleft()
            sent += 1
        p.sent += sent
        return sent

    def sent_to(self, participant_id: str) -> int:
        """Packets handed to this participant's sink so far (0 if unknown)."""
        p = self._participants.get(participant_id)
        return p.sent if p is not None else 0

    def queued(self, participant_id: str) -> int:
        p = self._participants.get(participant_id)
        return len(p.queue) if p is not None else 0

    def on_keyframe_request(self, participant_id: str, downtrack_ssrc: int) -> None:
        """A subscriber sent PLI/FIR for one of its slots: ask that slot's publisher."""
        p = self._participants.get(participant_id)
        if p is None:
            return
        for dt in p.downtracks:
            if dt.ssrc == downtrack_ssrc and dt.source is not None:
                self._request_keyframe(dt.source)
                return

    def on_nack(self, participant_id: str, downtrack_ssrc: int, sequences: Iterable[int]) -> int:
        """A subscriber NACKed ``sequences`` (its numbering) on one of its slots: re-send
        what the history holds (RTX where negotiated), ask the publisher for the rest.

        Returns how many packets were re-sent (or queued behind a congested socket).
        """
        p = self._participants.get(participant_id)
        if p is None:
            return 0
        asked = list(sequences)
        p.counters.nacks_received += len(asked)
        dt = next((d for d in p.downtracks if d.ssrc == downtrack_ssrc), None)
        up = dt.source if dt is not None else None
        if (
            dt is None
            or up is None
            or up.history is None
            or dt.waiting_keyframe
            or dt.resync
            or dt.paused
        ):
            return 0
        history = up.history
        mask = len(history) - 1
        missing: list[int] = []
        sent = 0
        cfg = self.config
        now = self._clock()
        tokens = p.retransmit_tokens
        if tokens < 0:
            tokens = cfg.retransmit_burst
        else:
            elapsed = now - p.retransmit_at
            tokens = min(cfg.retransmit_burst, tokens + elapsed * cfg.retransmit_per_second)
        p.retransmit_at = now
        for out_seq in asked:
            if tokens < 1:
                p.counters.dropped_nacks += 1
                continue
            tokens -= 1
            out_seq &= 0xFFFF
            # Only what this subscriber was sent under the current offsets maps back.
            if rtp.seq_newer(dt.epoch_seq, out_seq) or rtp.seq_newer(out_seq, dt.last_seq):
                continue
            seq = (out_seq - dt.seq_offset) & 0xFFFF
            data = history[seq & mask]
            if data is None or (data[2] << 8) | data[3] != seq:
                missing.append(seq)
                continue
            hdr = rtp.parse_rtp(data)
            assert hdr is not None  # history holds only packets that parsed
            self._send(dt, self._retransmission(dt, data, hdr))
            sent += 1
        p.retransmit_tokens = tokens
        p.counters.retransmits += sent
        if missing:
            self._nack_upstream(up, missing, now)
        return sent

    # ------------------------------------------------------------------ bandwidth

    def on_feedback(
        self,
        subscriber_id: str,
        *,
        remb_bps: float | None = None,
        fraction_lost: float | None = None,
    ) -> None:
        """Congestion feedback from a subscriber: its REMB (one figure for all it receives)
        and/or the worst fraction lost (0.0-1.0) in its receiver reports on our slots."""
        p = self._participants.get(subscriber_id)
        if p is None:
            return
        now = self._clock()
        before = p.downlink.budget(now)
        if remb_bps is not None and remb_bps > 0:
            p.downlink.on_remb(float(remb_bps), p.send_bps, now)
        if fraction_lost is not None and 0.0 <= fraction_lost <= 1.0:
            p.downlink.on_loss(fraction_lost, p.send_bps, now)
        if p.downlink.budget(now) < before:
            self._allocate(p, now)  # congestion: step down now, not on the next tick

    def set_view(self, subscriber_id: str, heights: Mapping[int, int]) -> None:
        """How tall (px) the subscriber shows each slot, by slot SSRC; 0: not shown. Slots
        not named keep what they had (at first: unknown, as big as there is)."""
        p = self._participants.get(subscriber_id)
        if p is None:
            return
        changed = False
        for dt in p.downtracks:
            height = heights.get(dt.ssrc)
            if height is not None and is_video(dt.kind):
                height = max(0, min(int(height), 0x3FFF))
                changed = changed or height != dt.view_height
                dt.view_height = height
        if changed:
            self._allocate(p, self._clock())

    def layers(self, subscriber_id: str) -> dict[int, int | None]:
        """Slot SSRC → the layer forwarded into it (0 lowest; ``None``: nothing or paused)."""
        p = self._participants[subscriber_id]
        return {
            dt.ssrc: None if dt.source is None or dt.paused else dt.source.layer
            for dt in p.downtracks
            if is_video(dt.kind)
        }

    def reception_reports(self, participant_id: str) -> list[Reception]:
        """What to tell a publisher in RTCP receiver reports, per up-track with packets,
        since the previous call (the edge calls this about once a second per publisher);
        also feeds the publisher's :meth:`uplink_estimate`."""
        p = self._participants.get(participant_id)
        if p is None:
            return []
        reports: list[Reception] = []
        worst = 0.0
        for up in p.tracks:
            if up.received == 0:
                continue
            expected = up.rr_max - up.rr_base + 1
            interval = expected - up.rr_prior_expected
            lost = interval - (up.received - up.rr_prior_received)
            fraction = (lost << 8) // interval if interval > 0 and lost > 0 else 0
            up.rr_prior_expected, up.rr_prior_received = expected, up.received
            if is_video(up.kind):
                worst = max(worst, fraction / 256)
            reports.append(
                Reception(
                    up.ssrc,
                    min(255, fraction),
                    min(0x7FFFFF, max(0, expected - up.received)),
                    up.rr_max & 0xFFFFFFFF,
                )
            )
        now = self._clock()
        bytes_in = p.counters.bytes_in
        if p.report_at is not None and now > p.report_at:
            bps = (bytes_in - p.report_bytes_in) * 8 / (now - p.report_at)
            p.uplink.on_interval(worst, bps)
        p.report_at, p.report_bytes_in = now, bytes_in
        return reports

    def uplink_estimate(self, participant_id: str) -> int | None:
        """The bit rate to announce to a publisher (REMB); ``None`` before it sent anything."""
        p = self._participants.get(participant_id)
        if p is None or not any(up.received for up in p.tracks):
            return None
        return int(p.uplink.estimate)

    def tick(self) -> None:
        """Periodic work (call every 50-200 ms): deferred PLIs, NACKs asked again, speaker."""
        now = self._clock()
        for p in self._participants.values():
            for up in p.tracks:
                if not is_video(up.kind) or up.muted:
                    continue
                waiting = (
                    up.pli_pending
                    or bool(up.switching)
                    or any(dt.waiting_keyframe and not dt.paused for dt in up.down)
                )
                if waiting and now - up.pli_sent_at >= self.config.pli_interval:
                    self._send_pli(up, now)
                if up.nack_at:
                    self._nack_again(up, now)
        self._update_speaker(now)
        if self._measured_at is None:
            self._measured_at = now
        elif now - self._measured_at >= self.config.allocate_interval:
            self._measure_rates(now - self._measured_at)
            self._measured_at = now
            for sub in self._participants.values():
                self._allocate(sub, now)

    @property
    def has_events(self) -> bool:
        """Events are waiting (the edge sends upstream NACKs right away, not on the tick)."""
        return bool(self._events)

    def events(self) -> list[Event]:
        """Events since the last call (keyframe requests to send, speaker changes)."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ introspection

    @property
    def packets_sent(self) -> int:
        """Packets handed to subscribers' sinks so far (participants still present)."""
        return sum(p.sent for p in self._participants.values())

    @property
    def active_speaker(self) -> str | None:
        return self._speaker.pid if self._speaker is not None else None

    def routes(self, participant_id: str) -> dict[int, str | None]:
        """Slot SSRC → publisher currently routed into it, for one subscriber."""
        p = self._participants[participant_id]
        return {dt.ssrc: dt.source.owner.pid if dt.source else None for dt in p.downtracks}

    def totals(self) -> dict[str, int]:
        """Every participant's counters summed, those removed included, and the PLIs sent:
        what ``/metrics`` reports (no participant named)."""
        total = _Counters()
        _add_counters(total, self._gone)
        for p in self._participants.values():
            _add_counters(total, p.counters)
        result = {name: getattr(total, name) for name in COUNTER_NAMES}
        result["plis_sent"] = self.plis_sent
        return result

    def stats(self) -> dict[str, object]:
        now = self._clock()
        participants: dict[str, dict[str, int]] = {}
        for pid, p in self._participants.items():
            c = p.counters
            participants[pid] = {
                "packets_in": c.packets_in,
                "bytes_in": c.bytes_in,
                "packets_out": p.sent,
                "dropped_malformed": c.dropped_malformed,
                "dropped_unknown": c.dropped_unknown,
                "dropped_kid": c.dropped_kid,
                "dropped_muted": c.dropped_muted,
                "dropped_rate": c.dropped_rate,
                "dropped_stale": c.dropped_stale,
                "dropped_queue": c.dropped_queue,
                "queued": len(p.queue),
                "keyframe_requests": c.keyframe_requests,
                "nacks_received": c.nacks_received,
                "retransmits": c.retransmits,
                "dropped_nacks": c.dropped_nacks,
                "nacks_upstream": c.nacks_upstream,
                "recovered": c.recovered,
                "dropped_duplicate": c.dropped_duplicate,
                "layer_switches": c.layer_switches,
                "estimate_bps": int(p.downlink.budget(now)),
                "send_bps": int(p.send_bps),
                # Slots getting a simulcast layer above the lowest (see :meth:`layers`).
                "upper_layer_slots": sum(
                    1 for dt in p.downtracks if dt.source is not None and dt.source.layer
                ),
            }
        return {
            "participants": participants,
            "packets_out": self.packets_sent,
            "active_speaker": self.active_speaker,
            "plis_sent": self.plis_sent,
            "plis_coalesced": self.plis_coalesced,
        }

    # ------------------------------------------------------------------ internals

    def _within_rate(self, up: _UpTrack, size: int, now: float) -> bool:
        """Token bucket per up-track: every byte a publisher sends is multiplied by the
        subscriber count, so a flood (or a runaway encoder) is cut at the door."""
        cfg = self.config
        rate = (cfg.max_video_bps if is_video(up.kind) else cfg.max_audio_bps) / 8
        burst = rate * cfg.rate_burst_seconds
        if up.refill_at is None:
            tokens = burst
        else:
            tokens = min(burst, up.tokens + (now - up.refill_at) * rate)
        up.refill_at = now
        if tokens < size:
            up.tokens = tokens
            return False
        up.tokens = tokens - size
        return True

    def _stale(self, up: _UpTrack, ts: int, now: float) -> bool:
        """Is this packet far later than its media time says it should be?

        The lag (arrival time - RTP time) of the earliest packets is the baseline; when the
        node falls behind (a CPU stall, a burst of joins) packets pile up in its sockets and
        arrive with a bigger lag. Dropping those costs ~nothing and lets the node catch up
        instead of forwarding seconds-old media (and starving ICE consent checks).
        """
        cfg = self.config
        if up.ts_last is None:
            up.ts_last = ts
            up.min_lag = now
            up.seen_at = now
            return False
        delta = (ts - up.ts_last) & 0xFFFFFFFF
        up.ts_ext += delta if delta < 0x80000000 else delta - 0x100000000
        up.ts_last = ts
        lag = now - up.ts_ext / up.clock_rate
        # The baseline may creep up 1 ms/s: clocks drift, the path's delay changes.
        up.min_lag = min(lag, up.min_lag + (now - up.seen_at) * 0.001)
        up.seen_at = now
        if cfg.stale_after is None or lag - up.min_lag <= cfg.stale_after:
            up.stale_since = None
            return False
        if up.stale_since is None:
            up.stale_since = now
        elif now - up.stale_since > cfg.stale_reset:
            up.min_lag = lag  # stale for long: the sender's timeline jumped, not us
            up.stale_since = None
            return False
        return True

    def _resync(self, dt: _DownTrack, seq: int, ts: int, now: float) -> None:
        # Continue the subscriber's numbering right after what it last got, and advance
        # its timestamps by the wall time elapsed, whatever the source's own numbering.
        dt.seq_offset = (dt.last_seq + 1 - seq) & 0xFFFF
        gap = max(1, round((now - dt.last_sent_at) * dt.clock_rate)) if dt.sent_any else 0
        dt.ts_offset = (dt.last_ts + gap - ts) & 0xFFFFFFFF
        dt.resync = False
        dt.sent_any = True
        dt.epoch_seq = (dt.last_seq + 1) & 0xFFFF

    def _send(self, dt: _DownTrack, packet: bytes) -> None:
        sub = dt.owner
        send = sub.send
        sub.bytes_sent += len(packet)
        if send is not None and not sub.queue and send(packet):
            sub.sent += 1
        else:
            self._enqueue(dt, packet)

    def _retransmission(
        self, dt: _DownTrack, data: bytes, hdr: rtp.RtpHeader, rtx: bool = True
    ) -> bytes:
        """A history packet re-headed for ``dt`` as first sent; with ``rtx``, wrapped in RTX
        (RFC 4588 §4: the original sequence number, then the payload) where the slot
        negotiated it."""
        assert dt.source is not None
        out_seq = (hdr.sequence + dt.seq_offset) & 0xFFFF
        out_ts = (hdr.timestamp + dt.ts_offset) & 0xFFFFFFFF
        payload = data[hdr.payload_start : hdr.payload_end]
        index = dt.source.owner.sender_index
        if not rtx or dt.rtx_payload_type is None or dt.rtx_ssrc is None:
            return rtp.build_rtp(
                hdr.marker, dt.payload_type, out_seq, out_ts, dt.ssrc, payload, b"", index
            )
        rtx_seq, dt.rtx_seq = dt.rtx_seq, (dt.rtx_seq + 1) & 0xFFFF
        wrapped = out_seq.to_bytes(2, "big") + payload
        return rtp.build_rtp(
            hdr.marker, dt.rtx_payload_type, rtx_seq, out_ts, dt.rtx_ssrc, wrapped, b"", index
        )

    def _forward_late(self, up: _UpTrack, data: bytes, hdr: rtp.RtpHeader) -> list[str]:
        """A retransmitted packet the SFU lacked: to every subscriber that was sent its
        neighbours (same offsets), in its original place in their numbering."""
        history = up.history
        assert history is not None
        history[hdr.sequence & (len(history) - 1)] = data
        touched: list[str] = []
        for dt in up.down:
            if dt.waiting_keyframe or dt.resync or dt.paused:
                continue
            out_seq = (hdr.sequence + dt.seq_offset) & 0xFFFF
            if rtp.seq_newer(dt.epoch_seq, out_seq) or rtp.seq_newer(out_seq, dt.last_seq):
                continue
            sub = dt.owner
            before = len(sub.queue)
            self._send(dt, self._retransmission(dt, data, hdr, rtx=False))
            if len(sub.queue) > before:
                touched.append(sub.pid)
        return touched

    def _nack_upstream(self, up: _UpTrack, sequences: list[int], now: float) -> None:
        """Ask the publisher for ``sequences``, each at most once per ``nack_interval``."""
        asked = up.nack_at
        interval = self.config.nack_interval
        room = self.config.nack_pending_max - len(asked)
        fresh = []
        for seq in sequences:
            entry = asked.get(seq)
            if entry is None:
                if room <= 0:
                    continue  # full: what is asked already must be answered or given up first
                room -= 1
                entry = (now, -1e9)
            first, last = entry
            if now - last >= interval:
                asked[seq] = (first, now)
                fresh.append(seq)
        if not fresh:
            return
        up.owner.counters.nacks_upstream += len(fresh)
        self._events.append(NackRequest(up.owner.pid, up.ssrc, tuple(fresh)))

    def _nack_again(self, up: _UpTrack, now: float) -> None:
        """Ask the publisher again for what is still missing; forget what is too old."""
        cfg = self.config
        again = []
        for seq, (first, last) in list(up.nack_at.items()):
            if now - first >= cfg.nack_give_up:
                del up.nack_at[seq]
            elif now - last >= cfg.nack_interval:
                again.append(seq)
        if again:
            self._nack_upstream(up, again, now)

    def _enqueue(self, dt: _DownTrack, packet: bytes) -> None:
        p = dt.owner
        q = p.queue
        if len(q) >= self.config.queue_packets:
            old_dt, _ = q.popleft()
            p.counters.dropped_queue += 1
            # The subscriber's picture is now broken: stop feeding it deltas.
            source = old_dt.source
            if is_video(old_dt.kind) and source is not None and not old_dt.waiting_keyframe:
                old_dt.waiting_keyframe = True
                self._request_keyframe(source)
        q.append((dt, packet))

    def _request_keyframe(self, up: _UpTrack) -> None:
        if not is_video(up.kind) or up.muted:
            return
        now = self._clock()
        if now - up.pli_sent_at >= self.config.pli_interval:
            self._send_pli(up, now)
        else:
            up.pli_pending = True
            self.plis_coalesced += 1

    def _send_pli(self, up: _UpTrack, now: float) -> None:
        up.pli_sent_at = now
        up.pli_pending = False
        up.owner.counters.keyframe_requests += 1
        self.plis_sent += 1
        self._events.append(KeyframeRequest(up.owner.pid, up.ssrc))

    def _attach(self, dt: _DownTrack, up: _UpTrack) -> None:
        """Route ``up``'s source into ``dt``: with simulcast, its lowest layer to begin with
        (or the top one without adaptation); the allocation raises it once rates are known."""
        if dt.source is not None:
            self._detach(dt)
        layer = up.group[-1] if not self.config.adapt else up.group[0]
        # The subscriber sized the slot's tile for whoever it showed before: unknown again
        # until its next view (a slot it hid would otherwise hide the newcomer too).
        dt.view_height = None
        dt.source = layer
        layer.down.add(dt)
        dt.resync = True
        if is_video(dt.kind):
            dt.waiting_keyframe = True
            self._request_keyframe(layer)

    def _detach(self, dt: _DownTrack) -> None:
        if dt.source is not None:
            dt.source.down.discard(dt)
            dt.source = None
        if dt.target is not None:
            dt.target.switching.discard(dt)
            dt.target = None
        dt.waiting_keyframe = False
        dt.paused = False

    def _candidates(self, sub: _Participant, kind: Kind) -> list[_UpTrack]:
        """Other participants' up-tracks of ``kind``, most deserving of a slot first."""
        ups = [
            up
            for p in self._participants.values()
            if p is not sub
            for up in p.tracks
            if up.kind == kind and up.layer == 0  # a simulcast source counts once
        ]
        ups.sort(key=lambda up: (-up.owner.last_spoke, up.owner.order))
        return ups

    def _fill_slots(self, sub: _Participant) -> None:
        for kind in KINDS:
            free = [dt for dt in sub.downtracks if dt.kind == kind and dt.source is None]
            if not free:
                continue
            routed = {dt.source.group[0] for dt in sub.downtracks if dt.source is not None}
            for up in self._candidates(sub, kind):
                if not free:
                    break
                if up not in routed:
                    self._attach(free.pop(0), up)

    def _promote(self, speaker: _Participant) -> None:
        """Give the new speaker a slot at every subscriber that does not show it (last-N)."""
        for sub in self._participants.values():
            if sub is speaker:
                continue
            for up in speaker.tracks:
                if up.layer:
                    continue  # a simulcast source counts once (its lowest layer)
                slots = [dt for dt in sub.downtracks if dt.kind == up.kind]
                if not slots or any(
                    dt.source is not None and dt.source.group[0] is up for dt in slots
                ):
                    continue
                victim = min(
                    slots,
                    key=lambda dt: (
                        dt.source is not None,
                        dt.source.owner.last_spoke if dt.source else 0.0,
                        -(dt.source.owner.order if dt.source else 0),
                    ),
                )
                self._attach(victim, up)

    def _update_speaker(self, now: float) -> None:
        cfg = self.config
        threshold = 127 - cfg.speaking_level

        def loudness(p: _Participant) -> float:
            best = 0.0
            for up in p.tracks:
                if up.kind == "audio" and not up.muted and now - up.level_at < cfg.speaker_timeout:
                    best = max(best, up.loudness)
            return best

        best: _Participant | None = None
        best_loudness = 0.0
        for p in self._participants.values():
            value = loudness(p)
            if value > best_loudness:
                best, best_loudness = p, value
        if best is None or best_loudness < threshold:
            return  # silence keeps the last speaker (as conferencing UIs do)
        best.last_spoke = now
        current = self._speaker
        if best is current:
            return
        if current is not None and best_loudness < loudness(current) + cfg.speaker_margin:
            return
        self._speaker = best
        self._events.append(SpeakerChanged(best.pid))
        self._promote(best)

    # ------------------------------------------------------------------ layers

    def _add_layers(self, p: _Participant, spec: UpTrackSpec) -> None:
        """A simulcast source: one track per RID, SSRCs learned from the packets."""
        group: list[_UpTrack] = []
        for layer, rid in enumerate(spec.rids):
            up = _UpTrack(p, spec, layer, rid)
            up.ssrc = 0
            up.group = group
            group.append(up)
            p.tracks.append(up)
            p.unbound[rid] = up
            if self.config.retransmit:
                up.history = [None] * self.config.history_packets
                if spec.repaired_rid_ext_id is not None and spec.rtx_payload_type is not None:
                    p.unbound_rtx[rid] = up
        p.rid_ext_id = spec.rid_ext_id
        p.repaired_rid_ext_id = spec.repaired_rid_ext_id

    def _learn_layer_ssrc(self, p: _Participant, data: bytes, hdr: rtp.RtpHeader) -> None:
        """A packet on an SSRC not seen yet: if its RID names a layer still unbound, bind."""
        if p.rid_ext_id is not None and p.unbound:
            rid = rtp.find_extension(data, hdr, p.rid_ext_id)
            up = p.unbound.get(rid.decode("ascii", "replace")) if rid else None
            if up is not None and hdr.payload_type in up.payload_types:
                del p.unbound[up.rid or ""]
                up.ssrc = hdr.ssrc
                p.uptracks[hdr.ssrc] = up
                return
        if p.repaired_rid_ext_id is not None and p.unbound_rtx:
            rid = rtp.find_extension(data, hdr, p.repaired_rid_ext_id)
            up = p.unbound_rtx.get(rid.decode("ascii", "replace")) if rid else None
            if up is not None and hdr.payload_type == up.rtx_payload_type and up.ssrc:
                del p.unbound_rtx[up.rid or ""]
                p.rtx_uptracks[hdr.ssrc] = up

    def _switch_to(self, up: _UpTrack) -> None:
        """``up`` starts a keyframe: the slots waiting for this layer take it from here."""
        for dt in up.switching:
            if dt.source is not None:
                dt.source.down.discard(dt)
            dt.source = up
            dt.target = None
            up.down.add(dt)
            dt.waiting_keyframe = False
            dt.resync = True  # continue the subscriber's numbering across the switch
            dt.owner.counters.layer_switches += 1
        up.switching.clear()

    def _measure_rates(self, elapsed: float) -> None:
        for p in self._participants.values():
            for up in p.tracks:
                rate = up.bytes_in * 8 / elapsed
                up.bitrate = rate if up.bitrate == 0 else 0.5 * up.bitrate + 0.5 * rate
                up.bytes_in = 0
            rate = p.bytes_sent * 8 / elapsed
            p.send_bps = rate if p.send_bps == 0 else 0.5 * p.send_bps + 0.5 * rate
            p.bytes_sent = 0

    def _allocate(self, sub: _Participant, now: float) -> None:
        """Choose each video slot's layer (sfu/layers.py) and start the switches."""
        slots = [
            dt
            for dt in sub.downtracks
            if is_video(dt.kind) and dt.source is not None and not dt.source.muted
        ]
        if not slots:
            return
        silent = self.config.layer_silent_after
        needs: list[SlotNeed] = []
        for dt in slots:
            assert dt.source is not None
            source = dt.source.owner
            rank = 0 if dt.kind == "screen" else 1 if source is self._speaker else 2
            needs.append(
                SlotNeed(
                    [
                        # Arriving but not measured yet counts as arriving, nearly free.
                        Layer(max(up.bitrate, 1.0) if now - up.seen_at < silent else 0.0, up.height)
                        for up in dt.source.group
                    ],
                    dt.view_height if self.config.adapt else None,
                    # Then by who spoke last: seconds since (a clock's own value would pass
                    # any cap after days of uptime, and rank them all alike).
                    rank * 1_000_000
                    + (min(999_999, int(now - source.last_spoke)) if rank == 2 else 0),
                )
            )
        if not self.config.adapt:
            choice = allocate(float("inf"), needs)
        else:
            audio = sum(
                dt.source.bitrate
                for dt in sub.downtracks
                if dt.kind == "audio" and dt.source is not None
            )
            estimate = sub.downlink
            budget = estimate.budget(now) - audio
            choice = allocate(budget, needs)
            if estimate.can_trial(now):
                step = _next_step(needs, choice)
                if step is not None:
                    trial = allocate(budget + step * 1.1, needs)
                    if trial != choice:
                        estimate.start_trial(audio + _spend(needs, trial) * 1.1, now)
                        choice = trial
        for dt, need, layer in zip(slots, needs, choice, strict=True):
            if layer is None and (need.view_height != 0 or not self.config.adapt):
                continue  # nothing of it arriving: leave the slot as it is
            self._apply_layer(dt, layer)

    def _apply_layer(self, dt: _DownTrack, layer: int | None) -> None:
        source = dt.source
        assert source is not None
        if layer is None:  # hidden: forward nothing until shown again
            if not dt.paused:
                dt.paused = True
                if dt.target is not None:
                    dt.target.switching.discard(dt)
                    dt.target = None
            return
        want = source.group[layer]
        if dt.paused or dt.waiting_keyframe:
            # Nothing is being shown from this slot: move straight to the new layer and
            # start it on that layer's next keyframe.
            was_paused = dt.paused
            dt.paused = False
            if want is not source:
                source.down.discard(dt)
                dt.source = want
                want.down.add(dt)
                if dt.target is not None:
                    dt.target.switching.discard(dt)
                    dt.target = None
            if was_paused or want is not source:
                dt.waiting_keyframe = True
                dt.resync = True
                self._request_keyframe(want)
            return
        if want is source:
            if dt.target is not None:  # stay: a pending switch is called off
                dt.target.switching.discard(dt)
                dt.target = None
            return
        if dt.target is not want:
            if dt.target is not None:
                dt.target.switching.discard(dt)
            dt.target = want
            want.switching.add(dt)
            self._request_keyframe(want)


def _next_step(needs: Sequence[SlotNeed], choice: Sequence[int | None]) -> float | None:
    """The extra bit rate of the cheapest single raise the allocation left out, if any."""
    best: float | None = None
    for need, layer in zip(needs, choice, strict=True):
        if layer is None:
            continue
        for k in range(layer + 1, len(need.layers)):
            if need.layers[k].bps > 0:
                extra = need.layers[k].bps - need.layers[layer].bps
                best = extra if best is None else min(best, extra)
                break
    return best


def _spend(needs: Sequence[SlotNeed], choice: Sequence[int | None]) -> float:
    pairs = zip(needs, choice, strict=True)
    return sum(need.layers[layer].bps for need, layer in pairs if layer is not None)


def _kid_ok(kid: int, index: int) -> bool:
    return kid >= 0 and kid >> EPOCH_BITS == index


def _unwrap_rtx(data: bytes, hdr: rtp.RtpHeader, apt: int, ssrc: int) -> bytes | None:
    """The original packet inside an RTX packet (RFC 4588 §4): its sequence number is the
    payload's first two bytes, its payload type ``apt``, its SSRC the media stream's."""
    start, end = hdr.payload_start, hdr.payload_end
    if end - start < 2:
        return None
    seq = (data[start] << 8) | data[start + 1]
    ext = data[hdr.ext_start - 4 : hdr.ext_end] if hdr.ext_profile else b""
    return rtp.build_rtp(hdr.marker, apt, seq, hdr.timestamp, ssrc, data[start + 2 : end], ext)
