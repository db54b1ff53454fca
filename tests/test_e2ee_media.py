"""client/call/e2ee_media.py: encode + SFrame-protect, unprotect + decode, without the network.

The encrypting tracks' output is fed to a DecryptingReceiver through a stand-in for the
pass-through receiver track, exactly as aiortc would hand it over (EncodedFrame objects).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from client.call.e2ee_media import (
    HOLD_SECONDS,
    MEDIA_SUITE,
    DecryptingReceiver,
    EncryptedAudioSender,
    EncryptedVideoSender,
    audio_level_dbov,
)
from client.call.media import (
    TestPatternTrack,
    ToneTrack,
    colour_distance,
    dominant_colour,
    name_colour,
    tone_frequency,
)
from client.call.sframe import SFrameContext, decode_header
from rtc.aiortc_adapter import EncodedFrame, OutboundFrame

KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))
KID_A, KID_A2, KID_B = 0x10001, 0x10002, 0x20001


class Feed(MediaStreamTrack):
    """Stands in for a pass-through receiver track."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue()

    def push(self, frame: OutboundFrame, codec: str) -> None:
        # aiortc rebases RTP timestamps; the pts in the sender's clock is close enough here.
        self.queue.put_nowait(EncodedFrame(frame.data, frame.pts, codec))

    async def recv(self) -> Any:
        item = await self.queue.get()
        if item is None:
            raise MediaStreamError
        return item


def contexts(
    tx_keys: dict[int, bytes], rx_keys: dict[int, bytes]
) -> tuple[SFrameContext, SFrameContext]:
    tx, rx = SFrameContext(MEDIA_SUITE), SFrameContext(MEDIA_SUITE)
    for kid, key in tx_keys.items():
        tx.add_key(kid, key)
    for kid, key in rx_keys.items():
        rx.add_key(kid, key)
    return tx, rx


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def pump(sender: Any, feed: Feed, codec: str, n: int) -> list[OutboundFrame]:
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(sender.recv(), 5)
        out.append(frame)
        feed.push(frame, codec)
    return out


async def drain(receiver: DecryptingReceiver, feed: Feed) -> list[tuple[int, Any]]:
    """Every frame the receiver can produce from what was fed so far."""
    feed.queue.put_nowait(None)
    frames = []
    try:
        while True:
            frames.append(await asyncio.wait_for(receiver.recv_with_kid(), 5))
    except MediaStreamError:
        pass
    return frames


def test_audio_level_dbov_known_answers() -> None:
    assert audio_level_dbov(np.zeros(960, np.int16)) == -127
    assert audio_level_dbov(np.array([], np.int16)) == -127
    t = np.arange(960) / 48000
    full = (np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16)
    assert audio_level_dbov(full) == -3  # RFC 6465: a full-scale sine is -3 dBov
    assert audio_level_dbov((full * 0.3).astype(np.int16)) == -13
    assert audio_level_dbov(np.full(960, 32767, np.int16)) == 0


async def test_video_round_trip_keeps_codec_header_clear_and_picture_intact() -> None:
    tx, rx = contexts({KID_A: KEY_A}, {KID_A: KEY_A})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    receiver = DecryptingReceiver(feed, rx)
    sent = await pump(sender, feed, "vp8", 6)
    first = sent[0].data
    assert first[0] & 0x01 == 0  # a keyframe comes first, its tag readable by the SFU
    assert first[3:6] == b"\x9d\x01\x2a"  # VP8 keyframe start code, in clear
    assert decode_header(first[10:]).kid == KID_A  # then the SFrame header
    assert all(f.data[0] & 0x01 for f in sent[1:])  # deltas after that
    assert sender.keyframes_sent == 1
    frames = await drain(receiver, feed)
    assert [kid for kid, _ in frames] == [KID_A] * 6
    colour = dominant_colour(frames[-1][1].to_ndarray(format="bgr24"))
    assert colour_distance(colour, name_colour("Alice")) < 40
    assert receiver.stats.decrypt_failures == 0
    assert receiver.stats.frames_decoded == 6
    assert receiver.stats.decoded_by_kid == {KID_A: 6}


async def settle() -> None:
    for _ in range(20):  # let the consumer task take everything fed so far
        await asyncio.sleep(0.005)


