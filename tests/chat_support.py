"""Helpers for the chat and story tests: a JPEG with EXIF GPS made by hand, a JPEG segment
parser, reading what the server stored, and a live ``salon read --follow`` process."""

from __future__ import annotations

import json
import queue
import sqlite3
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from conftest import SALON, SalonServer, SalonUser
from postgres_support import is_postgres, pg_query

# -- a JPEG carrying EXIF with GPS ------------------------------------------------------------

CAMERA = b"SpyCam 3000 serial 0042"
LATITUDE = ((48, 1), (51, 1), (293_712, 10_000))  # 48°51'29.3712" N
LONGITUDE = ((2, 1), (17, 1), (403_080, 10_000))  # 2°17'40.308" E
COMMENT = b"shot at home, 12 Rue Secrete"


def _rationals(values: tuple[tuple[int, int], ...]) -> bytes:
    return b"".join(struct.pack("<II", n, d) for n, d in values)


def exif_segment() -> bytes:
    """An APP1 Exif segment (little-endian TIFF): IFD0 with Make and a GPS IFD pointer, and
    a GPS IFD with latitude and longitude, laid out by hand (no Pillow needed)."""
    make = CAMERA + b"\x00"
    ifd0_at, ifd0_entries = 8, 2
    make_at = ifd0_at + 2 + 12 * ifd0_entries + 4
    gps_at = make_at + len(make)
    gps_entries = 4
    lat_at = gps_at + 2 + 12 * gps_entries + 4
    lon_at = lat_at + 24

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")

    tiff = b"II*\x00" + struct.pack("<I", ifd0_at)
    tiff += struct.pack("<H", ifd0_entries)
    tiff += entry(0x010F, 2, len(make), struct.pack("<I", make_at))  # Make
    tiff += entry(0x8825, 4, 1, struct.pack("<I", gps_at))  # GPSInfo IFD
    tiff += struct.pack("<I", 0) + make
    tiff += struct.pack("<H", gps_entries)
    tiff += entry(0x0001, 2, 2, b"N\x00")  # GPSLatitudeRef
    tiff += entry(0x0002, 5, 3, struct.pack("<I", lat_at))  # GPSLatitude
    tiff += entry(0x0003, 2, 2, b"E\x00")  # GPSLongitudeRef
    tiff += entry(0x0004, 5, 3, struct.pack("<I", lon_at))  # GPSLongitude
    tiff += struct.pack("<I", 0) + _rationals(LATITUDE) + _rationals(LONGITUDE)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def comment_segment() -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(COMMENT) + 2) + COMMENT


def jpeg_with_gps(width: int, height: int, noise: bool = False) -> bytes:
    """A decodable JPEG whose metadata gives away a camera, a place and a comment."""
    if noise:
        pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        x = np.linspace(0, 255, width, dtype=np.uint8)
        y = np.linspace(0, 255, height, dtype=np.uint8)
        pixels = np.dstack(
            [
                np.tile(x, (height, 1)),
                np.tile(y[:, None], (1, width)),
                np.full((height, width), 128, np.uint8),
            ]
        )
        cv2.circle(pixels, (width // 2, height // 2), min(width, height) // 4, (0, 0, 255), -1)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    plain = encoded.tobytes()
    assert plain[:2] == b"\xff\xd8"
    return plain[:2] + exif_segment() + comment_segment() + plain[2:]


def gps_needles() -> dict[str, bytes]:
    return {
        "Exif header": b"Exif\x00\x00",
        "camera": CAMERA,
        "latitude": _rationals(LATITUDE),
        "longitude": _rationals(LONGITUDE),
        "comment": COMMENT,
    }


def jpeg_markers(data: bytes) -> list[int]:
    """The marker of every segment before the image data (SOS), in order."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    markers, at = [], 2
    while at < len(data):
        assert data[at] == 0xFF, f"bad segment at {at}"
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return markers


def metadata_markers(data: bytes) -> list[int]:
    """APP1..APP15 and COM markers: where EXIF, XMP, ICC, comments and the like live."""
    return [m for m in jpeg_markers(data) if 0xE1 <= m <= 0xEF or m == 0xFE]


# -- what the server stored -------------------------------------------------------------------


def query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the server's database through a short-lived read-only connection (SQLite,
    or PostgreSQL when ``db_path`` is its URL: :attr:`SalonServer.db_path`)."""
    if is_postgres(db_path):
        return pg_query(db_path, sql, *params)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def data_files(server: SalonServer) -> list[Path]:
    return server.stored_files()


def files_containing(server: SalonServer, needle: bytes) -> list[str]:
    return [p.name for p in data_files(server) if needle in p.read_bytes()]


# -- a live follower ----------------------------------------------------------------------------


class Follower:
    """``salon read SPACE ROOM --follow --json`` running in the background; each stdout
    line is one message object."""

    def __init__(self, person: SalonUser, space: str, room: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [str(SALON), "read", space, room, "--follow", "--json", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=person.env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, seq: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Collect messages until one with ``seq`` arrives; returns everything so far."""
        deadline = time.monotonic() + timeout
        while not any(m["seq"] == seq for m in self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(
                    f"follower never printed #{seq}; got {[m['seq'] for m in self.seen]};"
                    f" stderr: {self.stderr}"
                )
            try:
                self.seen.append(json.loads(self.lines.get(timeout=min(left, 0.5))))
            except queue.Empty:
                continue
        return self.seen

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(json.loads(self.lines.get()))
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return self.seen
