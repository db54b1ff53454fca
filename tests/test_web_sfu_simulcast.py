"""A browser publishes its camera to the SFU as three simulcast layers (issue 13).

Everything real: ``salon serve`` with its SFU node, two Chromium pages on the web UI, a
``salon call`` CLI. Bob's page (Chromium's fake camera, captured at 1280x720 for the SFU)
publishes q/h/f; Carol's page (a small one-colour camera) and Alice's CLI subscribe. Checked:
Bob's sender keeps the three encodings after the node's answer (so simulcast was negotiated)
and Chromium's own getStats shows the three layers' outbound-rtp sending, each at its own
height (the top one once the node's REMB and receiver reports let Chromium's estimate grow
past the lower two); Carol's page and Alice's CLI decode Bob's video (frames rising, SFrame
decryption with zero failures in Carol's worker and Alice's stats), Carol's page (a clean link,
a big tile) on a layer above the lowest; and Bob's SFrame worker encrypted the frames of every
layer (its count is the sum of the layers' encoded frames). Screenshots of both call pages are
taken.

The pages' RTCPeerConnections are collected by an init script (a browser API wrapper, not our
code) so the test can read the browser's stats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from conftest import SalonServer
from media_page_support import chromium_args, write_y4m
from support import until_sync
from test_web_call_ui import CALL_VIEW, REMOTE_PLAYING, CliCall, cli_calls, join_call, open_room

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]
ROOM = "stage"
RIDS = ("q", "h", "f")

KEEP_PCS = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();"""

# Per RID, what Chromium's outbound-rtp says of the camera's layers on the live connection,
# and the RIDs its camera sender is configured with.
LAYERS = """async () => {
  const pc = window.__pcs.filter((p) => p.connectionState === "connected").at(-1);
  if (!pc) return null;
  const camera = pc.getTransceivers()[0].sender;
  const layers = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video" && s.rid) {
      layers[s.rid] = {
        height: s.frameHeight ?? 0, width: s.frameWidth ?? 0, bytes: s.bytesSent,
        frames: s.framesEncoded ?? 0, fps: s.framesPerSecond ?? 0,
        target: s.targetBitrate ?? 0, active: s.active, limit: s.qualityLimitationReason,
      };
    }
  });
  return { rids: camera.getParameters().encodings.map((e) => e.rid ?? null), layers };
}"""
# Frames Carol's page has shown of a tile (the browser's count of decoded frames shown).
TILE_FRAMES = """(name) => {
  const v = document.querySelector(`[data-testid=call-tile][data-name="${name}"] video`);
  return v === null ? 0 : v.getVideoPlaybackQuality().totalVideoFrames;
}"""
# The frame heights Carol's page decodes on its video slots (which layer the node forwards).
INBOUND_HEIGHTS = """async () => {
  const pc = window.__pcs.filter((p) => p.connectionState === "connected").at(-1);
  const heights = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.frameHeight) {
      heights.push(s.frameHeight);
    }
  });
  return heights;
}"""
STATS = "() => window.salonCallStats ? window.salonCallStats() : null"


def poll(check: Any, timeout: float, what: str) -> Any:
    return until_sync(check, what, timeout, interval=0.5)