async def test_without_the_key_frames_are_dropped_cleanly_then_recover() -> None:
    tx, rx = contexts({KID_A: KEY_A}, {KID_A: KEY_B})  # the receiver holds a wrong key
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    clock = FakeClock()
    asked: list[float] = []
    receiver = DecryptingReceiver(
        feed, rx, request_keyframe=lambda: asked.append(clock.now), clock=clock
    )
    failures: list[int | None] = []
    receiver.on_decrypt_failure = failures.append
    frames: list[tuple[int, Any]] = []

    async def consume() -> None:
        while True:
            frames.append(await receiver.recv_with_kid())

    consumer = asyncio.create_task(consume())
    await pump(sender, feed, "vp8", 5)
    await settle()
    assert receiver.stats.decrypt_failures == 5
    assert frames == []
    assert failures == [KID_A] * 5  # attributed, from the clear SFrame header
    assert receiver.stats.failures_by_reason == {"AuthenticationError": 5}
    assert asked == []  # no key, no keyframe requests: no PLI storm

    # The right key arrives: the receiver asks for a keyframe at once and recovers on it.
    rx.remove_key(KID_A)
    rx.add_key(KID_A, KEY_A)
    receiver.keys_changed()
    assert asked == [0.0]
    await pump(sender, feed, "vp8", 3)  # deltas: undecodable without their keyframe
    sender.request_keyframe()  # what the PLI does at the sender
    await pump(sender, feed, "vp8", 3)
    await settle()
    consumer.cancel()
    assert len(frames) == 3
    assert receiver.stats.skipped_waiting_keyframe == 3
    assert receiver.stats.decrypt_failures == 5
    assert asked == [0.0]  # the skipped deltas may ask again only a second later


async def test_frames_whose_key_is_on_its_way_wait_for_it_in_order() -> None:
    """A sender moved to a new key before its sealed key reached us: the receiver holds
    those frames (they are not failures) and decodes them, in order, once the key is in;
    frames whose key never comes count as failures after HOLD_SECONDS."""
    tx, rx = contexts({KID_A: KEY_A, KID_B: KEY_B}, {})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    clock = FakeClock()
    receiver = DecryptingReceiver(feed, rx, hold_unknown=lambda kid: kid != KID_A2, clock=clock)
    failures: list[int | None] = []
    receiver.on_decrypt_failure = failures.append
    frames: list[tuple[int, Any]] = []

    async def consume() -> None:
        while True:
            frames.append(await receiver.recv_with_kid())

    consumer = asyncio.create_task(consume())
    await pump(sender, feed, "vp8", 4)  # keyframe + 3 deltas, under a key we lack
    await settle()
    assert frames == [] and failures == []
    assert receiver.stats.frames_held == 4 and receiver.stats.decrypt_failures == 0
    rx.add_key(KID_A, KEY_A)  # the sealed key arrives
    receiver.keys_changed()
    await pump(sender, feed, "vp8", 1)
    await settle()
    assert [kid for kid, _ in frames] == [KID_A] * 5  # the held keyframe first: all decoded
    assert receiver.stats.skipped_waiting_keyframe == 0 and failures == []

    # A key that never comes: held for HOLD_SECONDS, then counted.
    sender.set_key(KID_B)
    await pump(sender, feed, "vp8", 2)
    await settle()
    assert receiver.stats.frames_held == 6 and failures == []
    clock.now += HOLD_SECONDS + 0.1
    await pump(sender, feed, "vp8", 1)
    await settle()
    consumer.cancel()
    assert failures == [KID_B] * 2 and receiver.stats.decrypt_failures == 2
    assert receiver.stats.failures_by_reason == {"UnknownKeyError": 2}
    assert receiver.stats.frames_held == 7  # the newest one waits its own second


async def test_keyframe_requests_are_rate_limited() -> None:
    tx, rx = contexts({KID_A: KEY_A}, {KID_A: KEY_A})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    await sender.recv()  # the keyframe is lost on the way
    feed = Feed("video")
    clock = FakeClock()
    asked: list[float] = []
    receiver = DecryptingReceiver(
        feed, rx, request_keyframe=lambda: asked.append(clock.now), clock=clock
    )
    consumer = asyncio.create_task(receiver.recv())
    for _ in range(12):
        await pump(sender, feed, "vp8", 1)
        await settle()
        clock.now += 0.25
    consumer.cancel()
    assert receiver.stats.skipped_waiting_keyframe == 12
    assert asked == [0.0, 1.0, 2.0]  # 12 undecodable frames over 3 s: one request a second


async def test_sender_rekey_switches_kid_with_a_keyframe() -> None:
    tx, rx = contexts({KID_A: KEY_A, KID_A2: KEY_B}, {KID_A: KEY_A, KID_A2: KEY_B})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    receiver = DecryptingReceiver(feed, rx)
    await pump(sender, feed, "vp8", 3)
    sender.set_key(KID_A2)
    after = await pump(sender, feed, "vp8", 2)
    assert after[0].data[0] & 0x01 == 0  # a keyframe follows the key change
    assert decode_header(after[0].data[10:]).kid == KID_A2
    frames = await drain(receiver, feed)
    assert [kid for kid, _ in frames] == [KID_A] * 3 + [KID_A2] * 2
    with pytest.raises(ValueError):
        sender.set_key(0x999)


