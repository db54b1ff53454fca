"""End-to-end encrypted media for SFU calls: encode, protect, send; receive, unprotect, decode.

The SFU forwards what it cannot read, so the client does the codec work itself instead of
letting aiortc encode and decode (DESIGN §6):

    source track ──► EncryptedVideoSender / EncryptedAudioSender ──► aiortc sender (pack only)
                     (PyAV VP8 / Opus encode, SFrame suite 4)
    aiortc receiver (pass-through, marker release) ──► DecryptingReceiver ──► av frames
                     (SFrame unprotect by KID, PyAV decode)

SFrame keeps the codec header in clear as authenticated metadata (VP8: 10 bytes on
keyframes, 3 on deltas; Opus: 1), so the SFU can still tell keyframes apart.

A frame that cannot be unprotected (no key for its KID, wrong key, replay, tampering) is
counted in ``decrypt_failures`` and dropped: nothing is decoded from it, nothing is played,
and no keyframe is requested for it (a receiver without keys must not cause a PLI storm).
When frames become decryptable again (a key arrived) the receiver asks for a keyframe,
at most once per second. A frame whose key the caller says is on its way (``hold_unknown``:
a sender moved to a new epoch and its sealed key has not arrived yet) is held instead, for
up to ``HOLD_SECONDS``, and decrypted in order once the key is there.

:class:`SfuSession` puts these together on one ``RTCPeerConnection`` to an SFU node: one
publishing transceiver per kind and a fixed number of receiving *slots*; the SFU routes
publishers into slots and names each packet's publisher in its CSRC.

Whose keys a frame is tried with: every receiver holds every sender's key, so a member
could encrypt under another's key id. The SFU drops frames under a key id that is not
the publisher's, and a receiver given keys *per source* (a callable: CSRC -> that
publisher's own SFrame context) tries a frame only with the keys of the publisher its
packets name: a frame under Bob's key id on Mallory's slot finds no key
(:class:`WrongSourceError`) and never touches Bob's replay window.

Key ids are opaque here: the call client picks them (``client.call.keys.media_kid``) and
maps the KID of each decoded frame (``DecryptingReceiver.recv_with_kid``) to its sender.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from client.call.sframe import (
    CipherSuite,
    SFrameContext,
    SFrameError,
    UnknownKeyError,
    decode_header,
    protect_frame,
    unprotect_frame,
)
from protocol.sfu_sdp import mark_screen_sections
from rtc import aiortc_adapter

logger = logging.getLogger(__name__)

__all__ = [
    "MEDIA_SUITE",
    "DecryptingReceiver",
    "EncryptedAudioSender",
    "EncryptedVideoSender",
    "KeysBySource",
    "ReceiverStats",
    "RecvKeys",
    "SfuSession",
    "WrongSourceError",
    "audio_level_dbov",
]

MEDIA_SUITE = CipherSuite.AES_128_GCM_SHA256_128
VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
OPUS_FRAME_SAMPLES = 960  # 20 ms
KEYFRAME_REQUEST_INTERVAL = 1.0  # s; a receiver asks at most this often
HOLD_SECONDS = 3.0  # how long a frame may wait for its key (see hold_unknown; §15.5)
HOLD_MAX_FRAMES = 256  # per receiver; ~3 s of a sender's video and audio
# Encoded video frames waiting behind the one at hand past which this receiver is too slow
# to decode them all (a busy machine): it still opens every frame at once (its key may go
# soon, §15.5) but decodes only keyframes until it has caught up, instead of falling behind
# by seconds.
BEHIND_FRAMES = 15
SCREEN_BITRATE = 500_000  # text on a shared screen needs more than a talking head
MIN_VIDEO_BITRATE = 50_000  # below this VP8 at our sizes is mush: let the picture stall instead
# The encoder is re-opened (a keyframe) to follow REMB only for a change of more than this
# fraction, and at most once per RETARGET_INTERVAL seconds.
RETARGET_STEP = 0.15
RETARGET_INTERVAL = 1.0
AUDIO_RESERVE = 40_000  # Opus at 32 kbit/s plus its RTP/SRTP/UDP headers at 50 packets/s
_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class WrongSourceError(SFrameError):
    """The frame's packets name no publisher whose keys we hold (or no single publisher)."""


# A publisher's own receiving context, by the sender index the SFU names (CSRC); None: none.
KeysBySource = Callable[[int | None], SFrameContext | None]
# One context for every sender (tests, tools; no source binding), or keys per source.
RecvKeys = SFrameContext | KeysBySource


