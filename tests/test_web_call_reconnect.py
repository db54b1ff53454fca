"""A page whose media connection dies comes back into the same call (issue 13, reconnection).

The page of tests/test_web_call_media_cli.py (the web CallClient over the real topologies, no
UI) is in a call with a real ``salon call`` CLI participant, on the SFU and in a mesh. Once
the page shows Alice's camera, the test closes the page's peer connections under it (an init
script keeps a list of the RTCPeerConnections the page made; closing one fires no event, as
when a browser drops a connection). Then, without any rejoin:

- the page says "reconnected to …" and shows Alice's camera again;
- the CLI keeps decoding the page's video (mesh: it counts a reconnect of the pair);
- the verification code is the one from before.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from conftest import SalonServer
from media_page_support import chromium_args, write_y4m
from test_web_call_media_cli import YUV, CliCall, call_server, peer

__all__ = ["call_server"]  # the fixture, shared with test_web_call_media_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

KEEP_PEER_CONNECTIONS = """(() => {
  const Native = window.RTCPeerConnection;
  const made = [];
  window.__peerConnections = made;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); made.push(this); }
  };
})()"""


def frames_of(cli: CliCall, name: str) -> int:
    """Video frames of ``name`` in the CLI's last status line."""
    for line in reversed(cli.lines):
        found = re.search(rf"{name} \([^()]*?(\d+) video / \d+ audio frames\)", line)
        if line.startswith("status: ") and found:
            return int(found.group(1))
    return 0


def until(condition: Any, what: str, timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("topology", ["sfu", "mesh"])
def test_a_page_whose_connection_dies_comes_back_into_the_call(
    topology: str, chromium: Any, call_server: SalonServer, module_user: Any, tmp_path: Path
) -> None:
    alice = module_user(f"alice-re-{topology}")
    made = alice.json("space", "create", "Town hall", "--server", call_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "stage", "--kind", "conference", "--topology", topology)
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    args = [*chromium_args(y4m), "--allow-loopback-in-peer-connection"]
    browser = chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    cli = None
    try:
        web = WebPage(browser.new_page(), "call-reconnect")
        page = web.page
        page.add_init_script(KEEP_PEER_CONNECTIONS)
        page.goto(f"{call_server.url}/")
        page.wait_for_selector("html[data-call-ready]", state="attached")
        page.evaluate("([l, n]) => window.callCli.join(l, n)", [made["link"], "Bob"])
        cli = CliCall(alice, space, "stage", tmp_path / "alice.json", "--duration", "45")
        cli.wait_for(r"verification code|waiting|joined", 40)
        started = page.evaluate("r => window.callCli.startCall(r)", "stage")
        assert started["phase"] == "in-call", started
        page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", ["Alice", "camera"])
        code = page.evaluate("() => window.callCli.view()")["code"]
        until(lambda: frames_of(cli, "Bob") > 10, "the CLI decoding the page", 30)

        killed = page.evaluate(
            """() => { const live = window.__peerConnections.filter(
                         (pc) => pc.connectionState === "connected");
                       live.forEach((pc) => pc.close()); return live.length; }"""
        )
        assert killed == 1, killed
        died = time.monotonic()
        mark = len(cli.lines)
        note = until(
            lambda: next(
                (n for n in page.evaluate("() => window.callCli.notes()") if "reconnected to" in n),
                None,
            ),
            "the page's reconnected note",
            40,
        )
        page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", ["Alice", "camera"])
        back = frames_of(cli, "Bob")
        until(lambda: frames_of(cli, "Bob") > back + 10, "the CLI decoding the page again", 30)
        print(f"\n{topology}: {note!r}, {time.monotonic() - died:.1f} s from the kill to media")
        view = page.evaluate("() => window.callCli.view()")
        assert view["code"] == code and view["phase"] == "in-call", view
        during = cli.lines[mark:]
        assert not any(re.search(r"Bob .*(left|joined)|verification code", x) for x in during), (
            during
        )
        left = page.evaluate("() => window.callCli.leave()")
        stats = cli.finish(60)
        bob = peer(stats, "Bob")
        if topology == "mesh":
            assert bob["reconnects"] == 1, bob
        assert len(left["notes"]) > 0
        assert [e for e in web.problems() if "favicon" not in e] == []
    finally:
        if cli is not None:
            cli.kill()
        browser.close()
