"""Relay calls through a real TURN server, with the web app and the CLI (issue 10).

A real coturn (the ``coturn`` fixture: Debian's ``turnserver`` on 127.0.0.1, a random port,
a fresh secret) and a real ``salon serve`` whose ``[ice]`` names it with ``relay_only = true``
— the operator's "relay calls" (docs/PROTOCOL.md §5.6): the server tells every client, in its
IceServers answer, to connect only through the TURN server, so no participant learns another's
IP address. Nothing is set on the page or on the CLI: both obey the server.

A Chromium page (the real call screen) and a ``salon call`` CLI meet in a mesh room and then in
an SFU room. Checked each time: each decodes the other's video (colour) and audio; every
RTCPeerConnection the page made is relay-only, its local descriptions carry relay candidates
only (what it sends in its signals or SFU offers is a subset), its selected candidate pair is
relay on its side (and, in the mesh, on the CLI's side too: the CLI sent relay candidates only);
coturn's log shows allocations for the page's REST username and for another (the CLI's).

The page is watched by an init script of the test (not app code) that keeps each
RTCPeerConnection the app makes and reports candidate *types* only — no addresses.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from conftest import SalonServer
from media_page_support import chromium_args, write_y4m
from test_web_call_sfu6 import AUDIO_BY_NAME, STATS, page_failures, poll, yuv
from test_web_call_ui import (
    CALL_VIEW,
    CODE_SHOWN,
    REMOTE_PLAYING,
    TILE_COLOUR,
    CliCall,
    cli_calls,
    join_call,
    open_room,
)

from client.call.media import colour_distance, name_colour

pytestmark = pytest.mark.timeout(300)

PAGE_RGB = (20, 200, 200)
REST_USERNAME = re.compile(r"^(\d+):([A-Za-z0-9_-]{22})$")

# Keeps every RTCPeerConnection the app makes (test instrumentation, before the app loads).
WATCH_PCS = """(() => {
  const Base = window.RTCPeerConnection;
  window.__turnPcs = [];
  window.RTCPeerConnection = class extends Base {
    constructor(...args) { super(...args); window.__turnPcs.push(this); }
  };
})();"""

# Candidate types only: per connection, its policy, the types in its local and remote
# descriptions, the selected pair's local/remote types, and its TURN usernames (the REST
# usernames are not secret: coturn logs them; credentials are never read).
CANDIDATE_TYPES = """async () => {
  const types = (sdp) =>
    [...(sdp || "").matchAll(/^a=candidate:.* typ (\\w+)/gm)].map((m) => m[1]);
  const out = [];
  for (const pc of window.__turnPcs) {
    const config = pc.getConfiguration();
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId);
      }
    });
    if (pair === null) {
      stats.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
      });
    }
    out.push({
      state: pc.connectionState,
      policy: config.iceTransportPolicy,
      usernames: (config.iceServers || []).map((s) => s.username).filter((u) => u),
      local: types(pc.localDescription && pc.localDescription.sdp),
      remote: types(pc.remoteDescription && pc.remoteDescription.sdp),
      selected: pair === null ? null : [
        stats.get(pair.localCandidateId)?.candidateType,
        stats.get(pair.remoteCandidateId)?.candidateType,
      ],
    });
  }
  return out;
}"""


def cli_rgb(name: str) -> tuple[int, int, int]:
    b, g, r = name_colour(name)
    return (r, g, b)


@pytest.fixture
def relay_server(coturn: Any, web_dist: Path, tmp_path: Path) -> Any:
    config = {
        "server": {"web_dir": str(web_dist)},
        "ice": {"turn_urls": [coturn.url], "turn_secret": coturn.secret, "relay_only": True},
        "conference": {"max_participants": 4},
    }
    srv = SalonServer(tmp_path / "server", config)
    srv.start()
    yield srv
    srv.stop()


def check_call(
    web: WebPage, cli: CliCall, topology: str, coturn: Any, before: set[str]
) -> list[dict[str, Any]]:
    """The page and the CLI decode each other; everything the page did went through coturn.
    ``before``: the usernames coturn had allocated for before this call."""
    page = web.page
    cli.wait_for(r"relay calls: this server sends every connection through its TURN server", 5)
    code = cli.wait_for(r"verification code ([\d ]+) \(2 in the call", 90).group(1)
    page.wait_for_selector(f"{CALL_VIEW}[data-topology={topology}]", timeout=45_000)
    page.wait_for_function(REMOTE_PLAYING, arg=1, timeout=90_000)
    page.wait_for_function(CODE_SHOWN, arg=code, timeout=30_000)

    def colour() -> Any:
        rgb = page.evaluate(TILE_COLOUR, "Alice")
        return rgb if rgb and colour_distance(tuple(rgb), cli_rgb("Alice")) < 60 else None

    poll(colour, 30, "the page does not show Alice's colour")
    poll(
        lambda: page.evaluate(AUDIO_BY_NAME).get("Alice", 0.0) > 0.005,
        30,
        "the page does not hear Alice",
    )
    decrypted, failures = page_failures(page.evaluate(STATS))
    assert failures == 0 and (topology == "mesh" or decrypted > 50), (decrypted, failures)

    pcs = [p for p in page.evaluate(CANDIDATE_TYPES) if p["state"] == "connected"]
    assert pcs, page.evaluate(CANDIDATE_TYPES)
    for pc in pcs:
        assert pc["policy"] == "relay", pc
        assert pc["local"] and set(pc["local"]) == {"relay"}, pc  # no host/srflx ever leaves
        assert pc["selected"] is not None and pc["selected"][0] == "relay", pc
        if topology == "mesh":  # the CLI obeyed the server too: it offered relay only
            assert pc["remote"] and set(pc["remote"]) == {"relay"}, pc
            assert pc["selected"][1] == "relay", pc
    # coturn allocated, in this call, for the page's REST username and for another (the CLI's).
    allocated = set(coturn.allocated_usernames()) - before
    page_names = {u for pc in pcs for u in pc["usernames"]}
    assert page_names and page_names <= allocated, (page_names, allocated)
    assert allocated - page_names, ("no allocation but the page's", allocated)
    for username in allocated:
        match = REST_USERNAME.match(username)
        assert match and int(match.group(1)) > time.time(), username
    return pcs


def test_page_and_cli_relay_only_through_coturn(
    relay_server: SalonServer, coturn: Any, module_user: Any, chromium: Any, tmp_path: Path
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Relay", "--server", relay_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, "desk", "--kind", "conference", "--topology", "mesh")
    alice.run("room", "create", space, "hall", "--kind", "conference", "--topology", "sfu")

    y4m = write_y4m(tmp_path / "bob.y4m", yuv(PAGE_RGB), 160, 120)
    browser = chromium.browser_type.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(y4m)
    )
    results: dict[str, Any] = {}
    try:
        context = browser.new_context(viewport={"width": 960, "height": 720})
        context.add_init_script(WATCH_PCS)
        web = WebPage(context.new_page(), "Bob")
        open_room(web, link, "Bob", "desk")
        for room, topology in (("desk", "mesh"), ("hall", "sfu")):
            if room == "hall":
                web.page.click("nav.sidebar a:has-text('hall')")
                web.page.wait_for_selector("[data-testid=call-prejoin]", timeout=30_000)
            before = set(coturn.allocated_usernames())
            with cli_calls() as running:
                stats_path = tmp_path / f"alice-{room}.json"
                cli = CliCall(alice, space, room, stats_path, 90)
                running.append(cli)
                cli.wait_for(r"joined call", 45)
                join_call(web)
                try:
                    check_call(web, cli, topology, coturn, before)
                except BaseException:  # what the page's connections, the CLI and coturn saw
                    print("CLI:", "\n".join(cli.lines))
                    print("PAGE:", web.page.evaluate(CANDIDATE_TYPES))
                    print("COTURN:", coturn.log()[-6000:])
                    web.screenshot(f"call-turn-{topology}-failed")
                    raise
                web.screenshot(f"call-turn-{topology}")
                # Leave the page's call first, then stop the CLI (its stats file).
                web.page.click("[data-testid=call-leave]")
                cli.stop()
                results[room] = json.loads(stats_path.read_text())
        assert [p for p in web.problems() if "favicon" not in p] == [], web.problems()
    finally:
        browser.close()

    for room, topology in (("desk", "mesh"), ("hall", "sfu")):
        stats = results[room]
        assert stats["topology"] == topology and stats["e2ee"] is True, stats
        bob = {p["display_name"]: p for p in stats["participants"]}["Bob"]
        assert bob["video_frames_decoded"] > 10 and bob["audio_frames_decoded"] > 30, bob
        assert bob["decrypt_failures"] == 0, bob
        b, g, r = bob["dominant_colour"]
        assert colour_distance((r, g, b), PAGE_RGB) < 60, bob
    log = coturn.log()
    assert "ALLOCATE processed, success" in log
    assert "CREATE_PERMISSION processed, success" in log or "CHANNEL_BIND processed" in log
    # The page and the CLI asked for their own credentials in each call: at least four.
    assert len(set(coturn.allocated_usernames())) >= 4, coturn.allocated_usernames()