def audio_level_dbov(samples: np.ndarray[Any, Any]) -> int:
    """RFC 6465 Appendix A level of signed 16-bit samples, in dBov (-127 … 0)."""
    if samples.size == 0:
        return -127
    x = samples.astype(np.float64) / 32767.0
    rms = math.sqrt(float(np.mean(x * x)))
    if rms <= 0:
        return -127
    return max(-127, min(0, round(20 * math.log10(rms))))


def _clear_prefix(codec: str, data: bytes) -> int:
    if codec == "opus":
        return 1
    return 10 if data and data[0] & 0x01 == 0 else 3


def _peek_kid(codec: str, data: bytes) -> int | None:
    """The KID of a protected frame without a key (for attributing failures), if parseable."""
    try:
        return decode_header(data[_clear_prefix(codec, data) :]).kid
    except (SFrameError, IndexError):
        return None


# ------------------------------------------------------------------------------ senders


class _EncryptedSender(MediaStreamTrack):
    """Base of the encrypting tracks: yields :class:`aiortc_adapter.OutboundFrame` objects.

    Give it to ``RTCPeerConnection.addTransceiver`` and call
    ``aiortc_adapter.enable_preencoded`` on the sender (:class:`SfuSession` does both).
    Stopping it leaves ``source`` running, so a source can move between connections
    (mesh to SFU and back).
    """

    codec_name = ""

    def __init__(self, source: MediaStreamTrack, ctx: SFrameContext, kid: int) -> None:
        super().__init__()
        if ctx.cipher_suite != MEDIA_SUITE:
            raise ValueError(f"media frames use {MEDIA_SUITE.name}")
        if kid not in ctx:
            raise ValueError(f"no key for KID {kid} in the sender context")
        self.source = source
        self.ctx = ctx
        self.kid = kid
        self.frames_sent = 0
        self.bytes_sent = 0
        self.paused = False  # True: read the source but send nothing (mute, stage listener)
        self._pending: collections.deque[aiortc_adapter.OutboundFrame] = collections.deque()

    def set_key(self, kid: int) -> None:
        """Encrypt from the next frame on under ``kid`` (already added to the context)."""
        if kid not in self.ctx:
            raise ValueError(f"no key for KID {kid} in the sender context")
        self.kid = kid

    def set_paused(self, paused: bool) -> None:
        """Stop or resume sending; the source keeps being read so it never backs up."""
        self.paused = paused

    def _protect(self, data: bytes) -> bytes:
        out = protect_frame(self.ctx, self.kid, self.codec_name, data)
        self.frames_sent += 1
        self.bytes_sent += len(out)
        return out

    @abstractmethod
    async def _fill(self) -> None:
        """Encode and protect the next frame(s) of the source into ``self._pending``."""

    async def recv(self) -> aiortc_adapter.OutboundFrame:  # type: ignore[override]
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            await self._fill()
        return self._pending.popleft()


