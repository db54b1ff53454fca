"""Recording of what a participant received, as one video file with a tile per sender.

The recording is made from decoded frames on the participant's own machine, so it stays
end to end: nothing here ever sees keys or talks to the network.

Usage::

    rec = GridRecorder("call.mp4")
    await rec.start()
    rec.update(participant_id, "Alice", frame)   # for every decoded frame
    rec.remove(participant_id)                    # when a participant leaves
    await rec.stop()                              # flushes and closes the file
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.container import OutputContainer
from av.video.stream import VideoStream

from client.call.media import MediaError

logger = logging.getLogger(__name__)

__all__ = ["GridRecorder", "grid_cells", "pick_codec"]

# Encoders to try per extension, best first.
_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".webm": ("libvpx",),
    ".mkv": ("libvpx",),
}

# Cheap settings: the recorder shares 2 cores with decoding and the call itself.
_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "23"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "10"},
    "mpeg4": {},
}
# libvpx's crf is capped by the bit rate; MPEG-4 part 2 is rate-controlled only by it.
_BIT_RATES: dict[str, int] = {"libvpx": 1_500_000, "mpeg4": 2_000_000}

Cell = tuple[int, int, int, int]  # x, y, width, height


def pick_codec(path: str) -> str:
    """The encoder GridRecorder will use for ``path``, chosen by its extension.

    Raises MediaError for an extension it cannot write.
    """
    ext = os.path.splitext(path)[1].lower()
    candidates = _CODECS.get(ext)
    if candidates is None:
        supported = ", ".join(sorted(_CODECS))
        raise MediaError(f"cannot record to {ext or 'a file without extension'} ({supported})")
    for name in candidates:
        try:
            av.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, av.FFmpegError):
            continue  # not built into this ffmpeg
        return name
    raise MediaError(f"no encoder for {ext} in this ffmpeg build (tried {', '.join(candidates)})")


def grid_cells(n: int, width: int, height: int) -> list[Cell]:
    """Cells for ``n`` tiles on a width x height canvas: ceil(sqrt(n)) columns, row-major."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        # Integer edges from proportional positions: cells tile the canvas with no gaps.
        x0, x1 = c * width // cols, (c + 1) * width // cols
        y0, y1 = r * height // rows, (r + 1) * height // rows
        cells.append((x0, y0, x1 - x0, y1 - y0))
    return cells