def test_a_page_publishes_three_layers_that_a_page_and_a_cli_decode(
    web_server: SalonServer, module_user: Any, chromium: Any, tmp_path: Path
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Stage", "--server", web_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, ROOM, "--kind", "conference", "--topology", "sfu")
    carol_camera = write_y4m(tmp_path / "carol.y4m", (82, 90, 240), 160, 120)

    browsers: list[Any] = []
    pages: dict[str, WebPage] = {}
    try:
        for name, y4m in (("Bob", None), ("Carol", carol_camera)):
            browser = chromium.browser_type.launch(
                executable_path=CHROMIUM, headless=True, args=chromium_args(y4m)
            )
            browsers.append(browser)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(KEEP_PCS)
            pages[name] = WebPage(context.new_page(), name)
            open_room(pages[name], link, name, ROOM)

        with cli_calls() as running:
            cli = CliCall(alice, space, ROOM, tmp_path / "alice.json", 120)
            running.append(cli)
            cli.wait_for(r"joined call")
            for web in pages.values():
                join_call(web)
                web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=45_000)
            cli.wait_for(r"verification code ([\d ]+) \(3 in the call", 90)
            bob, carol = pages["Bob"].page, pages["Carol"].page

            # Bob's camera goes out as three layers: negotiated (the sender kept its three
            # encodings) and sent (each RID's bytes rising, at its own height).
            first = poll(
                lambda: (s := bob.evaluate(LAYERS)) and len(s["layers"]) == 3 and s,
                60,
                "Bob's page has no outbound-rtp for three RIDs",
            )
            assert first["rids"] == list(RIDS), first

            def sending(now: dict[str, Any]) -> list[str]:
                return [
                    rid
                    for rid in RIDS
                    if now["layers"][rid]["bytes"] > first["layers"][rid]["bytes"] + 20_000
                    and now["layers"][rid]["height"] > 0
                ]

            # Chromium opens a layer once its bandwidth estimate covers it: the top one
            # (1280x720) once the node's REMB and receiver reports let the estimate grow.
            sample: dict[str, Any] = {}

            def all_three() -> bool:
                sample.update(bob.evaluate(LAYERS))
                return len(sending(sample)) == 3

            try:
                poll(all_three, 60, "Bob's page sending all three layers")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {sample}") from None
            live = sending(sample)
            heights = [sample["layers"][rid]["height"] for rid in live]
            assert heights == [180, 360, 720], sample
            print(f"{len(live)} simulcast layers sent by Chromium:", json.dumps(sample["layers"]))

            # Carol's page and Alice's CLI decode Bob's video, decrypted, frames rising.
            carol.wait_for_function(REMOTE_PLAYING, arg=2, timeout=60_000)
            shown = carol.evaluate(TILE_FRAMES, "Bob")
            poll(
                lambda: carol.evaluate(TILE_FRAMES, "Bob") > shown + 30,
                30,
                "Carol's page shows no new frames of Bob",
            )
            # Every layer's frames went through the SFrame transform: the worker's camera
            # counter is the sum over the layers of the frames Chromium encoded.
            layers = bob.evaluate(LAYERS)["layers"]
            bob_sent = bob.evaluate(STATS)["tracks"]["camera"]
            encoded = [layers[rid]["frames"] for rid in RIDS]
            transformed = bob_sent["encrypted"] + bob_sent["droppedOther"]
            assert abs(transformed - sum(encoded)) <= max(15, sum(encoded) // 30), (
                bob_sent,
                layers,
            )
            assert bob_sent["encrypted"] > 1.8 * max(encoded), (bob_sent, layers)
            carol_stats = carol.evaluate(STATS)["tracks"]
            received = [t for t in carol_stats.values() if t["side"] == "receive"]
            assert sum(t["decrypted"] for t in received) > 100, carol_stats
            assert sum(t["failures"] for t in received) == 0, carol_stats
            heights_seen = poll(
                lambda: (h := carol.evaluate(INBOUND_HEIGHTS)) and {360, 720} & set(h) and h,
                30,
                "Carol's page decoding Bob above his lowest layer",
            )
            print("frame heights Carol's page decodes:", heights_seen)
            pages["Bob"].screenshot("call-sfu-simulcast-publisher")
            pages["Carol"].screenshot("call-sfu-simulcast-subscriber")
            cli.stop()
            results = json.loads((tmp_path / "alice.json").read_text())
    finally:
        for browser in browsers:
            browser.close()

    assert results["topology"] == "sfu" and results["e2ee"] is True, results
    assert results["sfu"]["unattributed_decrypt_failures"] == 0, results["sfu"]
    seen = {p["display_name"]: p for p in results["participants"]}
    assert seen["Bob"]["video_frames_decoded"] > 30, seen["Bob"]
    assert seen["Bob"]["decrypt_failures"] == 0, seen["Bob"]
    for web in pages.values():
        assert [p for p in web.problems() if "favicon" not in p] == [], web.problems()
