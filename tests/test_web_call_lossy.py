"""A browser on a lossy link in an SFU call (issue 13), everything real.

``salon serve`` (web app and SFU) listens on the root end of a veth pair
(``tests/support/lossy_net.py``); one Chromium ("Lossy") runs *inside* the network namespace
(Playwright launches ``ip netns exec NS /usr/bin/chromium``), whose link drops 10 % of UDP
packets at random each way; another Chromium ("Clean") and Alice's ``salon call`` are on the
root namespace's clean path. Both pages join with their camera off, so all the video they
decode is Alice's test pattern. Over a steady window (once both decode it):

- the video frames per second Lossy's page decodes are at least :data:`FLOOR` of what Clean's
  decodes (``getStats()`` inbound-rtp ``framesDecoded``, read from the page's
  ``RTCPeerConnection``), and losses really were repaired: its ``nackCount`` (NACKs it sent)
  and the SFU's retransmissions in the window (``/metrics``) are > 0.

The pages are served from the veth address, not loopback; Chromium is told to treat that
origin as secure (``--unsafely-treat-insecure-origin-as-secure``: WebCrypto and the camera
need a secure context). Needs root, ``ip`` and ``nft``: skipped with the reason otherwise
(failed under ``CI=true``).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from conftest import SALON, SalonServer
from media_page_support import chromium_args
from support import until_sync
from support.lossy_net import LossyNet
from test_web_call_ui import CALL_VIEW, CliCall, cli_calls, join_call, open_room

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOM = "hall"
WINDOW = 20.0  # seconds the decode rates are measured over
FLOOR = 0.95  # Lossy's decoded frames per second, at least this share of Clean's
TOKEN = "metrics-token-for-the-lossy-browser-test"

# Every RTCPeerConnection the page makes, kept for getStats() (before any page script runs).
KEEP_PCS = """(() => {
  const Native = window.RTCPeerConnection;
  const kept = [];
  window.__salonPcs = kept;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); kept.push(this); }
  };
})();"""
# Inbound video over every open connection: summed counters, and the largest frame height.
INBOUND_VIDEO = """async () => {
  const sum = { framesDecoded: 0, nackCount: 0, packetsLost: 0, packetsReceived: 0,
                retransmittedPacketsReceived: 0, freezeCount: 0, totalFreezesDuration: 0,
                pliCount: 0, bytesReceived: 0, frameHeight: 0, streams: 0 };
  for (const pc of window.__salonPcs ?? []) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type !== "inbound-rtp" || r.kind !== "video") return;
      for (const k of Object.keys(sum)) {
        if (k === "frameHeight") sum[k] = Math.max(sum[k], r.frameHeight ?? 0);
        else if (k === "streams") sum[k] += (r.framesDecoded ?? 0) > 0 ? 1 : 0;
        else sum[k] += r[k] ?? 0;
      }
    });
  }
  return sum;
}"""


class NetCliCall(CliCall):
    """A :class:`CliCall` whose ICE host is the veth's root end (the SFU's address)."""

    def __init__(self, user: Any, space: str, room: str, stats: Path, ice_host: str) -> None:
        import subprocess
        import threading

        args = [str(SALON), "call", space, room, "--duration", "240", "--stats", str(stats)]
        self.stats = stats
        self.lines: list[str] = []
        env = {"SALON_ICE_HOSTS": ice_host, "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=user.env(env),
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


@pytest.fixture
def lan_server(net: LossyNet, web_dist: Path, tmp_path: Path) -> Iterator[SalonServer]:
    """The server (web app and SFU) on the veth's root end: reached from the namespace."""
    config = {
        "server": {"host": net.host_addr, "web_dir": str(web_dist)},
        "metrics": {"enabled": True, "token": TOKEN},
    }
    srv = SalonServer(tmp_path / "server", config)
    srv.ice_hosts = net.host_addr
    srv.start()
    yield srv
    srv.stop()