class EncryptedVideoSender(_EncryptedSender):
    """VP8-encodes ``source`` with PyAV and SFrame-protects every frame under ``kid``.

    A keyframe is sent first, on :meth:`request_keyframe` (PLI from the SFU) and after
    :meth:`set_key`, so receivers that just got the new key can start decoding at once.

    ``bitrate`` is the ceiling: :meth:`set_target_bitrate` (fed by REMB, issue 13) moves the
    encoder's target between :data:`MIN_VIDEO_BITRATE` and it. libvpx takes a new rate only
    when re-opened (as aiortc's own encoder does), which costs a keyframe, so small or
    frequent changes are held back (:data:`RETARGET_STEP`, :data:`RETARGET_INTERVAL`).
    """

    kind = "video"
    codec_name = "vp8"

    def __init__(
        self,
        source: MediaStreamTrack,
        ctx: SFrameContext,
        kid: int,
        *,
        bitrate: int = 300_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(source, ctx, kid)
        self._clock = clock
        self.bitrate = bitrate  # the ceiling
        self.target_bitrate = bitrate  # what the encoder should run at
        self.encoder_bitrate = bitrate  # what it runs at now
        self.estimate_bps: int | None = None  # the last congestion estimate received
        self.retargets = 0  # encoder re-opened at a new rate
        self.keyframes_sent = 0
        self._codec: Any = None
        self._size: tuple[int, int] | None = None
        self._opened_at = 0.0
        self._force_keyframe = True

    def set_target_bitrate(self, bps: int) -> None:
        """Follow a congestion estimate (bits/s for this video): the encoder moves to it,
        clamped to [:data:`MIN_VIDEO_BITRATE`, ``bitrate``], from a coming frame on."""
        self.estimate_bps = bps
        self.target_bitrate = min(max(int(bps), MIN_VIDEO_BITRATE), self.bitrate)

    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe."""
        self._force_keyframe = True

    def set_key(self, kid: int) -> None:
        super().set_key(kid)
        self._force_keyframe = True

    def set_paused(self, paused: bool) -> None:
        if self.paused and not paused:
            self._force_keyframe = True
        super().set_paused(paused)

    def _encode(self, frame: av.VideoFrame, keyframe: bool) -> list[bytes]:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        target = self.target_bitrate
        retarget = (
            self._codec is not None
            and abs(target - self.encoder_bitrate) > RETARGET_STEP * self.encoder_bitrate
            and self._clock() - self._opened_at >= RETARGET_INTERVAL
        )
        if retarget:
            self.retargets += 1
        if self._codec is None or retarget or self._size != (frame.width, frame.height):
            self.encoder_bitrate = target
            self._codec = self._open_codec(frame.width, frame.height)
            self._size = (frame.width, frame.height)
            self._opened_at = self._clock()
            keyframe = True
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return [bytes(p) for p in self._codec.encode(frame)]

    def _open_codec(self, width: int, height: int) -> Any:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        rate = self.encoder_bitrate
        codec.bit_rate = rate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # keyframes on request only
        codec.qmin = 2
        codec.qmax = 56
        # aiortc's real-time CBR settings, with one thread: calls share 2 cores.
        codec.options = {
            "bufsize": str(rate),
            "cpu-used": "8",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(rate),
            "maxrate": str(rate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = 1
        return codec

    async def _fill(self) -> None:
        frame = await self.source.recv()
        if not isinstance(frame, av.VideoFrame) or self.paused:
            return
        keyframe, self._force_keyframe = self._force_keyframe, False
        loop = asyncio.get_running_loop()
        # Encoding takes milliseconds: keep it off the event loop.
        encoded = await loop.run_in_executor(None, self._encode, frame, keyframe)
        pts = frame.pts or 0
        time_base = frame.time_base or _VIDEO_TIME_BASE
        for data in encoded:
            if not data:
                continue
            if data[0] & 0x01 == 0:
                self.keyframes_sent += 1
            self._pending.append(aiortc_adapter.OutboundFrame(self._protect(data), pts, time_base))


class EncryptedAudioSender(_EncryptedSender):
    """Opus-encodes ``source`` (20 ms frames) and SFrame-protects every packet under ``kid``.

    Each frame carries its RFC 6464 audio level (computed before encryption) so the SFU
    can pick the active speaker without hearing anyone.
    """

    kind = "audio"
    codec_name = "opus"

    def __init__(
        self,
        source: MediaStreamTrack,
        ctx: SFrameContext,
        kid: int,
        *,
        bitrate: int = 32_000,
    ) -> None:
        super().__init__(source, ctx, kid)
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = bitrate
        self._codec.sample_rate = AUDIO_RATE
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.time_base = _AUDIO_TIME_BASE
        # In-band FEC (RFC 6716 §2.1.7, LBRR): each packet also carries a low-rate copy of
        # the previous one, tuned for ~10 % loss. It travels inside the SFrame ciphertext, so
        # only a receiver's decoder can use it (browsers' do; PyAV's libopus wrapper here
        # cannot ask for it, so the CLI gains nothing from what it receives).
        self._codec.options = {"application": "voip", "fec": "1", "packet_loss": "10"}
        self._resampler = av.AudioResampler(
            format="s16", layout="mono", rate=AUDIO_RATE, frame_size=OPUS_FRAME_SAMPLES
        )
        self._next_pts: int | None = None

    async def _fill(self) -> None:
        frame = await self.source.recv()
        if not isinstance(frame, av.AudioFrame):
            return
        if self.paused:
            self._next_pts = None  # restart timestamps from the source's on resume
            return
        for chunk in self._resampler.resample(frame):
            level = audio_level_dbov(chunk.to_ndarray())
            if self._next_pts is None:
                self._next_pts = chunk.pts or 0
            chunk.pts = self._next_pts
            chunk.time_base = _AUDIO_TIME_BASE
            self._next_pts += chunk.samples
            for packet in self._codec.encode(chunk):
                data = bytes(packet)
                if not data:
                    continue
                pts = packet.pts if packet.pts is not None else chunk.pts
                self._pending.append(
                    aiortc_adapter.OutboundFrame(
                        self._protect(data), pts, _AUDIO_TIME_BASE, audio_level=level
                    )
                )


# ------------------------------------------------------------------------------ receiving


class ReceiverStats:
    """Counters of one :class:`DecryptingReceiver` (plain attributes, cheap to read)."""

    def __init__(self) -> None:
        self.frames_received = 0
        self.frames_decoded = 0  # decoded av frames handed out
        self.decrypt_failures = 0
        self.decode_errors = 0
        self.skipped_waiting_keyframe = 0
        self.keyframe_requests = 0
        self.bytes_received = 0
        self.frames_held = 0  # waited for a key on its way (not failures unless it never came)
        # Under a sender's key from before the first one it sealed us (before our join,
        # or in flight while we joined): never ours to read, so not failures either.
        self.frames_predating = 0
        self.skipped_behind = 0  # opened but not decoded: we were too far behind
        self.skipped_other_sender = 0  # a delta frame of a sender whose picture we lack
        self.decoded_by_kid: collections.Counter[int] = collections.Counter()
        self.failures_by_kid: collections.Counter[int | None] = collections.Counter()
        # Why frames failed: "UnknownKeyError", "AuthenticationError", "ReplayError", ...
        self.failures_by_reason: collections.Counter[str] = collections.Counter()

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_received": self.frames_received,
            "frames_decoded": self.frames_decoded,
            "decrypt_failures": self.decrypt_failures,
            "decode_errors": self.decode_errors,
            "skipped_waiting_keyframe": self.skipped_waiting_keyframe,
            "keyframe_requests": self.keyframe_requests,
            "bytes_received": self.bytes_received,
            "frames_held": self.frames_held,
            "frames_predating": self.frames_predating,
            "skipped_behind": self.skipped_behind,
            "skipped_other_sender": self.skipped_other_sender,
            "decoded_by_kid": dict(self.decoded_by_kid),
            "failures_by_kid": dict(self.failures_by_kid),
            "failures_by_reason": dict(self.failures_by_reason),
        }


class DecryptingReceiver(MediaStreamTrack):
    """Unprotects and decodes what a pass-through receiver track yields.

    ``track`` yields :class:`aiortc_adapter.EncodedFrame` (see
    ``aiortc_adapter.enable_passthrough``); ``keys`` is the receiving SFrame context holding
    every sender's key by KID (the caller adds and removes keys as epochs change).
    ``recv()`` returns decoded ``av.VideoFrame`` / ``av.AudioFrame`` objects; the KID a
    frame was encrypted under (it identifies the sender) is ``last_kid`` right after
    ``recv()`` returns it, or use :meth:`recv_with_kid`. (Not ``frame.opaque``: PyAV keys
    opaque values by ``id()``, so equal small ints on two frames clobber each other.)
    ``request_keyframe`` is called (at most once per second) when the picture needs a
    keyframe and the frames are decryptable. ``resolve_kid(kid)`` is called for a frame
    whose KID has no key: it may add that key to ``keys`` (e.g. by ratcheting the sender's
    previous one) and return True, and the frame is tried again. ``hold_unknown(kid)``
    says whether the key for a KID without one is on its way: such frames wait (in order,
    at most ``hold_seconds``) and are tried again when the next frame arrives after
    :meth:`keys_changed`; only those whose key never comes count as decrypt failures.
    ``predates(kid)`` says a KID without a key is from before the first key its sender
    gave us (sent before we joined, or in flight meanwhile): such frames are dropped and
    counted as ``frames_predating``, not as failures.
    With ``keys`` per source (:data:`RecvKeys`), a frame is tried only with the keys of the
    publisher its packets name (``EncodedFrame.source``), and with ``kid_source`` (key id
    -> the sender index it names) its key id must name that publisher too; otherwise it is
    dropped as :class:`WrongSourceError` before any key or replay window is touched.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        keys: RecvKeys,
        *,
        request_keyframe: Callable[[], None] | None = None,
        resolve_kid: Callable[[int], bool] | None = None,
        hold_unknown: Callable[[int], bool] | None = None,
        predates: Callable[[int], bool] | None = None,
        hold_seconds: float = HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        kid_source: Callable[[int], int] | None = None,
    ) -> None:
        super().__init__()
        self._kid_source = kid_source
        self.kind = track.kind
        self._resolve_kid = resolve_kid
        self.hold_unknown = hold_unknown
        self.predates = predates
        self._hold_seconds = hold_seconds
        # Frames waiting for their key: (first seen, frame), oldest first.
        self._held: collections.deque[tuple[float, aiortc_adapter.EncodedFrame]] = (
            collections.deque()
        )
        self._retry_held = False
        self.track = track
        self.keys = keys
        self.screen = False  # a screen-share slot (SfuSession sets it)
        self.stats = ReceiverStats()
        self.last_kid: int | None = None
        # Called with the frame's KID (None if unparsable) for every frame dropped as
        # undecryptable; the call client attributes it to a participant.
        self.on_decrypt_failure: Callable[[int | None], None] | None = None
        self._codec_name = "vp8" if track.kind == "video" else "opus"
        self._request_keyframe = request_keyframe
        self._clock = clock
        self._last_request = -math.inf
        self._need_keyframe = True
        self._decoder: Any = None
        self._picture_of: int | None = None  # the sender index whose picture it decodes
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()

    def keys_changed(self) -> None:
        """The key ring changed: try held frames again, and if the picture is stalled, ask
        for a keyframe right away."""
        self._retry_held = bool(self._held)
        self._last_request = -math.inf
        if self.kind == "video" and self._need_keyframe and self.stats.frames_received:
            self._ask_keyframe()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        return (await self.recv_with_kid())[1]

    async def recv_with_kid(self) -> tuple[int, av.VideoFrame | av.AudioFrame]:
        """The next decoded frame and the KID it was encrypted under."""
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            if self._retry_held:
                await self._release_held()
                continue
            try:
                item = await self.track.recv()
            except MediaStreamError:
                self.stop()
                raise
            if isinstance(item, aiortc_adapter.EncodedFrame):
                if self._held:  # their key may have come meanwhile; they go first
                    await self._release_held()
                await self._handle(item)
        kid, frame = self._pending.popleft()
        self.last_kid = kid
        return kid, frame

    async def _release_held(self) -> None:
        self._retry_held = False
        held, self._held = self._held, collections.deque()
        for since, item in held:
            await self._handle(item, since)

    def _hold(self, item: aiortc_adapter.EncodedFrame, since: float | None) -> bool:
        """Keep a frame whose key is on its way; False if it must count as a failure."""
        now = self._clock()
        if self.hold_unknown is None or len(self._held) >= HOLD_MAX_FRAMES:
            return False
        if since is not None and now - since >= self._hold_seconds:
            return False
        kid = _peek_kid(self._codec_name, item.data)
        if kid is None or not self.hold_unknown(kid):
            return False
        if since is None:
            self.stats.frames_held += 1
        self._held.append((now if since is None else since, item))
        return True

    async def _handle(
        self, item: aiortc_adapter.EncodedFrame, held_since: float | None = None
    ) -> None:
        st = self.stats
        if held_since is None:
            st.frames_received += 1
            st.bytes_received += len(item.data)
        try:
            kid, frame = self._unprotect(item.data, item.source)
        except UnknownKeyError as exc:
            if self._hold(item, held_since):
                return
            peeked = _peek_kid(self._codec_name, item.data)
            if peeked is not None and self.predates is not None and self.predates(peeked):
                st.frames_predating += 1
                return
            self._count_failure(item, exc)
            return
        except (SFrameError, ValueError, IndexError) as exc:
            self._count_failure(item, exc)
            return
        if self.kind == "video":
            decoded = await self._decode_video(kid, frame, item.timestamp)
        else:
            decoded = self._decode_audio(frame, item.timestamp)
        st.frames_decoded += len(decoded)
        st.decoded_by_kid[kid] += len(decoded)
        self._pending.extend((kid, out) for out in decoded)

    def _count_failure(self, item: aiortc_adapter.EncodedFrame, exc: Exception) -> None:
        st = self.stats
        st.decrypt_failures += 1
        st.failures_by_reason[type(exc).__name__] += 1
        kid_or_none = _peek_kid(self._codec_name, item.data)
        st.failures_by_kid[kid_or_none] += 1
        self._need_keyframe = True
        if self.on_decrypt_failure is not None:
            # A frame on the wrong slot is not its key id's sender's failure: whoever sent
            # it may have forged the id, so it is attributed to nobody.
            wrong_slot = isinstance(exc, WrongSourceError)
            self.on_decrypt_failure(None if wrong_slot else kid_or_none)

    def _context(self, source: int | None) -> SFrameContext:
        keys = self.keys
        if isinstance(keys, SFrameContext):
            return keys
        ctx = keys(source)
        if ctx is None:
            raise WrongSourceError(f"no keys for the publisher this slot names ({source})")
        return ctx

    def _unprotect(self, data: bytes, source: int | None = None) -> tuple[int, bytes]:
        if self._kid_source is not None:
            # The key id must name the publisher the slot carries, before any key is tried.
            kid = _peek_kid(self._codec_name, data)
            if kid is None or self._kid_source(kid) != source:
                raise WrongSourceError(f"key id {kid} on a slot carrying publisher {source}")
        try:
            return unprotect_frame(self._context(source), self._codec_name, data)
        except UnknownKeyError:
            # A sender may move to its next epoch before we heard of it: the call client
            # can often derive that key (a ratchet) or knows it just arrived. Ask once.
            kid = _peek_kid(self._codec_name, data)
            if self._resolve_kid is None or kid is None or not self._resolve_kid(kid):
                raise
            return unprotect_frame(self._context(source), self._codec_name, data)

    def _behind(self) -> bool:
        """Are more than BEHIND_FRAMES frames queued behind the one at hand?"""
        return aiortc_adapter.queued_frames(self.track) > BEHIND_FRAMES

    async def _decode_video(self, kid: int, frame: bytes, timestamp: int) -> list[Any]:
        keyframe = bool(frame) and frame[0] & 0x01 == 0
        sender = kid >> 16  # the key that opened it names its sender (§15.2)
        if sender != self._picture_of:
            # Another publisher in this slot (a switch, or an SFU interleaving two): its
            # picture starts at its keyframe, never on the other's (a delta frame decoded
            # there would show the other's face under this sender's name).
            if keyframe:
                self._decoder = None
                self._picture_of = sender
            elif self._picture_of is not None:
                self.stats.skipped_other_sender += 1
                self._need_keyframe = True
                self._ask_keyframe()
                return []
        if not keyframe and self._behind():
            self.stats.skipped_behind += 1
            self._need_keyframe = True  # the next picture starts from a keyframe
            return []
        if self._need_keyframe and not keyframe:
            # A delta frame cannot be decoded without its references.
            self.stats.skipped_waiting_keyframe += 1
            self._ask_keyframe()
            return []
        if self._decoder is None:
            self._decoder = av.CodecContext.create("libvpx", "r")
        packet = av.Packet(frame)
        packet.pts = timestamp
        packet.time_base = _VIDEO_TIME_BASE
        loop = asyncio.get_running_loop()
        try:
            frames = await loop.run_in_executor(None, self._decoder.decode, packet)
        except av.FFmpegError:
            self.stats.decode_errors += 1
            self._need_keyframe = True
            self._ask_keyframe()
            return []
        self._need_keyframe = False
        return list(frames)

    def _decode_audio(self, frame: bytes, timestamp: int) -> list[Any]:
        if self._decoder is None:
            self._decoder = av.CodecContext.create("libopus", "r")
            self._decoder.format = "s16"
            self._decoder.layout = "stereo"
            self._decoder.sample_rate = AUDIO_RATE
        packet = av.Packet(frame)
        packet.pts = timestamp
        packet.time_base = _AUDIO_TIME_BASE
        try:
            return list(self._decoder.decode(packet))
        except av.FFmpegError:
            self.stats.decode_errors += 1
            return []

    def _ask_keyframe(self) -> None:
        now = self._clock()
        if self._request_keyframe is None or now - self._last_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_request = now
        self.stats.keyframe_requests += 1
        try:
            self._request_keyframe()
        except Exception:
            logger.exception("keyframe request failed")

    def stop(self) -> None:
        super().stop()
        self.track.stop()