def _fit(src_w: int, src_h: int, cell_w: int, cell_h: int) -> tuple[int, int]:
    # Largest even size with the source's aspect ratio that fits the cell (even: yuv420p).
    scale = min(cell_w / src_w, cell_h / src_h)
    w = max(2, int(src_w * scale) // 2 * 2)
    h = max(2, int(src_h * scale) // 2 * 2)
    return min(w, cell_w), min(h, cell_h)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


@dataclass
class _Tile:
    label: str
    frame: av.VideoFrame


# What the worker thread gets: an immutable snapshot (participant id, label, frame).
_Snapshot = list[tuple[str, str, av.VideoFrame]]


class GridRecorder:
    """Composes the latest frame of every remote participant into a grid and records it.

    The canvas is fixed at 2 x 2 tiles of ``tile_size`` (640 x 480 by default), because a
    video file keeps one resolution: with more than 4 participants the tiles shrink to fit
    (3 x 3 and so on). Tiles appear in the order participants first sent a frame, keep
    their last frame until :meth:`remove`, and are labelled with the participant's name.

    Codec by extension: ``.mp4`` H.264 (libx264, falling back to MPEG-4 part 2 if the
    bundled ffmpeg lacks it), ``.webm`` / ``.mkv`` VP8. Composing and encoding run in one
    worker thread so the event loop keeps serving the call.
    """

    def __init__(self, path: str, fps: int = 15, tile_size: tuple[int, int] = (320, 240)) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        tile_w, tile_h = tile_size
        if tile_w < 16 or tile_h < 16:
            raise ValueError("tile_size must be at least 16 x 16")
        self.path = path
        self.fps = fps
        self.codec = pick_codec(path)
        # Even dimensions: the encoders need them for 4:2:0 chroma.
        self.width = (2 * tile_w) // 2 * 2
        self.height = (2 * tile_h) // 2 * 2
        self.frames_written = 0
        self._tiles: dict[str, _Tile] = {}
        self._container: OutputContainer | None = None
        self._stream: VideoStream | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._last_pts = -1
        self._t0 = 0.0
        # Owned by the worker thread: scaled BGR pixels per participant, keyed by frame.
        self._cache: dict[str, tuple[av.VideoFrame, tuple[int, int], npt.NDArray[np.uint8]]] = {}

    # --- called from the call client ----------------------------------------------------

    def update(self, participant_id: str, label: str, frame: av.VideoFrame) -> None:
        """Record ``frame`` as the participant's current picture (cheap: only a reference)."""
        if self._stopped:
            return
        tile = self._tiles.get(participant_id)
        if tile is None:
            self._tiles[participant_id] = _Tile(label, frame)
        else:
            tile.label = label
            tile.frame = frame

    def remove(self, participant_id: str) -> None:
        """Drop the participant's tile; the others re-flow from the next frame on."""
        self._tiles.pop(participant_id, None)

    async def start(self) -> None:
        """Open the file and start writing a frame every 1/fps seconds.

        Raises MediaError if the file cannot be created.
        """
        if self._ticker is not None or self._stopped:
            raise RuntimeError("GridRecorder can be started once")
        try:
            self._container = av.open(self.path, "w")
            stream = self._container.add_stream(
                self.codec, rate=self.fps, options=_CODEC_OPTIONS.get(self.codec, {})
            )
            assert isinstance(stream, VideoStream)
            stream.width = self.width
            stream.height = self.height
            stream.pix_fmt = "yuv420p"  # what every player decodes
            if self.codec in _BIT_RATES:
                stream.bit_rate = _BIT_RATES[self.codec]
            stream.time_base = fractions.Fraction(1, self.fps)
            # Creates the file and opens the encoder now: errors surface here, not mid-call.
            self._container.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            if self._container is not None:
                with contextlib.suppress(av.FFmpegError, OSError):
                    self._container.close()
                self._container = None
            raise MediaError(f"cannot record to {self.path}: {exc}") from exc
        self._stream = stream
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._t0 = time.monotonic()
        self._ticker = asyncio.create_task(self._tick(), name="grid-recorder")

    async def stop(self) -> None:
        """Write the last frame, flush the encoder and close the file.

        Safe to call more than once, and without start(). Raises MediaError if writing
        failed at any point during the recording (the file may then be incomplete).
        """
        if self._stopped:
            return
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        tiles = self._snapshot()
        try:
            # Same single worker as the ticker: runs after any write still in progress.
            await loop.run_in_executor(self._executor, self._finish, tiles)
        except (av.FFmpegError, OSError) as exc:
            self._error = self._error or exc
        finally:
            self._executor.shutdown(wait=False)
            self._cache.clear()
        if self._error is not None:
            raise MediaError(f"recording to {self.path} failed: {self._error}") from self._error

    # --- internals ----------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        # Taken on the event loop: update() may replace frames while the worker composes.
        return [(pid, t.label, t.frame) for pid, t in self._tiles.items()]

    async def _tick(self) -> None:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        due = time.monotonic()
        while True:
            tiles = self._snapshot()
            pts = round((time.monotonic() - self._t0) * self.fps)
            try:
                await loop.run_in_executor(self._executor, self._write, tiles, pts)
            except (av.FFmpegError, OSError) as exc:
                logger.error("recording to %s stopped: %s", self.path, exc)
                self._error = exc
                return
            due += period
            now = time.monotonic()
            if due < now - period:
                due = now  # fell behind (busy CPU): skip frames rather than burst
            await asyncio.sleep(due - now)

    def _write(self, tiles: _Snapshot, pts: int) -> None:
        # pts from the wall clock keeps the file's duration true when ticks are late;
        # a late tick whose slot was already written is dropped.
        if pts <= self._last_pts:
            return
        assert self._container is not None and self._stream is not None
        frame = av.VideoFrame.from_ndarray(self._compose(tiles), format="bgr24")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, self.fps)
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts
        self.frames_written += 1

    def _finish(self, tiles: _Snapshot) -> None:
        assert self._container is not None and self._stream is not None
        try:
            if self._error is None:
                self._write(tiles, max(self._last_pts + 1, 0))
            self._container.mux(self._stream.encode(None))  # drain delayed frames
        finally:
            self._container.close()

    def _compose(self, tiles: _Snapshot) -> npt.NDArray[np.uint8]:
        canvas = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        if not tiles:
            self._label(canvas, "waiting for participants", (8, self.height // 2))
            return canvas
        present = {pid for pid, _, _ in tiles}
        for gone in self._cache.keys() - present:
            del self._cache[gone]
        cells = grid_cells(len(tiles), self.width, self.height)
        for (pid, label, frame), (x, y, cw, ch) in zip(tiles, cells, strict=True):
            w, h = _fit(frame.width, frame.height, cw, ch)
            cached = self._cache.get(pid)
            if cached is not None and cached[0] is frame and cached[1] == (w, h):
                pixels = cached[2]
            else:
                # One swscale pass converts and scales; reused while the sender is silent.
                bgr = frame.reformat(width=w, height=h, format="bgr24")
                pixels = np.asarray(bgr.to_ndarray(), dtype=np.uint8)
                self._cache[pid] = (frame, (w, h), pixels)
            ox, oy = x + (cw - w) // 2, y + (ch - h) // 2
            canvas[oy : oy + h, ox : ox + w] = pixels
            self._label(canvas, label, (x + 4, y + ch - 6))
        return canvas

    @staticmethod
    def _label(canvas: npt.NDArray[np.uint8], text: str, origin: tuple[int, int]) -> None:
        text = _ascii(text) or "?"
        font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        x, y = origin
        # Dark box behind the label: readable on any picture.
        cv2.rectangle(canvas, (x - 2, y - th - 3), (x + tw + 2, y + base), (0, 0, 0), -1)
        cv2.putText(canvas, text, (x, y), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