def launch(chromium: Any, net: LossyNet | None, origin: str, tmp_path: Path, name: str) -> Any:
    """A Chromium of its own, inside ``net``'s namespace when given."""
    executable = CHROMIUM
    if net is not None:
        wrapper = tmp_path / f"chromium-in-{net.name}"
        wrapper.write_text(
            f'#!/bin/sh\nexec ip netns exec {net.name} {CHROMIUM} "$@"\n', encoding="utf-8"
        )
        wrapper.chmod(0o755)
        executable = str(wrapper)
    args = [*chromium_args(None), f"--unsafely-treat-insecure-origin-as-secure={origin}"]
    return chromium.browser_type.launch(executable_path=executable, headless=True, args=args)


def sfu_retransmits(url: str) -> float:
    """Packets the SFU retransmitted so far (answering NACKs), from the server's /metrics."""
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^salon_sfu_retransmits_total (\S+)$", text, re.M)
    assert found, "no salon_sfu_retransmits_total in /metrics"
    return float(found[1])


def inbound(web: WebPage) -> dict[str, float]:
    return dict(web.page.evaluate(INBOUND_VIDEO))


def test_a_browser_on_a_10_percent_lossy_link_decodes_as_much_video_as_a_clean_one(
    net: LossyNet, lan_server: SalonServer, module_user: Any, chromium: Any, tmp_path: Path
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Hall", "--server", lan_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, ROOM, "--kind", "conference", "--topology", "sfu")
    net.set_loss(10)
    browsers: list[Any] = []
    pages: dict[str, WebPage] = {}
    try:
        for name, where in (("Clean", None), ("Lossy", net)):
            browser = launch(chromium, where, lan_server.url, tmp_path, name)
            browsers.append(browser)
            context = browser.new_context(viewport={"width": 960, "height": 720})
            context.add_init_script(KEEP_PCS)
            pages[name] = WebPage(context.new_page(), name)
            open_room(pages[name], link, name, ROOM)
        with cli_calls() as running:
            call = NetCliCall(alice, space, ROOM, tmp_path / "Alice.json", net.host_addr)
            running.append(call)
            call.wait_for(r"^status: in the call", 60)
            for web in pages.values():
                web.page.check("[data-testid=join-camera-off]")
                join_call(web)
                web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=60_000)
            for name, web in pages.items():
                until_sync(
                    lambda web=web: inbound(web)["framesDecoded"] > 30,
                    f"{name}'s page decodes Alice's video",
                    90,
                    0.5,
                )
            before = {name: (time.monotonic(), inbound(web)) for name, web in pages.items()}
            resent = sfu_retransmits(lan_server.url)
            time.sleep(WINDOW)  # the measuring window itself (what is measured is its length)
            after = {name: (time.monotonic(), inbound(web)) for name, web in pages.items()}
            resent = sfu_retransmits(lan_server.url) - resent
            pages["Lossy"].screenshot("call-lossy-10")
            call.stop()
    finally:
        for browser in browsers:
            browser.close()

    def rate(name: str) -> float:
        (t0, s0), (t1, s1) = before[name], after[name]
        return (s1["framesDecoded"] - s0["framesDecoded"]) / (t1 - t0)

    lossy = after["Lossy"][1]
    ratio = rate("Lossy") / rate("Clean")
    delta = {k: lossy[k] - before["Lossy"][1][k] for k in lossy}
    clean = {k: after["Clean"][1][k] - before["Clean"][1][k] for k in lossy}
    print(
        f"\nbrowser at 10 % loss: Lossy decoded {rate('Lossy'):.1f} fps, Clean "
        f"{rate('Clean'):.1f} fps: ratio {ratio:.3f}; Lossy over the window {delta}; "
        f"Clean {clean}; SFU retransmitted {resent:.0f}; dropped {net.counters()}"
    )
    assert net.counters()["down"] > 50, net.counters()
    # Lossy's page asked for what it lost, and the SFU resent it (plain or RTX: Chromium
    # counts only RTX in retransmittedPacketsReceived).
    assert delta["nackCount"] > 0 and resent > 0, (delta, resent)
    assert ratio >= FLOOR, (ratio, before, after)
