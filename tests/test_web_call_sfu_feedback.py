"""Congestion feedback between a real Chromium and the real SFU node (issue 13: REMB + RR).

The page and the Python participant of ``tests/test_web_call_sfu_media.py`` join one node.
The node writes abs-send-time on what it forwards and answers without transport-cc, so
Chromium's receivers send REMB on their slots, beside their receiver reports: both reach the
node's RTCP hook (its per-participant counters). Towards Chromium as a publisher the node
sends its RR + REMB once a second, and Chromium's own estimate follows that REMB.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from browser_support import CHROMIUM, WebPage
from media_page_support import chromium_args, write_y4m
from test_web_call_sfu_media import CONF, SETUP, YUV, Bob, SfuPageServer, server

from sfu.bandwidth import BandwidthConfig
from sfu.forwarder import ForwarderConfig
from sfu.node import SfuConfig, SfuNode

__all__ = ["server"]  # the page server fixture, shared with test_web_call_sfu_media


def node_peers(srv: SfuPageServer) -> dict[str, dict[str, Any]]:
    async def read() -> dict[str, dict[str, Any]]:
        assert srv.node is not None
        conference = srv.node.stats()["conferences"].get(CONF, {})
        return dict(conference.get("participants", {}))

    return srv.call(read())  # type: ignore[no-any-return]


def test_chromium_sends_remb_and_reports_to_the_node_and_gets_its_feedback(
    chromium: Any, server: SfuPageServer, tmp_path: Path
) -> None:
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    args = [*chromium_args(y4m), "--allow-loopback-in-peer-connection"]
    browser = chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        page = WebPage(browser.new_page(), "call-sfu-feedback")
        page.page.goto(server.url)
        page.page.wait_for_selector("html[data-call-ready]", state="attached")
        bob = server.bob = Bob()
        server.call(bob.join(server.node))
        started = page.page.evaluate(f"window.callTest.sfuStart({json.dumps(SETUP)})")
        assert started["state"] == "connected", started

        def fed_back() -> bool:
            peers = node_peers(server)
            alice, python = peers.get("alice", {}), peers.get("bob", {})
            return (
                alice.get("rembs_received", 0) > 0
                and alice.get("loss_reports_received", 0) > 0
                and alice.get("feedback_sent", 0) > 0
                and python.get("feedback_sent", 0) > 0
            )

        end = time.monotonic() + 45
        while time.monotonic() < end and not fed_back():
            time.sleep(0.2)
        assert fed_back(), node_peers(server)
        sender = bob.session.video_sender
        assert sender is not None and sender.estimate_bps is not None
        page.page.evaluate("window.callTest.sfuClose()")
        assert [e for e in page.problems() if "favicon" not in e] == []
    finally:
        browser.close()


RECORD_PCS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""
# Chromium's send-side estimate on the newest connection (bit/s; null until it has one).
AVAILABLE_OUTGOING = """async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  let found = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "candidate-pair" && r.nominated && r.availableOutgoingBitrate !== undefined)
      found = r.availableOutgoingBitrate;
  });
  return found;
}"""


def test_chromium_caps_what_it_sends_at_the_nodes_remb(
    chromium: Any, server: SfuPageServer, tmp_path: Path
) -> None:
    """Chromium's bandwidth estimate (``availableOutgoingBitrate``) starts at ~300 kbit/s;
    a node announcing 150 kbit/s for its uplink brings it down to that."""
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    args = [*chromium_args(y4m), "--allow-loopback-in-peer-connection"]
    browser = chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        page = WebPage(browser.new_page(), "call-sfu-remb-cap")
        page.page.add_init_script(RECORD_PCS)
        page.page.goto(server.url)
        page.page.wait_for_selector("html[data-call-ready]", state="attached")
        started = page.page.evaluate(f"window.callTest.sfuStart({json.dumps(SETUP)})")
        assert started["state"] == "connected", started

        def estimate() -> float | None:
            value = page.page.evaluate(AVAILABLE_OUTGOING)
            return None if value is None else float(value)

        def poll(condition: Any, what: str, timeout: float = 30) -> list[float | None]:
            seen: list[float | None] = []
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                seen.append(estimate())
                if condition(seen[-1]):
                    return seen
                time.sleep(0.25)
            raise AssertionError(f"{what}: {seen[-20:]}")

        # The default node announces 2.5 Mbit/s: nothing holds Chromium's estimate down.
        poll(lambda v: v is not None and v > 250_000, "Chromium's estimate above 250 kbit/s")

        # A node that announces 150 kbit/s (its uplink estimate's start and ceiling).
        cap = BandwidthConfig(publish_start_bps=150_000, publish_max_bps=150_000)

        async def capped_node() -> None:
            assert server.node is not None
            await server.node.close()
            server.node = SfuNode(SfuConfig(forwarder=ForwarderConfig(bandwidth=cap)))

        server.call(capped_node())
        again = page.page.evaluate("window.callTest.sfuReconnect()")
        assert again["state"] == "connected", again
        seen = poll(lambda v: v is not None and v <= 160_000, "Chromium's estimate at the cap")
        print("Chromium's availableOutgoingBitrate under a 150 kbit/s REMB:", seen[-5:])
        page.page.evaluate("window.callTest.sfuClose()")
    finally:
        browser.close()
