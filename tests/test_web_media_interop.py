"""The browser's SFrame worker code and the Python client on the same frames (issue 10).

Python (client/call/sframe.py) protects VP8 keyframe, VP8 delta and Opus frames; the worker's own
frame path (web/src/media/frames.ts: MediaReceivers.open, run by node) opens them, and refuses
the one whose key id names another sender than the frame's source (§15.8). The worker's
MediaSender then protects the same frames under its own key, and Python opens those, with the
clear codec bytes and the key id and counters it expects (§15.3, §15.4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from client.call import sframe
from client.call.e2ee_media import MEDIA_SUITE
from protocol.media_keys import kid_index, media_kid

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

WEB = Path(__file__).resolve().parent.parent / "web"
INDEX, EPOCH = 5, 3
SEND_INDEX, SEND_EPOCH = 7, 65535  # the worker's sender: the last epoch with a key id


def frames() -> list[tuple[str, bytes]]:
    """VP8 keyframe (tag, start code, 640x480), VP8 delta, Opus (TOC), with payloads."""
    keyframe = bytes.fromhex("5015009d012a8002e001") + os.urandom(6000)
    delta = bytes.fromhex("b10800") + os.urandom(900)
    opus = bytes.fromhex("78") + os.urandom(80)
    return [("vp8", keyframe), ("vp8", delta), ("opus", opus), ("vp8", delta[:3] + b"x")]


def clear_size(codec: str, frame: bytes) -> int:
    return 1 if codec == "opus" else 10 if frame[0] & 1 == 0 else 3


def run_node(given: dict[str, Any], tmp: Path) -> dict[str, Any]:
    if shutil.which("node") is None:
        pytest.fail("node is needed to run the web client's media worker code")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    (tmp / "in.json").write_text(json.dumps(given), encoding="utf-8")
    subprocess.run(
        [
            "node",
            "test/browser/run_ts.mjs",
            "test/browser/media_interop.ts",
            str(tmp / "in.json"),
            str(tmp / "out.json"),
        ],
        cwd=WEB,
        check=True,
        timeout=60,
    )
    out: dict[str, Any] = json.loads((tmp / "out.json").read_text(encoding="utf-8"))
    return out


def test_python_frames_open_in_the_worker_and_worker_frames_in_python(tmp_path: Path) -> None:
    base_key, send_key = os.urandom(32), os.urandom(32)
    kid = media_kid(INDEX, EPOCH)
    ctx = sframe.SFrameContext(MEDIA_SUITE)
    ctx.add_key(kid, base_key, usage=sframe.KeyUsage.ENCRYPT)
    # a frame under another sender's key id (INDEX + 1), with the same key: §15.8 refuses it
    forged_ctx = sframe.SFrameContext(MEDIA_SUITE)
    forged_kid = media_kid(INDEX + 1, EPOCH)
    forged_ctx.add_key(forged_kid, base_key, usage=sframe.KeyUsage.ENCRYPT)
    plain = frames()
    given_frames = [
        {
            "codec": codec,
            "frame": frame.hex(),
            "protected": sframe.protect_frame(ctx, kid, codec, frame).hex(),
            "source": INDEX,
        }
        for codec, frame in plain
    ]
    forged = sframe.protect_frame(forged_ctx, forged_kid, "vp8", plain[0][1])
    given_frames.append(
        {"codec": "vp8", "frame": plain[0][1].hex(), "protected": forged.hex(), "source": INDEX}
    )
    out = run_node(
        {
            "index": INDEX,
            "epoch": EPOCH,
            "base_key": base_key.hex(),
            "frames": given_frames,
            "send_index": SEND_INDEX,
            "send_epoch": SEND_EPOCH,
            "send_key": send_key.hex(),
        },
        tmp_path,
    )
    # Python-made frames in the worker's code path
    for (_, frame), got in zip(plain, out["opened"][:-1], strict=True):
        assert got == {"ok": True, "kid": kid, "frame": frame.hex()}
    assert out["opened"][-1] == {"ok": False, "drop": "foreign-kid"}

    # worker-made frames in Python
    send_kid = media_kid(SEND_INDEX, SEND_EPOCH)
    assert out["kid"] == send_kid
    rx = sframe.SFrameContext(MEDIA_SUITE, replay_window=1024)
    rx.add_key(send_kid, send_key, usage=sframe.KeyUsage.DECRYPT)
    sent = [*plain, ("vp8", plain[0][1])]  # the worker protected every given frame
    for ctr, ((codec, frame), made) in enumerate(zip(sent, out["made"], strict=True)):
        protected = bytes.fromhex(made["protected"])
        clear = clear_size(codec, frame)
        assert protected[:clear] == frame[:clear], "the codec header bytes stay in clear"
        header = sframe.decode_header(protected[clear:])
        assert (header.kid, header.ctr) == (send_kid, ctr), "one counter, from 0"
        assert kid_index(header.kid) == SEND_INDEX
        got_kid, original = sframe.unprotect_frame(rx, codec, protected)
        assert (got_kid, original) == (send_kid, frame)
        with pytest.raises(sframe.SFrameError):  # a replay
            sframe.unprotect_frame(rx, codec, protected)
