"""Media sources for ``salon call``: test pattern, tone, camera and media files.

Every source is an aiortc :class:`~aiortc.mediastreams.MediaStreamTrack` that can be given
to ``RTCPeerConnection.addTrack``. Sources are chosen by a short *spec* string:

========================  ============================================================
``test``                  synthetic pattern / tone derived from the display name
``none``                  no track (the function returns ``None``)
``camera``, ``camera:N``  OpenCV camera N (default 0), video only
anything else             a media file path, played once through aiortc's MediaPlayer
========================  ============================================================

Errors: every failure to open a source raises :class:`MediaError` with a one-line message
that can be shown to the user as is.

The helpers :func:`dominant_colour` and :func:`colour_distance` let a receiver check that
the video it decoded is the expected participant's test pattern (its background is
:func:`name_colour` of the sender's name).
"""

from __future__ import annotations

import asyncio
import colorsys
import fractions
import hashlib
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import (
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    VideoStreamTrack,
)
from av.frame import Frame
from av.packet import Packet

logger = logging.getLogger(__name__)

__all__ = [
    "CameraTrack",
    "MediaError",
    "TestPatternTrack",
    "ToneTrack",
    "colour_distance",
    "dominant_colour",
    "name_colour",
    "name_hue",
    "open_audio_source",
    "open_sources",
    "open_video_source",
    "tone_frequency",
]

BGR = tuple[int, int, int]

# Golden angle: successive multiples are as evenly spread around the hue circle as possible.
_GOLDEN_ANGLE = 137.50776405003785
# Names that share an initial are told apart by a small hash-derived hue offset (± this).
_HUE_JITTER = 10.0

AUDIO_SAMPLE_RATE = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, the Opus frame size aiortc sends


class MediaError(Exception):
    """A media source or sink could not be opened or used; ``str()`` is one line for users."""


# --- colours -------------------------------------------------------------------------------


def _name_digest(display_name: str) -> bytes:
    # sha256 rather than hash(): Python's str hash is salted per process.
    return hashlib.sha256(display_name.encode("utf-8")).digest()


def name_hue(display_name: str) -> float:
    """The hue in degrees [0, 360) that :func:`name_colour` uses for ``display_name``.

    The hue is set by the name's first letter or digit, stepped by the golden angle, plus a
    hash-derived offset of at most ±10°. Names whose initials are close in the alphabet
    (the usual Alice, Bob, Carol, Dave, Erin cast) are therefore far apart: any 5
    consecutive initials are ≥ 32° apart, any 2 consecutive ones ≥ 117°. Limits: names
    with the same initial differ by at most 20°, and a few initial pairs far apart in the
    alphabet land close together; give TestPatternTrack an explicit ``colour`` when a test
    needs a guarantee for arbitrary names.
    """
    initial = next((ch for ch in display_name.casefold() if ch.isalnum()), "")
    base = ord(initial) * _GOLDEN_ANGLE if initial else 0.0
    jitter = (int.from_bytes(_name_digest(display_name)[:2], "big") / 0xFFFF * 2 - 1) * _HUE_JITTER
    return (base + jitter) % 360.0


def name_colour(display_name: str) -> BGR:
    """A deterministic, fully saturated BGR colour for ``display_name`` (see :func:`name_hue`)."""
    r, g, b = colorsys.hsv_to_rgb(name_hue(display_name) / 360.0, 1.0, 0.9)
    return (round(b * 255), round(g * 255), round(r * 255))


def dominant_colour(frame_bgr: npt.NDArray[Any]) -> BGR:
    """The per-channel median colour of a BGR image (H x W x 3).

    The median ignores the test pattern's text, bar and counter as long as the background
    covers more than half of the frame.
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.size == 0:
        raise ValueError(f"expected an H x W x 3 BGR image, got shape {frame_bgr.shape}")
    pixels = frame_bgr.reshape(-1, 3)
    # A few thousand pixels give the same median as all of them, at a fraction of the cost.
    step = max(1, len(pixels) // 8192)
    b, g, r = np.median(pixels[::step], axis=0)
    return (int(b), int(g), int(r))


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Euclidean distance between two BGR colours (0 … ~441)."""
    return math.dist(a, b)


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts only draw ASCII; other characters would come out as garbage.
    return text.encode("ascii", "replace").decode("ascii")


