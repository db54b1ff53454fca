"""SFrame worker time per frame in Chromium (issue 10's "SFrame worker time per frame").

Debian Chromium (headless, Playwright) runs the media test page (web/test/browser/media_page.ts)
under the web app's CSP: two participants, one SFrame worker each, joined by two
RTCPeerConnections, the fake camera at 640x480 (VP8) and microphone (Opus). Once the receiver
has decoded FRAMES video frames, the workers' counters give the time spent protecting each
frame (sender worker) and opening it (receiver worker), per track: that is the worker's own
time per frame, WebCrypto's asynchronous AES-GCM included, measured with performance.now()
around each frame. Then the same frame code alone (MediaSender.protect + MediaReceivers.open)
on VP8-sized frames, sequentially, for the cost without the media pipeline around it.

Run ``PYTHONPATH=. .venv/bin/python bench/web_sframe.py``. The last line printed is JSON.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _harness import emit  # noqa: E402
from media_page_support import CHROMIUM, PageServer, build_media, chromium_args  # noqa: E402

FRAMES = 600  # about 20 s of 30 fps video
MICRO_FRAMES = 3000


def per_frame(counters: dict[str, Any], kind: str) -> dict[str, float]:
    c = counters["tracks"][kind]
    n = c["encrypted"] if c["side"] == "send" else c["decrypted"]
    return {
        "frames": n,
        "ms_per_frame": round(c["cryptoMs"] / n, 4) if n else 0.0,
        "bytes_per_frame": round(c["bytes"] / n) if n else 0,
        "failures": c["failures"],
    }


def main() -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as tmp,
        PageServer(build_media(Path(tmp))) as server,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(None)
        )
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_function("() => window.mediaTest?.ready === true")
            out = page.evaluate(
                "s => window.mediaTest.loopback(s)",
                {
                    "senderIndex": 1,
                    "publisher": 1,
                    "wrongKey": False,
                    "wantDecoded": FRAMES,
                    "wantDropped": 0,
                    "timeoutMs": 90000,
                },
            )
            video_rx = per_frame(out["receiver"], "video")
            size = max(int(video_rx["bytes_per_frame"]), 1000)
            micro = page.evaluate(
                "([n, size]) => window.mediaTest.micro(n, size)", [MICRO_FRAMES, size]
            )
            # 640x480 at 2.5 Mbit/s and 30 fps: about 10 kB a frame
            micro_10k = page.evaluate(
                "([n, size]) => window.mediaTest.micro(n, size)", [MICRO_FRAMES, 10_000]
            )
            version = browser.version
        finally:
            browser.close()
    video_tx = per_frame(out["sender"], "video")
    result = {
        "browser": f"chromium {version}",
        "video": "fake camera 640x480 VP8, loopback",
        "frames_decoded": out["framesDecoded"],
        "video_encrypt": video_tx,
        "video_decrypt": video_rx,
        "audio_encrypt": per_frame(out["sender"], "audio"),
        "audio_decrypt": per_frame(out["receiver"], "audio"),
        "video_worker_ms_per_frame": round(video_tx["ms_per_frame"] + video_rx["ms_per_frame"], 4),
        "frame_code_alone": {
            "frames": MICRO_FRAMES,
            "delta_bytes": size,
            "protect_ms": round(micro["protectMs"], 4),
            "open_ms": round(micro["openMs"], 4),
        },
        "frame_code_alone_10kB": {
            "frames": MICRO_FRAMES,
            "delta_bytes": 10_000,
            "protect_ms": round(micro_10k["protectMs"], 4),
            "open_ms": round(micro_10k["openMs"], 4),
        },
    }
    return result


if __name__ == "__main__":
    result = main()
    emit(result, [f"{key}: {value}" for key, value in result.items()])
