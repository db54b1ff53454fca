"""Every use of a private aiortc/aioice name lives here (aiortc is pinned in pyproject).

``tests/test_aiortc_adapter.py`` checks each name this module touches, so an aiortc or
aioice upgrade that moves one fails loudly there instead of silently breaking media.

What this module adds to the public aiortc API:

* ICE host restriction: :func:`restrict_ice_host_addresses` / ``$SALON_ICE_HOSTS``.
* Pass-through receiving: :func:`enable_passthrough` — the receiver's track yields
  :class:`EncodedFrame` (encoded bytes) instead of decoded frames.
* Marker-bit release: :func:`use_marker_release` — frames leave the jitter buffer as soon as
  they are complete instead of one frame (video) or four packets (audio) later, a video
  frame behind a gap waiting a moment for its retransmission (pass-through or decoding).
* Pre-encoded sending: :func:`enable_preencoded` — the sender packetizes the
  :class:`OutboundFrame` objects its track yields (with their audio level) as they are.
* Keyframe requests: :func:`on_keyframe_request` (a remote PLI/FIR reached our sender),
  :func:`send_pli` (ask a remote sender for a keyframe).
* Retransmission: :func:`on_nack` (a remote NACK reached our sender), :func:`send_nack`
  (ask a remote sender to retransmit), :func:`sender_rtx_ssrc`; counting aiortc's own
  (a mesh pair): :func:`count_nacks_sent`, :func:`count_retransmits`.
* Congestion feedback: :func:`on_remb` (a remote REMB names our sender),
  :func:`encoder_target_bitrate` (where aiortc's own encoder follows REMB to), and the raw
  inbound RTCP of a transport through :func:`intercept_rtp`'s ``on_rtcp``.
* Receive backlog: :func:`queued_frames` (frames waiting in a remote track).
* Negotiated parameters: :func:`sender_ssrc`, :func:`negotiated_codecs`,
  :func:`negotiated_header_extensions`.
* SFU fast path: :func:`intercept_rtp` / :func:`receive_rtp_from_socket` (decrypted
  inbound RTP to a callback) and :class:`RtpSink` (protect and send RTP synchronously).
* A dead network for one connection: :func:`blackhole` (tests of reconnection).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.codecs.base
import aiortc.exceptions
import aiortc.rtcrtpreceiver
import aiortc.rtp
import av
import pylibsrtp
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpreceiver import NackGenerator, RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, RtpPacket, unpack_remb_fci

logger = logging.getLogger(__name__)

ICE_HOSTS_ENV = "SALON_ICE_HOSTS"
_original_host_addresses = aioice.ice.get_host_addresses


def restrict_ice_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer only these local addresses as ICE host candidates (None: every interface).

    aioice never offers 127.0.0.1, so calls between processes on one machine (tests, demos)
    would otherwise go out through a real interface; ``SALON_ICE_HOSTS=127.0.0.1`` keeps them
    on loopback.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def quiet_connect_after_close(loop: asyncio.AbstractEventLoop) -> None:
    """Drop asyncio's "Task exception was never retrieved" for aiortc's own connect task of a
    peer connection closed while it was connecting (``RTCIceTransport is closed``): aiortc
    starts that task and never awaits it, so closing a connection mid-connect (a topology
    switch, a reconnect superseding an attempt) logged an ERROR although nothing failed.
    Everything else goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        task = context.get("future")
        coro = getattr(task, "get_coro", lambda: None)()
        if (
            isinstance(exc, aiortc.exceptions.InvalidStateError)
            and "__connect" in getattr(coro, "__qualname__", "")
            and "closed" in str(exc)
        ):
            logger.debug("a peer connection closed while connecting: %s", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def apply_ice_env() -> None:
    """Apply ``$SALON_ICE_HOSTS`` (comma-separated addresses) if it is set."""
    value = os.environ.get(ICE_HOSTS_ENV, "").strip()
    if value:
        restrict_ice_host_addresses([a.strip() for a in value.split(",") if a.strip()])


# =====================================================================================
# Receiving encoded frames without decoding them (pass-through decoder)
# =====================================================================================


@dataclass(slots=True)
class EncodedFrame:
    """One reassembled encoded frame, as a pass-through receiver's track yields it.

    ``timestamp`` is the RTP timestamp rebased to start at 0 (aiortc's TimestampMapper),
    in the codec's clock rate (90 kHz video, 48 kHz Opus). ``source`` is the one CSRC its
    packets carried — the SFU names the publisher's sender index there — or ``None`` if
    they carried none, or disagreed (see :class:`MarkerJitterBuffer`).
    """

    data: bytes
    timestamp: int
    codec: str  # lower-case codec name: "vp8", "opus"
    source: int | None = None


class SourcedJitterFrame(JitterFrame):
    """A reassembled frame plus the CSRC all its packets carried (``None``: none/mixed)."""

    def __init__(self, data: bytes, timestamp: int, source: int | None) -> None:
        super().__init__(data, timestamp)
        self.source = source


def _source(packet: RtpPacket) -> int | None:
    csrc = packet.csrc
    return csrc[0] if len(csrc) == 1 else None


class PassThroughDecoder(aiortc.codecs.base.Decoder):
    """A "decoder" that hands the reassembled frame bytes to the track unchanged.

    It runs in aiortc's decoder thread, which only survives ``av.FFmpegError``: anything
    else raised here would silently end the track, so this never raises.
    """

    def __init__(self, codec_name: str) -> None:
        self.codec_name = codec_name.lower()

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        try:
            if isinstance(encoded_frame, BundledJitterFrame):
                # aiortc rebased the bundle's timestamp (the last frame's): rebase the
                # others by the same amount.
                last = encoded_frame.raw_timestamp
                return [
                    EncodedFrame(
                        bytes(f.data),
                        encoded_frame.timestamp - ((last - f.timestamp) & 0xFFFFFFFF),
                        self.codec_name,
                        f.source,
                    )
                    for f in encoded_frame.frames
                ]
            return [
                EncodedFrame(
                    bytes(encoded_frame.data),
                    encoded_frame.timestamp,
                    self.codec_name,
                    getattr(encoded_frame, "source", None),
                )
            ]
        except Exception:  # never let the decoder thread die
            logger.debug("pass-through decoder dropped a frame", exc_info=True)
            return []


_original_decoder_worker = aiortc.rtcrtpreceiver.decoder_worker
_original_get_decoder: Callable[[RTCRtpCodecParameters], aiortc.codecs.base.Decoder] = getattr(  # noqa: B009
    aiortc.rtcrtpreceiver, "get_decoder"
)
_passthrough_lock = threading.Lock()
_passthrough_receivers: weakref.WeakSet[RTCRtpReceiver] = weakref.WeakSet()
_decoder_thread = threading.local()


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    # aiortc starts one worker thread per receiver with the track's queue as output_q;
    # that queue tells us which receiver this thread serves.
    with _passthrough_lock:
        passthrough = any(
            r._track is not None and r._track._queue is output_q for r in _passthrough_receivers
        )
    _decoder_thread.passthrough = passthrough
    _original_decoder_worker(loop, input_q, output_q, decode_error)


class UnbundlingDecoder(aiortc.codecs.base.Decoder):
    """aiortc's decoder for ``codec``, decoding each frame of a :class:`BundledJitterFrame`
    in order (a decoding receiver with :func:`use_marker_release`); other frames as they are.

    A frame of a bundle that fails to decode is skipped (the others still are decoded: the
    gap before the bundle was filled, so they follow on); if none decodes, the error goes up
    to aiortc's worker, which asks for a keyframe.
    """

    def __init__(self, inner: aiortc.codecs.base.Decoder) -> None:
        self.inner = inner

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        if not isinstance(encoded_frame, BundledJitterFrame):
            return self.inner.decode(encoded_frame)
        last = encoded_frame.raw_timestamp
        decoded: list[Any] = []
        failed: av.FFmpegError | None = None
        for f in encoded_frame.frames:
            timestamp = encoded_frame.timestamp - ((last - f.timestamp) & 0xFFFFFFFF)
            try:
                decoded.extend(self.inner.decode(JitterFrame(f.data, timestamp)))
            except av.FFmpegError as exc:
                failed = exc
        if failed is not None and not decoded:
            raise failed
        return decoded


def _get_decoder(codec: RTCRtpCodecParameters) -> aiortc.codecs.base.Decoder:
    if getattr(_decoder_thread, "passthrough", False):
        return PassThroughDecoder(codec.name)
    return UnbundlingDecoder(_original_get_decoder(codec))


def _install_decoder_hooks() -> None:
    aiortc.rtcrtpreceiver.decoder_worker = _decoder_worker
    setattr(aiortc.rtcrtpreceiver, "get_decoder", _get_decoder)  # noqa: B010


def enable_passthrough(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver.track.recv()`` return :class:`EncodedFrame` objects, never decoding.

    Call it before the connection starts receiving (right after ``addTransceiver`` or
    in the ``track`` event); other receivers in the process keep decoding normally.
    """
    _install_decoder_hooks()
    with _passthrough_lock:
        _passthrough_receivers.add(receiver)


# =====================================================================================
# Releasing frames on the RTP marker bit instead of the stock jitter-buffer delay
# =====================================================================================


def _vp8_starts_frame(payload: bytes) -> bool:
    # VP8 payload descriptor (RFC 7741 §4.2): S bit set and partition index 0.
    return bool(payload) and payload[0] & 0x10 != 0 and payload[0] & 0x07 == 0


def _seq_older(a: int, b: int) -> bool:
    return a != b and (b - a) & 0xFFFF < 0x8000


class BundledJitterFrame(JitterFrame):
    """Several complete frames released by one packet (a retransmission filled a gap that
    held later frames back); the pass-through decoder hands them out one by one.

    ``timestamp`` is the last frame's (aiortc rebases it after the buffer returns it; the
    decoder rebases the others by the same amount).
    """

    def __init__(self, frames: list[SourcedJitterFrame]) -> None:
        last = frames[-1]
        super().__init__(last.data, last.timestamp)
        self.frames = frames
        self.raw_timestamp = last.timestamp


class MarkerJitterBuffer:
    """Drop-in for aiortc's ``JitterBuffer`` that releases a frame as soon as it is complete.

    The stock buffer releases a frame only when the *next* frame's first packet arrives
    (~33 ms for video) and prefetches 4 audio packets (~80 ms). Here a video frame is
    released as soon as every packet from its start (VP8 S bit) to its end (RTP marker) is
    present, in whatever order they came; each audio packet is a frame. Incomplete frames
    older than a released one are discarded and reported with the PLI flag, as the stock
    buffer does when it overflows. Packets arriving after their frame's slot are dropped.
    Each frame keeps the CSRC its packets carried (:class:`SourcedJitterFrame`); a frame
    whose packets name different sources gets none, so it is refused, not misattributed.

    With ``hold`` (seconds, > 0), a complete frame behind an incomplete one waits for the
    missing packets (retransmissions answering our NACKs) until frames spanning ``hold`` of
    media time (RTP timestamps, 90 kHz) are complete behind the gap — or 4 × ``hold`` of wall
    time passed — before the earlier frame is given up: media time, not wall time, so a CPU
    stall that delays the retransmission and the frames after it alike does not give up on it.
    When the missing packets come, every frame that waited leaves at once, in order
    (:class:`BundledJitterFrame`). Without it the earlier frame is given up at once. A
    sender that never retransmits (``GIVE_UP_UNANSWERED`` gaps given up, none ever filled)
    gets no more waiting: holding would only turn each loss into a freeze.
    """

    GIVE_UP_UNANSWERED = 10

    def __init__(
        self,
        kind: str,
        capacity: int = 256,
        hold: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._video = kind == "video"
        self._capacity = capacity
        self._hold = hold
        self._clock = clock
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None  # first sequence number not yet released
        self._complete: dict[int, int] = {}  # complete frames held behind a gap: first -> last
        self._held_since: float | None = None
        self._held_ts = 0  # RTP timestamp of the first frame held, and of the newest
        self._newest_ts = 0
        self.gaps_filled = 0  # held gaps a late packet (a retransmission) completed
        self.gaps_given_up = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._next is not None and _seq_older(seq, self._next):
            return False, None  # late: its frame was already released or given up
        data = getattr(packet, "_data", b"")
        if not self._video:
            self._next = (seq + 1) & 0xFFFF
            return False, SourcedJitterFrame(data, packet.timestamp, _source(packet))
        pli = False
        self._packets[seq] = packet
        if len(self._packets) > self._capacity:
            # No complete frame for a whole buffer: start over from this packet.
            self._packets = {seq: packet}
            self._next = None
            self._complete.clear()
            self._held_since = None
            pli = True
        released: list[SourcedJitterFrame] = []
        bounds = self._frame_bounds(seq, packet.timestamp)
        if bounds is not None:
            first, last = bounds
            if self._complete and first == self._next:
                self.gaps_filled += 1
            if self._next is None or first == self._next or self._hold <= 0:
                if self._next is not None and first != self._next:
                    pli = True  # an earlier frame never completed: the picture is broken
                released.append(self._take(first, last))
            else:
                self._complete[first] = last
                self._newest_ts = packet.timestamp
                if self._held_since is None:
                    self._held_since = self._clock()
                    self._held_ts = packet.timestamp
        self._chain(released)
        if self._complete and self._held_since is not None:
            now = self._clock()
            media = (self._newest_ts - self._held_ts) & 0xFFFFFFFF
            media_held = media < 0x80000000 and media >= self._hold * VIDEO_CLOCK_RATE
            if media_held or now - self._held_since >= 4 * self._hold:
                # The missing packets did not come in time: give the earlier frame up.
                assert self._next is not None
                nxt = self._next
                first = min(self._complete, key=lambda f: (f - nxt) & 0xFFFF)
                released.append(self._take(first, self._complete.pop(first)))
                self._chain(released)
                pli = True
                self._held_since = now if self._complete else None
                if self._complete:
                    nxt = self._next
                    after = min(self._complete, key=lambda f: (f - nxt) & 0xFFFF)
                    self._held_ts = self._packets[after].timestamp
                self.gaps_given_up += 1
                if not self.gaps_filled and self.gaps_given_up >= self.GIVE_UP_UNANSWERED:
                    self._hold = 0.0  # nobody answers our NACKs: stop waiting for them
        if not self._complete:
            self._held_since = None
        if not released:
            return pli, None
        if len(released) == 1:
            return pli, released[0]
        return pli, BundledJitterFrame(released)

    def _chain(self, released: list[SourcedJitterFrame]) -> None:
        """Release the held frames that now follow on from what was released."""
        while self._next is not None and self._next in self._complete:
            first = self._next
            released.append(self._take(first, self._complete.pop(first)))

    def _take(self, first: int, last: int) -> SourcedJitterFrame:
        """Assemble frame ``first``..``last``, forget everything up to it, move on past it."""
        parts = []
        source = _source(self._packets[first])
        timestamp = self._packets[first].timestamp
        s = first
        while True:
            part = self._packets[s]
            parts.append(getattr(part, "_data", b""))
            if _source(part) != source:
                source = None
            if s == last:
                break
            s = (s + 1) & 0xFFFF
        for k in [k for k in self._packets if not _seq_older(last, k)]:
            del self._packets[k]
        for k in [k for k in self._complete if not _seq_older(last, k)]:
            del self._complete[k]
        self._next = (last + 1) & 0xFFFF
        return SourcedJitterFrame(b"".join(parts), timestamp, source)

    def _frame_bounds(self, seq: int, timestamp: int) -> tuple[int, int] | None:
        """First and last sequence numbers of the frame holding ``seq``, if it is complete."""
        first = seq
        for _ in range(self._capacity):
            p = self._packets.get(first)
            if p is None or p.timestamp != timestamp:
                return None
            if _vp8_starts_frame(p.payload):
                break
            first = (first - 1) & 0xFFFF
        else:
            return None
        last = seq
        for _ in range(self._capacity):
            p = self._packets.get(last)
            if p is None or p.timestamp != timestamp:
                return None
            if p.marker:
                return first, last
            last = (last + 1) & 0xFFFF
        return None


VIDEO_CLOCK_RATE = 90_000  # RFC 7741
NACK_HOLD = 0.25  # how long a complete video frame waits behind a gap for retransmissions
NACK_RETRY = 0.04  # NACK what is still missing again after this long (on the next packet)


class RetryingNackGenerator(NackGenerator):
    """aiortc's ``NackGenerator`` NACKs a gap once, when it appears; this one asks again for
    what is still missing (at most every ``retry`` seconds, on a packet's arrival) and stops
    asking after ``give_up`` seconds, when the jitter buffer has moved on anyway."""

    def __init__(
        self,
        retry: float = NACK_RETRY,
        give_up: float = NACK_HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._retry = retry
        self._give_up = give_up
        self._clock = clock
        self._since: dict[int, float] = {}
        self._nacked_at = -1e9

    def add(self, packet: RtpPacket) -> bool:
        missed = super().add(packet)
        if not self.missing and not self._since:
            return missed
        now = self._clock()
        for seq in self.missing:
            self._since.setdefault(seq, now)
        for seq, since in list(self._since.items()):
            if seq not in self.missing:
                del self._since[seq]
            elif now - since > self._give_up:
                del self._since[seq]
                self.missing.discard(seq)
        if missed or (self.missing and now - self._nacked_at >= self._retry):
            self._nacked_at = now
            return bool(self.missing)
        return False


def use_marker_release(receiver: RTCRtpReceiver, kind: str, hold: float = NACK_HOLD) -> None:
    """Replace ``receiver``'s jitter buffer with a :class:`MarkerJitterBuffer`; for video,
    one that waits ``hold`` (:data:`NACK_HOLD`) for retransmissions, and a
    :class:`RetryingNackGenerator` that keeps asking for them. Call it before the connection
    starts receiving. With :func:`enable_passthrough` its decoder hands a
    :class:`BundledJitterFrame`'s frames out one by one; a decoding receiver decodes them one
    by one (:class:`UnbundlingDecoder`)."""
    _install_decoder_hooks()
    hold = hold if kind == "video" else 0.0
    receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer(kind, hold=hold)  # type: ignore[attr-defined]
    if kind == "video":
        receiver._RTCRtpReceiver__nack_generator = RetryingNackGenerator(give_up=hold)  # type: ignore[attr-defined]


# =====================================================================================
# Sending pre-encoded frames, and keyframe requests in both directions
# =====================================================================================


@dataclass(slots=True)
class OutboundFrame:
    """An encoded frame for a pre-encoded sender (an ``av.Packet`` look-alike).

    ``audio_level`` is in dBov (-127 … 0, as ``aiortc.rtp.compute_audio_level_dbov``) and
    goes into the RFC 6464 header extension; ``None`` sends none.
    """

    data: bytes
    pts: int
    time_base: fractions.Fraction
    audio_level: int | None = None

    def __bytes__(self) -> bytes:
        return self.data


def enable_preencoded(sender: RTCRtpSender) -> None:
    """Make ``sender`` packetize its track's :class:`OutboundFrame` objects without encoding.

    aiortc's own pre-encoded path (``encoder.pack``) drops the audio level, which the SFU
    needs for the active speaker; this one keeps it. Call before the sender starts.
    """
    packer: aiortc.codecs.base.Encoder | None = None

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        nonlocal packer
        data = await sender.track.recv()
        if not sender._enabled:
            return None  # direction not sending: read and drop, like aiortc
        if packer is None:
            packer = aiortc.codecs.get_encoder(codec)
        payloads, timestamp = packer.pack(data)  # type: ignore[arg-type]
        if not payloads:
            return None
        level = getattr(data, "audio_level", None)
        return RTCEncodedFrame(payloads, timestamp, level)  # type: ignore[arg-type]

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the remote side asks ``sender`` for a keyframe (PLI or FIR).

    The stock behaviour (flagging aiortc's own encoder) is replaced: with pre-encoded or
    forwarded media there is no aiortc encoder to flag.
    """

    def send_keyframe() -> None:
        try:
            callback()
        except Exception:
            logger.exception("keyframe request handler failed")

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send an RTCP PLI for ``media_ssrc`` from ``receiver`` (ask the sender for a keyframe)."""
    await receiver._send_rtcp_pli(media_ssrc)


def on_nack(sender: RTCRtpSender, callback: Callable[[int], None]) -> None:
    """Call ``callback(sequence_number)`` for each packet a remote NACK asks ``sender`` to
    retransmit, instead of aiortc's own history (empty for media sent around the sender)."""

    async def retransmit(sequence_number: int) -> None:
        try:
            callback(sequence_number)
        except Exception:
            logger.exception("NACK handler failed")

    sender._retransmit = retransmit  # type: ignore[method-assign]


async def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: Sequence[int]) -> None:
    """Send an RTCP NACK (RFC 4585 §6.2.1) for ``lost`` sequence numbers of ``media_ssrc``."""
    await receiver._send_rtcp_nack(media_ssrc, sorted(lost))


def count_nacks_sent(receiver: RTCRtpReceiver, callback: Callable[[int], None]) -> None:
    """Call ``callback(packets)`` for each RTCP NACK ``receiver`` sends (``packets``: how many
    sequence numbers it asks for), then send it as aiortc does."""
    send = receiver._send_rtcp_nack

    async def counted(media_ssrc: int, lost: list[int]) -> None:
        callback(len(lost))
        await send(media_ssrc, lost)

    receiver._send_rtcp_nack = counted  # type: ignore[method-assign]


def count_retransmits(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback()`` for each packet aiortc's own sender retransmits from its history
    on a remote NACK (a NACKed packet no longer in the history is not counted)."""
    retransmit = sender._retransmit
    history: dict[int, RtpPacket] = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]

    async def counted(sequence_number: int) -> None:
        packet = history.get(sequence_number % aiortc.rtp.RTP_HISTORY_SIZE)
        if packet is not None and packet.sequence_number == sequence_number:
            callback()
        await retransmit(sequence_number)

    sender._retransmit = counted  # type: ignore[method-assign]


def on_remb(sender: RTCRtpSender, callback: Callable[[int], None]) -> None:
    """Call ``callback(bitrate_bps)`` for each REMB (draft-alvestrand-rmcat-remb) whose SSRC
    list names ``sender``: the receiver's estimate of what it can take. aiortc's own
    handling (retargeting its own encoder, absent for pre-encoded media) runs first."""
    original = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        await original(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if sender._ssrc in ssrcs:
                    callback(bitrate)
            except Exception:  # a malformed REMB, or the callback failed
                logger.debug("REMB not handled", exc_info=True)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def encoder_target_bitrate(sender: RTCRtpSender) -> int | None:
    """The bitrate aiortc's own encoder for ``sender`` aims at (it follows REMB, clamped to
    aiortc's 250 kbit/s - 1.5 Mbit/s VP8 range); None before it encodes, or pre-encoded."""
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)
    target = getattr(encoder, "target_bitrate", None)
    return target if isinstance(target, int) else None


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC ``sender`` sends with (announced in its SDP m-line)."""
    return int(sender._ssrc)


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC of ``sender``'s RTX stream (RFC 4588; in its SDP's ssrc-group FID)."""
    return int(sender._rtx_ssrc)


def queued_frames(track: object) -> int:
    """How many frames wait in a remote track's queue (0 for any other track).

    aiortc's ``RemoteStreamTrack`` keeps decoded (here: pass-through) frames in ``_queue``;
    a receiver that falls seconds behind can skip to the next keyframe instead of showing
    old pictures late.
    """
    queue = getattr(track, "_queue", None) if isinstance(track, RemoteStreamTrack) else None
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated for ``transceiver``, preferred first (after an offer/answer)."""
    return list(transceiver._codecs)


def negotiated_header_extensions(
    transceiver: RTCRtpTransceiver,
) -> list[RTCRtpHeaderExtensionParameters]:
    """The RTP header extensions negotiated for ``transceiver``."""
    return list(transceiver._headerExtensions)


# =====================================================================================
# SFU fast path: raw RTP in, SRTP datagrams out, no per-packet coroutines
# =====================================================================================


def intercept_rtp(
    dtls: RTCDtlsTransport,
    on_rtp: Callable[[bytes], None],
    on_rtcp: Callable[[bytes], bool | None] | None = None,
) -> None:
    """Route every decrypted inbound RTP packet of ``dtls`` to ``on_rtp`` instead of aiortc.

    aiortc's receivers (jitter buffer, depacketizer, decoder) never see the packets. RTCP
    still goes to aiortc, but an exception while handling a malformed RTCP packet is
    swallowed here instead of closing the transport. With ``on_rtcp``, each decrypted RTCP
    compound packet is handed to it first (also when :func:`receive_rtp_from_socket` took
    over RTP: RTCP keeps this path); when it returns False the packet goes no further (aiortc
    never parses it: a flood is cut before its most expensive step). Neither callback may
    block.
    """

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        try:
            on_rtp(data)
        except Exception:
            logger.exception("RTP handler failed; packet dropped")

    original_rtcp = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        if on_rtcp is not None:
            try:
                if on_rtcp(data) is False:
                    return
            except Exception:
                logger.exception("RTCP handler failed")
        try:
            await original_rtcp(data)
        except Exception:
            logger.debug("dropped RTCP that aiortc could not handle", exc_info=True)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


def receive_rtp_from_socket(
    dtls: RTCDtlsTransport, on_rtp: Callable[[bytes], None], *, decrypt: bool = True
) -> bool:
    """Decrypt inbound RTP right in the socket callback and hand it to ``on_rtp``.

    Skips aioice's STUN parse attempt, its queue and a hop through the DTLS task per packet
    (lower latency and CPU under load). DTLS, STUN and RTCP still take aiortc's path, as
    does anything arriving on another socket (keep :func:`intercept_rtp` installed for
    those). Call once connected; returns False (nothing installed) before that.
    ``decrypt=False`` hands over the SRTP packets unverified (header readable, payload
    not): only for load generators that count packets.
    """
    srtp = dtls._rx_srtp
    pair = dtls.transport._connection._nominated.get(1)
    if srtp is None or pair is None:
        return False
    protocol = pair.protocol
    original = protocol.datagram_received

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        # RFC 7983 demultiplexing: 128-191 is RTP or RTCP; RTCP types are 192-223.
        if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            try:
                plain = srtp.unprotect(data) if decrypt else data
            except pylibsrtp.Error:
                return  # forged, replayed or not ours: what aiortc would drop too
            try:
                on_rtp(plain)
            except Exception:
                logger.exception("RTP handler failed; packet dropped")
            return
        original(data, addr)

    protocol.datagram_received = datagram_received  # type: ignore[method-assign,assignment]
    return True


class RtpSink:
    """Send RTP packets on ``dtls`` synchronously: SRTP-protect, then ``sendto`` the ICE pair.

    Calling it returns False when the packet was *not* taken — not connected yet, or the
    socket's write buffer is above ``write_buffer_limit`` (the caller keeps the packet
    queued). aiortc's own path costs four coroutine hops per packet; this costs none.
    """

    __slots__ = (
        "_addr",
        "_dtls",
        "_nominated",
        "_pair",
        "_srtp",
        "_transport",
        "congested",
        "sent",
        "write_buffer_limit",
    )

    def __init__(self, dtls: RTCDtlsTransport, write_buffer_limit: int = 256 * 1024) -> None:
        self._dtls = dtls
        self._srtp: pylibsrtp.Session | None = None
        self._nominated: dict[int, Any] = dtls.transport._connection._nominated
        self._pair: Any = None
        self._transport: Any = None  # asyncio's datagram transport (has get_write_buffer_size)
        self._addr: tuple[str, int] | None = None
        self.write_buffer_limit = write_buffer_limit
        self.sent = 0
        self.congested = 0

    def __call__(self, packet: bytes) -> bool:
        srtp = self._srtp
        if srtp is None:
            srtp = self._srtp = self._dtls._tx_srtp  # set once, when DTLS completes
            if srtp is None:
                return False
        pair = self._nominated.get(1)  # emptied when ICE closes
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair = pair
            self._transport = pair.protocol.transport
            self._addr = pair.remote_addr
        transport = self._transport
        if transport.get_write_buffer_size() > self.write_buffer_limit:
            self.congested += 1
            return False
        try:
            transport.sendto(srtp.protect(packet), self._addr)
        except pylibsrtp.Error:
            logger.debug("SRTP refused an outbound packet; dropped")
        self.sent += 1
        return True

    def send_rtcp(self, packet: bytes) -> bool:
        """Protect (SRTCP) and send one RTCP compound packet; False if not connected."""
        srtp = self._dtls._tx_srtp
        pair = self._dtls.transport._connection._nominated.get(1)
        if srtp is None or pair is None:
            return False
        try:
            pair.protocol.transport.sendto(srtp.protect_rtcp(packet), pair.remote_addr)
        except pylibsrtp.Error:
            logger.debug("SRTCP refused an outbound packet; dropped")
        return True


def blackhole(pc: Any) -> None:
    """From now on, drop every datagram ``pc``'s ICE transports send or receive — a network
    that went dark, for tests of reconnection: nothing is closed and nothing is said, so
    the other side sees only silence (and so does ``pc``)."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None:
            continue
        for protocol in dtls.transport._connection._protocols:
            protocol.datagram_received = _drop
            protocol.send_stun = _drop
            protocol.send_data = _drop_async


def _drop(*_: Any) -> None:
    pass


async def _drop_async(*_: Any) -> None:
    pass
