"""Image hygiene before encryption: decode, bound the size, re-encode.

Re-encoding from decoded pixels is what strips EXIF, GPS and every other metadata block: the
output holds only what :func:`cv2.imencode` writes for the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from client.core.errors import UsageError


@dataclass(frozen=True)
class CleanImage:
    jpeg: bytes
    width: int
    height: int


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Decode JPEG/PNG/WebP/... bytes to BGR pixels; UsageError if it is not an image."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        raise UsageError(f"the {what} is not an image OpenCV can read")
    return pixels


def bounded_jpeg(pixels: np.ndarray, max_side: int, quality: int = 85) -> CleanImage:
    """Scale down (never up) so the longest side is at most ``max_side``; encode as JPEG."""
    height, width = pixels.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UsageError("could not re-encode the image")
    return CleanImage(encoded.tobytes(), pixels.shape[1], pixels.shape[0])