# ------------------------------------------------------------------------------ session


FrameHandler = Callable[[DecryptingReceiver, int, Any], None]


def _prefer(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    codecs = [
        c
        for c in RTCRtpSender.getCapabilities(transceiver.kind).codecs
        if c.mimeType.lower() == mime_type
    ]
    transceiver.setCodecPreferences(codecs)


class SfuSession:
    """The client side of one SFU connection: E2EE publishing plus receiving slots.

    Usage::

        session = SfuSession(send_ctx=tx, send_kid=kid, recv_ctx=rx, video=cam, audio=mic)
        offer = await session.create_offer()          # -> control plane -> SfuNode.join()
        await session.set_answer(answer)              # <- the node's answer
        session.start_receiving(on_frame)             # on_frame(receiver, kid, frame)
        ...
        session.set_send_key(new_kid)                 # after a rekey (forces a keyframe)
        session.keys_changed()                        # after adding/removing receive keys
        await session.close()

    ``send_ctx`` holds this participant's own key(s) (encrypt-only; not needed by a
    receive-only participant), ``recv_ctx`` every other participant's (decrypt-only):
    one context for all, or per source (see :data:`RecvKeys`; the call client's way);
    all use suite 4. A sender's video and audio share one CTR sequence under its KID and
    ``recv_ctx``'s replay window spans both, so keep every receiver consumed (as
    :meth:`start_receiving` does) or give ``recv_ctx`` a wider window (e.g. 1024).
    ``video_slots`` / ``audio_slots`` bound how many publishers this client sees and hears
    at once (the SFU fills them with the most recent active speakers). ``screen`` is a
    shared screen to publish (a second VP8 track under the same key id and counter) and
    ``screen_slots`` how many others' screens to receive; those receivers have
    ``screen = True`` (PROTOCOL.md §15.6). ``resolve_kid``,
    ``hold_unknown``, ``predates`` and ``kid_source`` are handed to every
    :class:`DecryptingReceiver`.
    """

    def __init__(
        self,
        *,
        recv_ctx: RecvKeys,
        send_ctx: SFrameContext | None = None,
        send_kid: int | None = None,
        video: MediaStreamTrack | None = None,
        audio: MediaStreamTrack | None = None,
        video_slots: int = 4,
        audio_slots: int = 4,
        screen: MediaStreamTrack | None = None,
        screen_slots: int = 0,
        configuration: RTCConfiguration | None = None,
        video_bitrate: int = 300_000,
        resolve_kid: Callable[[int], bool] | None = None,
        hold_unknown: Callable[[int], bool] | None = None,
        predates: Callable[[int], bool] | None = None,
        kid_source: Callable[[int], int] | None = None,
    ) -> None:
        # max-bundle: with aiortc's default (balanced), a second transceiver of one kind
        # can stay on a transport that BUNDLE negotiation then stops.
        self.pc = RTCPeerConnection(
            configuration
            or RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.recv_ctx = recv_ctx
        self._resolve_kid = resolve_kid
        self._hold_unknown = hold_unknown
        self._predates = predates
        self._kid_source = kid_source
        self.video_sender: EncryptedVideoSender | None = None
        self.audio_sender: EncryptedAudioSender | None = None
        self.screen_sender: EncryptedVideoSender | None = None
        self.receivers: list[DecryptingReceiver] = []
        self._slots: list[RTCRtpTransceiver] = []
        self._screen_sections: list[RTCRtpTransceiver] = []  # marked in the offer
        self._tasks: list[asyncio.Task[None]] = []
        self._pli_tasks: set[asyncio.Future[None]] = set()
        self.remb_bps: int | None = None  # the SFU's last estimate of our uplink (REMB)
        if (video or audio or screen) is not None and (send_ctx is None or send_kid is None):
            raise ValueError("publishing needs send_ctx and send_kid")
        if video is not None:
            assert send_ctx is not None and send_kid is not None
            self.video_sender = EncryptedVideoSender(
                video, send_ctx, send_kid, bitrate=video_bitrate
            )
            t = self.pc.addTransceiver(self.video_sender, direction="sendonly")
            _prefer(t, "video/vp8")
            aiortc_adapter.enable_preencoded(t.sender)
            aiortc_adapter.on_keyframe_request(t.sender, self.video_sender.request_keyframe)
            aiortc_adapter.on_remb(t.sender, self._on_remb)
        if audio is not None:
            assert send_ctx is not None and send_kid is not None
            self.audio_sender = EncryptedAudioSender(audio, send_ctx, send_kid)
            t = self.pc.addTransceiver(self.audio_sender, direction="sendonly")
            _prefer(t, "audio/opus")
            aiortc_adapter.enable_preencoded(t.sender)
        if screen is not None:
            # Same key id and counter as the camera and microphone (PROTOCOL.md §15.6).
            assert send_ctx is not None and send_kid is not None
            self.screen_sender = EncryptedVideoSender(
                screen, send_ctx, send_kid, bitrate=SCREEN_BITRATE
            )
            t = self.pc.addTransceiver(self.screen_sender, direction="sendonly")
            _prefer(t, "video/vp8")
            aiortc_adapter.enable_preencoded(t.sender)
            aiortc_adapter.on_keyframe_request(t.sender, self.screen_sender.request_keyframe)
            self._screen_sections.append(t)
        for kind, count, is_screen in (
            ("video", video_slots, False),
            ("audio", audio_slots, False),
            ("video", screen_slots, True),
        ):
            for _ in range(count):
                t = self.pc.addTransceiver(kind, direction="recvonly")
                _prefer(t, "video/vp8" if kind == "video" else "audio/opus")
                aiortc_adapter.enable_passthrough(t.receiver)
                aiortc_adapter.use_marker_release(t.receiver, kind)
                self._slots.append(t)
                if is_screen:
                    self._screen_sections.append(t)

    async def create_offer(self) -> str:
        """Create the offer SDP to hand to ``SfuNode.join`` (candidates included)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        mids = [t.mid for t in self._screen_sections if t.mid is not None]
        return mark_screen_sections(str(self.pc.localDescription.sdp), mids)

    async def set_answer(self, sdp: str) -> None:
        """Apply the SFU's answer; receivers exist from here on."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        for t in self._slots:
            if t.receiver.track is None:
                continue
            receiver = DecryptingReceiver(
                t.receiver.track,
                self.recv_ctx,
                request_keyframe=self._pli_sender(t.receiver),
                resolve_kid=self._resolve_kid,
                hold_unknown=self._hold_unknown,
                predates=self._predates,
                kid_source=self._kid_source,
            )
            receiver.screen = t in self._screen_sections
            self.receivers.append(receiver)

    def _pli_sender(self, receiver: RTCRtpReceiver) -> Callable[[], None]:
        def request() -> None:
            sources = receiver.getSynchronizationSources()
            if sources:
                ssrc = max(sources, key=lambda s: s.timestamp).source
                task = asyncio.ensure_future(aiortc_adapter.send_pli(receiver, ssrc))
                self._pli_tasks.add(task)
                task.add_done_callback(self._pli_tasks.discard)

        return request

    def start_receiving(
        self,
        on_frame: FrameHandler | None,
        on_decrypt_failure: Callable[[int | None], None] | None = None,
    ) -> None:
        """Consume every receiver in background tasks, calling ``on_frame(receiver, kid,
        frame)`` for each decoded frame and ``on_decrypt_failure(kid)`` for each dropped one.

        Someone must consume the receivers, or aiortc queues their frames without bound.
        """
        for r in self.receivers:
            r.on_decrypt_failure = on_decrypt_failure
            self._tasks.append(asyncio.create_task(self._consume(r, on_frame)))

    @staticmethod
    async def _consume(
        r: DecryptingReceiver,
        on_frame: FrameHandler | None,
    ) -> None:
        try:
            while True:
                kid, frame = await r.recv_with_kid()
                if on_frame is None:
                    continue
                try:
                    on_frame(r, kid, frame)
                except Exception:  # a sink bug must not stop the media
                    logger.exception("frame handler failed")
        except MediaStreamError:
            pass

    def _on_remb(self, bitrate: int) -> None:
        """The SFU's estimate of our uplink (REMB over all our up-tracks): what is left after
        audio (and a shared screen, which keeps its rate) goes to the camera's encoder."""
        assert self.video_sender is not None
        self.remb_bps = bitrate
        budget = bitrate
        if self.audio_sender is not None and not self.audio_sender.paused:
            budget -= AUDIO_RESERVE
        if self.screen_sender is not None and not self.screen_sender.paused:
            budget -= self.screen_sender.encoder_bitrate
        self.video_sender.set_target_bitrate(budget)

    def set_send_key(self, kid: int) -> None:
        """Encrypt outgoing media under ``kid`` from now on (a keyframe follows)."""
        for sender in (self.video_sender, self.audio_sender, self.screen_sender):
            if sender is not None:
                sender.set_key(kid)

    def set_sending(self, *, video: bool, audio: bool) -> None:
        """Whether our video and audio leave this machine (mute, stage role)."""
        if self.video_sender is not None:
            self.video_sender.set_paused(not video)
        if self.audio_sender is not None:
            self.audio_sender.set_paused(not audio)
        if self.screen_sender is not None:  # a screen is video: the same permission
            self.screen_sender.set_paused(not video)

    def keys_changed(self) -> None:
        """Tell the receivers that ``recv_ctx`` changed (ask for keyframes if stalled)."""
        for r in self.receivers:
            r.keys_changed()

    def stats(self) -> dict[str, Any]:
        video = [r.stats for r in self.receivers if r.kind == "video" and not r.screen]
        audio = [r.stats for r in self.receivers if r.kind == "audio"]
        screen = [r.stats for r in self.receivers if r.screen]
        return {
            "connection_state": self.pc.connectionState,
            "video_frames_decoded": sum(s.frames_decoded for s in video),
            "audio_frames_decoded": sum(s.frames_decoded for s in audio),
            "screen_frames_decoded": sum(s.frames_decoded for s in screen),
            "decrypt_failures": sum(s.decrypt_failures for s in video + audio + screen),
            "video_bitrate": None
            if self.video_sender is None
            else {
                "target_kbps": round(self.video_sender.encoder_bitrate / 1000),
                "ceiling_kbps": round(self.video_sender.bitrate / 1000),
                "estimate_kbps": None if self.remb_bps is None else round(self.remb_bps / 1000),
                "retargets": self.video_sender.retargets,
            },
            "frames_sent": {
                "video": self.video_sender.frames_sent if self.video_sender else 0,
                "audio": self.audio_sender.frames_sent if self.audio_sender else 0,
                "screen": self.screen_sender.frames_sent if self.screen_sender else 0,
            },
            "receivers": [
                {"kind": "screen" if r.screen else r.kind, **r.stats.as_dict()}
                for r in self.receivers
            ],
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.pc.close()
