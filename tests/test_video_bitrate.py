"""The CLI's camera encoder following congestion feedback (issue 13): REMB moves
:class:`EncryptedVideoSender`'s target between its floor and its ceiling, and the encoder
re-opens at the new rate (a keyframe) only for a large enough change, not too often."""

from __future__ import annotations

import fractions

import av

from client.call.e2ee_media import (
    MEDIA_SUITE,
    MIN_VIDEO_BITRATE,
    RETARGET_INTERVAL,
    EncryptedVideoSender,
)
from client.call.media import TestPatternTrack
from client.call.sframe import SFrameContext


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sender(clock: Clock) -> EncryptedVideoSender:
    ctx = SFrameContext(MEDIA_SUITE)
    ctx.add_key(1, bytes(16))
    return EncryptedVideoSender(TestPatternTrack("Alice"), ctx, 1, bitrate=300_000, clock=clock)


def next_frame(s: EncryptedVideoSender) -> av.VideoFrame:
    """The test pattern's next picture, without its real-time pacing."""
    source = s.source
    assert isinstance(source, TestPatternTrack)
    source.frame_count += 1
    frame = av.VideoFrame.from_ndarray(source.render(source.frame_count), format="bgr24")
    frame.pts = source.frame_count * 90_000 // source.fps
    frame.time_base = fractions.Fraction(1, 90_000)
    return frame


def encoded_bits(s: EncryptedVideoSender, frames: int) -> int:
    return sum(len(d) * 8 for _ in range(frames) for d in s._encode(next_frame(s), False))


def test_estimates_are_clamped_to_floor_and_ceiling() -> None:
    s = sender(Clock())
    s.set_target_bitrate(10_000_000)
    assert (s.target_bitrate, s.estimate_bps) == (300_000, 10_000_000)
    s.set_target_bitrate(-5)
    assert s.target_bitrate == MIN_VIDEO_BITRATE
    s.set_target_bitrate(120_000)
    assert s.target_bitrate == 120_000


def test_encoder_follows_a_lower_target_with_a_keyframe_and_spends_less() -> None:
    clock = Clock()
    s = sender(clock)
    encoded_bits(s, 15)  # opened at the ceiling, settled
    high = encoded_bits(s, 30)
    s.set_target_bitrate(60_000)
    encoded_bits(s, 1)
    assert s.encoder_bitrate == 300_000, "re-opened again within RETARGET_INTERVAL"
    clock.now += RETARGET_INTERVAL
    (data,) = s._encode(next_frame(s), False)
    assert data[0] & 0x01 == 0, "a re-opened encoder starts on a keyframe"
    assert (s.encoder_bitrate, s.retargets) == (60_000, 1)
    encoded_bits(s, 15)
    low = encoded_bits(s, 30)
    assert low < 0.7 * high
    # A small change does not cost a keyframe.
    clock.now += RETARGET_INTERVAL
    s.set_target_bitrate(65_000)
    encoded_bits(s, 2)
    assert (s.encoder_bitrate, s.retargets) == (60_000, 1)
