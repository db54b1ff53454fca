"""Throughput of SFrame protect+unprotect on the media path (not a test).

Usage: python bench/bench_sframe.py [--seconds 2.0] [--suite 4]

Measures protect_frame + unprotect_frame round trips for a 1200-byte VP8 delta
frame and a 100-byte Opus frame, prints human-readable figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

try:
    from client.call import sframe
except ImportError:  # running from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from client.call import sframe
from _harness import emit  # run as a script: bench/ is on sys.path


def _bench(suite: int, codec: str, frame: bytes, seconds: float) -> dict[str, float | int | str]:
    sender = sframe.SFrameContext(suite)
    # Default replay window kept on: it is part of the real receive cost.
    receiver = sframe.SFrameContext(suite)
    sender.add_key(1, b"\x01" * 16)
    receiver.add_key(1, b"\x01" * 16)

    for _ in range(200):  # warm-up
        sframe.unprotect_frame(receiver, codec, sframe.protect_frame(sender, 1, codec, frame))

    frames = 0
    batch = 500
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            data = sframe.protect_frame(sender, 1, codec, frame)
            _, out = sframe.unprotect_frame(receiver, codec, data)
        frames += batch
        now = time.perf_counter()
        if now >= deadline:
            break
    assert out == frame
    elapsed = now - start
    fps = frames / elapsed
    return {
        "codec": codec,
        "frame_bytes": len(frame),
        "overhead_bytes": len(data) - len(frame),
        "frames": frames,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(fps),
        "mb_per_s": round(fps * len(frame) / 1e6, 2),
        "us_per_round_trip": round(1e6 / fps, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration per case")
    parser.add_argument("--suite", type=int, default=int(sframe.CipherSuite.AES_128_GCM_SHA256_128))
    args = parser.parse_args()

    suite = sframe.CipherSuite(args.suite)
    vp8_delta = bytes([0x31, 0x0F, 0x00]) + os.urandom(1197)  # bit 0 set: delta frame
    opus = bytes([0xFC]) + os.urandom(99)
    results = [
        _bench(suite, "vp8", vp8_delta, args.seconds),
        _bench(suite, "opus", opus, args.seconds),
    ]
    print(
        f"SFrame protect+unprotect, suite {suite.value} ({suite.name}), {platform.python_version()}"
    )
    for r in results:
        print(
            f"  {r['codec']:>4} {r['frame_bytes']:>5} B: {r['frames_per_s']:>9,} frames/s  "
            f"{r['mb_per_s']:>8} MB/s  {r['us_per_round_trip']:>6} us/frame  "
            f"(+{r['overhead_bytes']} B)"
        )
    emit({"bench": "sframe", "suite": suite.value, "results": results})


if __name__ == "__main__":
    main()