# --- synthetic sources ---------------------------------------------------------------------


class TestPatternTrack(VideoStreamTrack):
    """A synthetic video track identifying its sender.

    Each frame is filled with ``colour`` (default :func:`name_colour` of the name), shows the
    name in large text and a frame counter, and has a white bar that moves every frame (so
    a frozen picture is visible). Frames are BGR ``av.VideoFrame`` paced in real time at
    ``fps`` with 90 kHz timestamps.
    """

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    def __init__(
        self,
        display_name: str,
        width: int = 320,
        height: int = 240,
        fps: int = 15,
        colour: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if width < 16 or height < 16 or fps <= 0:
            raise ValueError("width and height must be ≥ 16 and fps > 0")
        self.display_name = display_name
        self.width = width
        self.height = height
        self.fps = fps
        self.colour: BGR = colour if colour is not None else name_colour(display_name)
        self.frame_count = 0
        self._background = np.full((height, width, 3), self.colour, dtype=np.uint8)
        self._label = _ascii(display_name) or "?"
        # Largest text that fits 85 % of the width and a third of the height.
        self._thickness = max(1, width // 100)
        (tw, th), _ = cv2.getTextSize(self._label, cv2.FONT_HERSHEY_SIMPLEX, 1.0, self._thickness)
        self._font_scale = min(0.85 * width / tw, height / 3 / th)
        (tw, th), _ = cv2.getTextSize(
            self._label, cv2.FONT_HERSHEY_SIMPLEX, self._font_scale, self._thickness
        )
        self._text_origin = ((width - tw) // 2, (height + th) // 2)
        self._start_time: float | None = None
        self._pts = 0

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """Wait until the next frame is due; return its pts and time base.

        Same contract as aiortc's, whose version is fixed at 30 fps.
        """
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_time is None:
            self._start_time = time.monotonic()
            self._pts = 0
        else:
            self._pts += VIDEO_CLOCK_RATE // self.fps
            wait = self._start_time + self._pts / VIDEO_CLOCK_RATE - time.monotonic()
            await asyncio.sleep(wait)
        return self._pts, VIDEO_TIME_BASE

    def render(self, n: int) -> npt.NDArray[np.uint8]:
        """Draw frame number ``n`` as a BGR array (pure; used by :meth:`recv`)."""
        img = self._background.copy()
        w, h = self.width, self.height
        bar = max(4, w // 12)
        # The bar sweeps the width in about two seconds and wraps around.
        step = max(1, (w + bar) // (2 * self.fps))
        x = (n * step) % (w + bar) - bar
        cv2.rectangle(img, (x, 0), (x + bar - 1, h - 1), (255, 255, 255), thickness=-1)
        # Black outline then white fill keeps the name readable on any background colour.
        for colour, extra in (((0, 0, 0), 2 * self._thickness), ((255, 255, 255), 0)):
            cv2.putText(
                img,
                self._label,
                self._text_origin,
                cv2.FONT_HERSHEY_SIMPLEX,
                self._font_scale,
                colour,
                self._thickness + extra,
                cv2.LINE_AA,
            )
        cv2.putText(
            img,
            f"#{n}",
            (4, max(12, h // 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.35, h / 600),
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        return img

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.render(self.frame_count), format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        self.frame_count += 1
        return frame


def tone_frequency(display_name: str) -> float:
    """A per-name tone frequency: one of 24 semitones from 220 Hz (A3) to 831 Hz."""
    semitone = _name_digest(display_name)[2] % 24
    return 220.0 * math.pow(2.0, semitone / 12)


class ToneTrack(AudioStreamTrack):
    """A sine tone: 48 kHz mono s16 frames of 20 ms, paced in real time.

    Set :attr:`muted` to True to send digital silence instead (the track keeps running, so
    timestamps stay continuous and unmuting is instant).
    """

    def __init__(
        self,
        display_name: str = "",
        frequency: float | None = None,
        amplitude: float = 0.3,
    ) -> None:
        super().__init__()
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError("amplitude must be within [0, 1]")
        self.frequency = frequency if frequency is not None else tone_frequency(display_name)
        if not 0 < self.frequency < AUDIO_SAMPLE_RATE / 2:
            raise ValueError("frequency must be within (0, 24000) Hz")
        self.amplitude = amplitude
        self.muted = False
        self._samples_sent = 0
        self._start_time: float | None = None
        self._silence = np.zeros((1, AUDIO_FRAME_SAMPLES), dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_time is None:
            self._start_time = time.monotonic()
        else:
            due = self._start_time + self._samples_sent / AUDIO_SAMPLE_RATE
            await asyncio.sleep(due - time.monotonic())

        pts = self._samples_sent
        if self.muted:
            samples = self._silence
        else:
            # Phase from the absolute sample index, so the wave is continuous across frames.
            t = (np.arange(AUDIO_FRAME_SAMPLES) + pts) / AUDIO_SAMPLE_RATE
            wave = np.sin(2 * np.pi * self.frequency * t) * (self.amplitude * 32767)
            samples = wave.astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        self._samples_sent += AUDIO_FRAME_SAMPLES
        return frame


# --- camera --------------------------------------------------------------------------------


class CameraTrack(VideoStreamTrack):
    """Video from an OpenCV camera.

    The camera is opened in the constructor, which raises :class:`MediaError` if it cannot
    be. Frames are read in a dedicated thread (``read()`` blocks until the camera delivers)
    and stamped with the time they arrived. If the camera stops delivering, the track ends.
    """

    def __init__(
        self,
        index: int = 0,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        # OpenCV prints several WARN lines to stderr for a missing camera; our error says it.
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            capture = cv2.VideoCapture(index)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not capture.isOpened():
            capture.release()
            raise MediaError(f"no camera at index {index}")
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value is not None:
                capture.set(prop, value)
        self._capture = capture
        # One worker: reads never overlap, and release() queues behind a read in progress
        # instead of freeing the device under it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camera{index}")
        self._start_time: float | None = None
        self._last_pts = -1

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        ok, image = await loop.run_in_executor(self._executor, self._capture.read)
        if not ok or image is None:
            logger.warning("camera %d stopped delivering frames", self.index)
            self.stop()
            raise MediaStreamError
        now = time.monotonic()
        if self._start_time is None:
            self._start_time = now
        pts = max(self._last_pts + 1, round((now - self._start_time) * VIDEO_CLOCK_RATE))
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.asarray(image, dtype=np.uint8), format="bgr24")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._executor.submit(self._capture.release)
            self._executor.shutdown(wait=False)
        super().stop()


# --- media files ---------------------------------------------------------------------------


class _FileTrack(MediaStreamTrack):
    """One kind of a MediaPlayer's output, which also drains the kind nobody asked for.

    MediaPlayer decodes every stream of the file and queues each kind without bound, so an
    unread sibling track (the file's audio when only its video is used) would grow memory
    for the whole call. The sibling is drained from the first ``recv()`` on, and stopped
    with this track.
    """

    def __init__(self, inner: MediaStreamTrack, sibling: MediaStreamTrack | None) -> None:
        super().__init__()
        self.kind = inner.kind
        self._inner = inner
        self._sibling = sibling
        self._drain: asyncio.Task[None] | None = None

    async def recv(self) -> Frame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sibling is not None and self._drain is None:
            self._drain = asyncio.create_task(self._drain_sibling(self._sibling))
        try:
            return await self._inner.recv()
        except MediaStreamError:
            self.stop()  # end of file
            raise

    @staticmethod
    async def _drain_sibling(sibling: MediaStreamTrack) -> None:
        try:
            while True:
                await sibling.recv()
        except MediaStreamError:
            pass

    def stop(self) -> None:
        if self.readyState == "live":
            if self._drain is not None:
                self._drain.cancel()
            # Sibling first: MediaPlayer joins its thread and closes the file with the last.
            if self._sibling is not None:
                self._sibling.stop()
            self._inner.stop()
        super().stop()


def _open_player(path: str) -> MediaPlayer:
    if not os.path.isfile(path):
        raise MediaError(f"media file not found: {path}")
    try:
        return MediaPlayer(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MediaError(f"cannot decode media file {path}: {reason}") from exc


def _close_player(player: MediaPlayer) -> None:
    # MediaPlayer has no close(); stopping its last track closes the container.
    for track in (player.audio, player.video):
        if track is not None:
            track.stop()


def _file_tracks(
    path: str, want_video: bool, want_audio: bool
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None]:
    player = _open_player(path)
    wanted = [("video", player.video, want_video), ("audio", player.audio, want_audio)]
    for kind, track, want in wanted:
        if want and track is None:
            _close_player(player)
            raise MediaError(f"media file has no {kind} stream: {path}")
    if want_video and want_audio:
        return player.video, player.audio
    if want_video:
        assert player.video is not None
        return _FileTrack(player.video, player.audio), None
    assert player.audio is not None
    return None, _FileTrack(player.audio, player.video)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or "." in spec or os.path.exists(spec)


def _spec_error(kind: str, spec: str) -> MediaError:
    choices = "test, none, camera, camera:N" if kind == "video" else "test, none"
    return MediaError(f"unknown {kind} source {spec!r} (expected {choices} or a media file path)")


def _camera_index(spec: str) -> int:
    _, _, rest = spec.partition(":")
    if not rest:
        return 0
    try:
        index = int(rest)
    except ValueError:
        raise MediaError(f"bad camera index in {spec!r} (expected camera:N)") from None
    if index < 0:
        raise MediaError(f"bad camera index in {spec!r} (expected camera:N)")
    return index


def open_video_source(spec: str, display_name: str) -> MediaStreamTrack | None:
    """Open the video source named by ``spec``; ``None`` for ``none``.

    Raises :class:`MediaError` for an unknown spec, a missing camera, or a file that is
    missing, undecodable or without video. A file is played once; its track ends at EOF.
    """
    key = spec.strip().lower()
    if key == "none":
        return None
    if key == "test":
        return TestPatternTrack(display_name)
    if key == "camera" or key.startswith("camera:"):
        return CameraTrack(_camera_index(key))
    if not _looks_like_path(spec):
        raise _spec_error("video", spec)
    return _file_tracks(spec, want_video=True, want_audio=False)[0]


def screen_colour(display_name: str) -> BGR:
    """The test screen's colour: the complement of the sender's camera colour."""
    b, g, r = name_colour(display_name)
    return (255 - b, 255 - g, 255 - r)


def open_screen_source(spec: str, display_name: str) -> MediaStreamTrack:
    """Open the screen to share: ``test`` (a 640x360, 5 fps pattern in
    :func:`screen_colour`) or a media file's video. Raises :class:`MediaError`."""
    key = spec.strip().lower()
    if key == "test":
        return TestPatternTrack(
            f"{display_name} screen", 640, 360, fps=5, colour=screen_colour(display_name)
        )
    if not _looks_like_path(spec):
        raise MediaError(f"unknown screen source {spec!r} (expected test or a media file path)")
    track = _file_tracks(spec, want_video=True, want_audio=False)[0]
    assert track is not None
    return track


def open_audio_source(spec: str, display_name: str) -> MediaStreamTrack | None:
    """Open the audio source named by ``spec``; ``None`` for ``none``.

    Raises :class:`MediaError` for an unknown spec (``camera`` included: cameras have no
    audio here), or a file that is missing, undecodable or without audio.
    """
    key = spec.strip().lower()
    if key == "none":
        return None
    if key == "test":
        return ToneTrack(display_name)
    if key == "camera" or key.startswith("camera:"):
        raise MediaError(f"{spec!r} is a video source; audio takes test, none or a media file")
    if not _looks_like_path(spec):
        raise _spec_error("audio", spec)
    return _file_tracks(spec, want_video=False, want_audio=True)[1]


def open_sources(
    video_spec: str, audio_spec: str, display_name: str
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None]:
    """Open both sources; one file named for both is decoded once, keeping A/V in sync.

    On error nothing stays open.
    """
    if (
        video_spec == audio_spec
        and video_spec.strip().lower() not in ("test", "none")
        and _looks_like_path(video_spec)
    ):
        return _file_tracks(video_spec, want_video=True, want_audio=True)
    video = open_video_source(video_spec, display_name)
    try:
        audio = open_audio_source(audio_spec, display_name)
    except BaseException:
        if video is not None:
            video.stop()
        raise
    return video, audio
