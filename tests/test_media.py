"""Media sources and the grid recorder, including a real aiortc loopback call."""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import fractions
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from support import until

from client.call.media import (
    MediaError,
    TestPatternTrack,
    ToneTrack,
    colour_distance,
    dominant_colour,
    name_colour,
    open_audio_source,
    open_sources,
    open_video_source,
)
from client.call.recorder import GridRecorder, grid_cells, pick_codec
from rtc.aiortc_adapter import restrict_ice_host_addresses

CAST = ["Alice", "Bob", "Carol", "Dave", "Erin"]

# Received video goes through yuv420p and VP8: allow some drift from the sent colour.
SAME_COLOUR = 40.0
OTHER_COLOUR = 120.0


def hue(bgr: tuple[int, int, int]) -> float:
    b, g, r = bgr
    return colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360


def hue_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def rms(samples: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    await until(condition, what, timeout, interval=0.02)


# --- colours and synthetic tracks ----------------------------------------------------------


def test_name_colour_is_deterministic_and_saturated() -> None:
    assert name_colour("Alice") == name_colour("Alice")
    for name in CAST:
        b, g, r = name_colour(name)
        assert max(b, g, r) - min(b, g, r) > 200, name  # saturated


def test_cast_colours_are_far_apart_in_hue() -> None:
    hues = {name: hue(name_colour(name)) for name in CAST}
    for a, b in itertools.combinations(CAST, 2):
        assert hue_gap(hues[a], hues[b]) >= 30, (a, b, hues[a], hues[b])
        assert colour_distance(name_colour(a), name_colour(b)) > OTHER_COLOUR, (a, b)


def test_dominant_colour_ignores_text_and_bar() -> None:
    track = TestPatternTrack("Alice")
    for n in (0, 7, 20):
        img = track.render(n)
        assert img.shape == (240, 320, 3)
        assert dominant_colour(img) == name_colour("Alice")
    assert not np.array_equal(track.render(1), track.render(2))  # something moves
    with pytest.raises(ValueError):
        dominant_colour(np.zeros((4, 4), dtype=np.uint8))


async def test_test_pattern_frames_and_timestamps() -> None:
    track = TestPatternTrack("Bob", width=160, height=120, fps=30)
    try:
        frames = [await track.recv() for _ in range(3)]
    finally:
        track.stop()
    assert [f.pts for f in frames] == [0, 3000, 6000]
    assert frames[0].time_base == fractions.Fraction(1, 90000)
    assert (frames[0].width, frames[0].height) == (160, 120)
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_tone_frames_and_mute() -> None:
    tone = ToneTrack("Alice", frequency=440.0)
    try:
        first, second = await tone.recv(), await tone.recv()
        tone.muted = True
        muted = await tone.recv()
    finally:
        tone.stop()
    assert (first.sample_rate, first.samples, first.format.name) == (48000, 960, "s16")
    assert first.layout.name == "mono"
    assert (first.pts, second.pts, muted.pts) == (0, 960, 1920)
    assert rms(first.to_ndarray()) > 5000
    assert rms(muted.to_ndarray()) == 0
    assert ToneTrack("Alice").frequency != ToneTrack("Bob").frequency


# --- opening sources -----------------------------------------------------------------------


def write_clip(path: Path, frames: int = 15, with_audio: bool = False) -> None:
    """A 1 s clip: blue-ish 160x120 video at 15 fps and optionally a mono AAC tone."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=15)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("aac", rate=48000) if with_audio else None
        audio_pts = 0
        for i in range(frames):
            img = np.full((120, 160, 3), (200, 30, 30), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
            while audio is not None and audio_pts < (i + 1) * 3200:
                wave = np.sin(np.arange(audio_pts, audio_pts + 1024) / 10) * 8000
                chunk = av.AudioFrame.from_ndarray(
                    wave.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 48000, audio_pts
                audio_pts += 1024
                out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        if audio is not None:
            out.mux(audio.encode(None))


def test_open_sources_keywords() -> None:
    assert open_video_source("none", "Alice") is None
    assert open_audio_source(" NONE ", "Alice") is None
    video = open_video_source("test", "Alice")
    audio = open_audio_source("test", "Alice")
    assert isinstance(video, TestPatternTrack) and video.colour == name_colour("Alice")
    assert isinstance(audio, ToneTrack)


@pytest.mark.parametrize("opener", [open_video_source, open_audio_source])
def test_unknown_spec(opener: Callable[[str, str], MediaStreamTrack | None]) -> None:
    with pytest.raises(MediaError, match=r"unknown (video|audio) source 'tset' \(expected test"):
        opener("tset", "Alice")


@pytest.mark.parametrize("opener", [open_video_source, open_audio_source])
def test_missing_file(
    tmp_path: Path, opener: Callable[[str, str], MediaStreamTrack | None]
) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(MediaError, match=r"media file not found: .*nope\.mp4"):
        opener(str(missing), "Alice")


def test_undecodable_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video\n" * 100)
    with pytest.raises(MediaError, match=r"cannot decode media file .*junk\.mp4") as info:
        open_video_source(str(junk), "Alice")
    assert "\n" not in str(info.value)


def test_missing_camera() -> None:
    with pytest.raises(MediaError, match=r"^no camera at index 99$"):
        open_video_source("camera:99", "Alice")
    with pytest.raises(MediaError, match="bad camera index"):
        open_video_source("camera:x", "Alice")
    with pytest.raises(MediaError, match="is a video source"):
        open_audio_source("camera", "Alice")


async def test_file_source(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    with pytest.raises(MediaError, match=r"media file has no audio stream: .*clip\.mp4"):
        open_audio_source(str(clip), "Alice")
    with pytest.raises(MediaError, match="no audio stream"):
        open_sources(str(clip), str(clip), "Alice")
    track = open_video_source(str(clip), "Alice")
    assert track is not None and track.kind == "video"
    try:
        frame = await asyncio.wait_for(track.recv(), 5)
        assert isinstance(frame, av.VideoFrame)
        img = frame.to_ndarray(format="bgr24")
        assert colour_distance(dominant_colour(img), (200, 30, 30)) < SAME_COLOUR
    finally:
        track.stop()
    assert track.readyState == "ended"


async def test_file_source_with_both_kinds(tmp_path: Path) -> None:
    clip = tmp_path / "av.mp4"
    write_clip(clip, with_audio=True)
    # Only the video is used: the file's audio is drained, not queued for ever.
    video = open_video_source(str(clip), "Alice")
    assert video is not None
    try:
        for _ in range(3):
            await asyncio.wait_for(video.recv(), 5)
    finally:
        video.stop()
    # One file for both kinds: one player, tracks run to the end of the file.
    video, audio = open_sources(str(clip), str(clip), "Alice")
    assert video is not None and audio is not None
    try:
        sound = await asyncio.wait_for(audio.recv(), 5)
        assert isinstance(sound, av.AudioFrame) and sound.sample_rate == 48000
        with pytest.raises(MediaStreamError):
            for _ in range(100):
                await asyncio.wait_for(video.recv(), 5)
    finally:
        audio.stop()
        video.stop()


# --- recorder ------------------------------------------------------------------------------


def test_grid_cells() -> None:
    assert grid_cells(0, 640, 480) == []
    assert grid_cells(1, 640, 480) == [(0, 0, 640, 480)]
    assert grid_cells(2, 640, 480) == [(0, 0, 320, 480), (320, 0, 320, 480)]
    four = grid_cells(4, 640, 480)
    assert four[3] == (320, 240, 320, 240)
    five = grid_cells(5, 640, 480)  # 3 columns, 2 rows
    assert five[0] == (0, 0, 213, 240)
    assert five[2] == (426, 0, 214, 240) and five[4] == (213, 240, 213, 240)


def test_pick_codec() -> None:
    assert pick_codec("x.mp4") in ("libx264", "mpeg4")
    assert pick_codec("x.WEBM") == "libvpx"
    with pytest.raises(MediaError, match=r"cannot record to \.avi"):
        pick_codec("x.avi")


def solid(colour: tuple[int, int, int]) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(
        np.full((240, 320, 3), colour, dtype=np.uint8), format="bgr24"
    ).reformat(format="yuv420p")  # like a decoded frame


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
async def test_grid_recorder(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"grid{ext}"
    red, blue = (0, 0, 220), (220, 0, 0)
    recorder = GridRecorder(str(path), fps=15)
    await recorder.start()
    try:
        # Alice alone for a while, then Bob joins: the grid re-flows, the size stays.
        for i in range(20):
            recorder.update("a", "Alice", solid(red))
            if i >= 6:
                recorder.update("b", "Bob", solid(blue))
            await asyncio.sleep(1 / 15)
    finally:
        await recorder.stop()
    await recorder.stop()  # idempotent

    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(images) > 5
    assert {img.shape for img in images} == {(480, 640, 3)}
    # Early: Alice's tile fills the canvas. Late: Alice left, Bob right (middle band,
    # away from the letterbox bars and labels).
    assert colour_distance(dominant_colour(images[0][100:380]), red) < SAME_COLOUR
    last = images[-1][140:340]
    assert colour_distance(dominant_colour(last[:, :320]), red) < SAME_COLOUR
    assert colour_distance(dominant_colour(last[:, 320:]), blue) < SAME_COLOUR


async def test_grid_recorder_rejects_unwritable_path(tmp_path: Path) -> None:
    recorder = GridRecorder(str(tmp_path / "no" / "such" / "dir" / "x.mkv"))
    with pytest.raises(MediaError, match="cannot record to"):
        await recorder.start()
    await recorder.stop()


# --- a real call on loopback ---------------------------------------------------------------


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """aioice never offers 127.0.0.1; keep this call's traffic on loopback."""
    restrict_ice_host_addresses(["127.0.0.1"])
    yield
    restrict_ice_host_addresses(None)


@pytest.mark.timeout(60)
async def test_loopback_call_pattern_and_tone(loopback_ice: None) -> None:
    # No STUN: host candidates are enough on one machine, and CI may have no network.
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = TestPatternTrack("Alice")
    tone = ToneTrack("Alice")
    remote: dict[str, MediaStreamTrack] = {}
    colours: list[tuple[int, int, int]] = []
    sizes: set[tuple[int, int]] = set()
    audio: list[tuple[float, npt.NDArray[Any]]] = []  # (arrival time, samples)
    tasks: list[asyncio.Task[None]] = []

    answerer.on("track", lambda track: remote.__setitem__(track.kind, track))

    async def consume_video(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                sizes.add((frame.width, frame.height))
                colours.append(dominant_colour(frame.to_ndarray(format="bgr24")))

    async def consume_audio(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                audio.append((time.monotonic(), frame.to_ndarray().reshape(-1)))

    try:
        offerer.addTrack(video)
        offerer.addTrack(tone)
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await wait_until(lambda: len(remote) == 2, 10, "remote tracks")
        tasks = [
            asyncio.create_task(consume_video(remote["video"])),
            asyncio.create_task(consume_audio(remote["audio"])),
        ]

        await wait_until(lambda: len(colours) >= 10, 20, "10 decoded video frames")
        assert sizes == {(320, 240)}
        for colour in colours:
            assert colour_distance(colour, name_colour("Alice")) < SAME_COLOUR, colour
            assert colour_distance(colour, name_colour("Bob")) > OTHER_COLOUR, colour

        await wait_until(lambda: len(audio) >= 25, 10, "0.5 s of audio")
        loud = np.concatenate([s for _, s in audio[-10:]])
        assert rms(loud) > 2000
        # Stereo interleaved s16 at 48 kHz: the left channel's spectral peak is the tone.
        left = loud[0::2].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
        peak_hz = np.argmax(spectrum) * 48000 / len(left)
        assert abs(peak_hz - tone.frequency) < 15, (peak_hz, tone.frequency)

        tone.muted = True
        # Frames already encoded or queued still carry the tone; judge what arrives later.
        settled = time.monotonic() + 0.5
        await wait_until(
            lambda: sum(1 for t, _ in audio if t > settled) >= 25, 10, "audio after mute"
        )
        quiet = np.concatenate([s for t, s in audio if t > settled])
        assert rms(quiet) < 50, rms(quiet)
    finally:
        for task in tasks:
            task.cancel()
        video.stop()
        tone.stop()
        await asyncio.wait_for(offerer.close(), 10)
        await asyncio.wait_for(answerer.close(), 10)
