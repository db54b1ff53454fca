"""Congestion feedback between a real Chromium and the real SFU node (issue 13: REMB + RR).

The page and the Python participant of ``tests/test_web_call_sfu_media.py`` join one node.
The node writes abs-send-time on what it forwards and answers without transport-cc, so
Chromium's receivers send REMB on their slots, beside their receiver reports: both reach the
node's RTCP hook (its per-participant counters). Towards Chromium as a publisher the node
sends its RR + REMB once a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from browser_support import CHROMIUM, WebPage
from media_page_support import chromium_args, write_y4m
from test_web_call_sfu_media import CONF, SETUP, YUV, Bob, SfuPageServer, server

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