async def test_tampered_frames_are_failures_not_crashes() -> None:
    tx, rx = contexts({KID_A: KEY_A}, {KID_A: KEY_A})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    receiver = DecryptingReceiver(feed, rx)
    good = await sender.recv()
    data = bytearray(good.data)
    data[1] ^= 0x40  # a clear codec-header byte: authenticated as SFrame metadata
    for bad in (bytes(data), good.data[:-1], b"", b"\x10", good.data[:12]):
        feed.queue.put_nowait(EncodedFrame(bad, 0, "vp8"))
    feed.push(good, "vp8")
    feed.push(good, "vp8")  # a replay
    frames = await drain(receiver, feed)
    assert len(frames) == 1
    assert receiver.stats.decrypt_failures == 6
    assert receiver.stats.failures_by_reason["ReplayError"] == 1


async def test_audio_round_trip_carries_level_and_tone() -> None:
    tx, rx = contexts({KID_B: KEY_B}, {KID_B: KEY_B})
    tone = ToneTrack("Bob")
    sender = EncryptedAudioSender(tone, tx, KID_B)
    feed = Feed("audio")
    receiver = DecryptingReceiver(feed, rx)
    sent = await pump(sender, feed, "opus", 25)
    assert {f.audio_level for f in sent[5:]} <= {-13, -14}  # amplitude 0.3: about -13 dBov
    assert all(len(f.data) < 200 for f in sent)
    frames = await drain(receiver, feed)
    assert len(frames) == 25
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for _, f in frames[5:]])
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    peak = np.argmax(spectrum) * 48000 / len(pcm)
    assert math.isclose(peak, tone_frequency("Bob"), rel_tol=0.02)
    tone.muted = True
    silent = await pump(sender, feed, "opus", 10)
    assert silent[-1].audio_level == -127


async def test_audio_without_key_plays_nothing() -> None:
    tx, rx = contexts({KID_B: KEY_B}, {})
    sender = EncryptedAudioSender(ToneTrack("Bob"), tx, KID_B)
    feed = Feed("audio")
    receiver = DecryptingReceiver(feed, rx)
    await pump(sender, feed, "opus", 10)
    assert await drain(receiver, feed) == []
    assert receiver.stats.decrypt_failures == 10
    assert receiver.stats.failures_by_reason == {"UnknownKeyError": 10}


async def test_paused_senders_send_nothing_and_video_resumes_on_a_keyframe() -> None:
    tx, _ = contexts({KID_A: KEY_A}, {})
    video = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    await video.recv()
    await video.recv()
    video.set_paused(True)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(video.recv(), 0.3)
    video.set_paused(False)
    resumed = await asyncio.wait_for(video.recv(), 5)
    assert resumed.data[0] & 0x01 == 0
    assert video.keyframes_sent == 2


def test_senders_refuse_other_suites_and_missing_keys() -> None:
    other = SFrameContext(5)
    other.add_key(1, bytes(32))
    with pytest.raises(ValueError):
        EncryptedVideoSender(TestPatternTrack("A"), other, 1)
    tx, _ = contexts({KID_A: KEY_A}, {})
    with pytest.raises(ValueError):
        EncryptedAudioSender(ToneTrack("A"), tx, KID_B)


async def test_an_unknown_kid_can_be_resolved_on_the_spot() -> None:
    tx, rx = contexts({KID_A: KEY_A, KID_A2: KEY_B}, {KID_A: KEY_A})
    sender = EncryptedVideoSender(TestPatternTrack("Alice", fps=30), tx, KID_A)
    feed = Feed("video")
    asked: list[int] = []

    def resolve(kid: int) -> bool:  # the call client ratchets / looks the key up
        asked.append(kid)
        if kid == KID_A2:
            rx.add_key(KID_A2, KEY_B)
            return True
        return False

    receiver = DecryptingReceiver(feed, rx, resolve_kid=resolve)
    await pump(sender, feed, "vp8", 2)
    sender.set_key(KID_A2)  # the sender moved on before the receiver heard of it
    await pump(sender, feed, "vp8", 2)
    frames = await drain(receiver, feed)
    assert [kid for kid, _ in frames] == [KID_A, KID_A, KID_A2, KID_A2]
    assert asked == [KID_A2]
    assert receiver.stats.decrypt_failures == 0
