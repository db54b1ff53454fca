"""Turning one's own microphone or camera off shows on everyone's screen (issue 10: "muted
and hand icons" on tiles), page and CLI alike: signed "mic-off"/"mic-on" and
"camera-off"/"camera-on" self actions (PROTOCOL §13), distinct from a host's mute.

A mesh of two Chromium pages (Bob, Carol) and a ``salon call --muted`` (Alice, the owner):
Bob turns his microphone and camera off → Carol's tile of Bob shows the muted icon and his
initial, and the CLI shows "muted (self)"; on again → cleared. The CLI joined muted → the
pages show Alice's muted icon; ``salon mic ... on`` unmutes her everywhere. A host's mute
reads "Muted by Alice" on the tile. Screenshots: call-selfmute-*.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from browser_support import screenshot_path
from conftest import SalonServer
from support import until_sync
from test_web_call_ui import (
    CALL_VIEW,
    REMOTE_PLAYING,
    CliCall,
    cli_calls,
    join_call,
    open_room,
)

pytestmark = pytest.mark.timeout(300)
SERVER_CONFIG = {"conference": {"max_participants": 3}}

TILE = "[data-testid=call-tile][data-name={}]"
MUTED = TILE + " [data-testid=tile-muted]"


def test_self_mute_and_camera_off_seen_by_pages_and_the_cli(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice-selfmute")
    made = alice.json("space", "create", "Town hall", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "hall", "--kind", "conference")
    bob, carol = new_page(), new_page(theme="dark")
    open_room(bob, made["link"], "Bob", "hall")
    open_room(carol, made["link"], "Carol", "hall")

    with cli_calls() as running:
        join_call(bob)
        bob.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        join_call(carol)
        carol.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        cli = CliCall(alice, space, "hall", tmp_path / "alice.json", 120, "--muted")
        running.append(cli)
        cli.wait_for(r"verification code ([\d ]+) \(3 in the call")
        for web in (bob, carol):
            web.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=45_000)

        # The CLI joined muted: both pages show Alice's muted icon, in her own words.
        for web in (bob, carol):
            web.page.wait_for_selector(MUTED.format("Alice"), timeout=30_000)
            assert web.page.get_attribute(MUTED.format("Alice"), "title") == "Microphone off"
        assert not carol.page.is_visible(MUTED.format("Bob"))

        # Bob turns his microphone and camera off: Carol's tile of him shows it, so does the CLI.
        bob.page.click("[data-testid=call-mic]")
        bob.page.wait_for_selector("[data-testid=call-mic][aria-label='Turn on your microphone']")
        carol.page.wait_for_selector(MUTED.format("Bob"), timeout=30_000)
        assert "microphone off" in str(carol.page.get_attribute(TILE.format("Bob"), "aria-label"))
        cli.wait_for(r"Bob \(\w+\) turned their microphone off")
        cli.wait_for(r"Bob \([^)]*muted \(self\)", timeout=30)
        bob.page.click("[data-testid=call-camera]")
        carol.page.wait_for_selector(TILE.format("Bob") + " .tile-off", timeout=30_000)
        cli.wait_for(r"Bob \(\w+\) turned their camera off")
        carol.page.locator(TILE.format("Bob")).screenshot(
            path=str(screenshot_path("call-selfmute-tile"))
        )
        carol.screenshot("call-selfmute-grid")

        # On again: cleared everywhere.
        bob.page.click("[data-testid=call-mic]")
        carol.page.wait_for_selector(MUTED.format("Bob"), state="detached", timeout=30_000)
        cli.wait_for(r"Bob \(\w+\) turned their microphone on")
        bob.page.click("[data-testid=call-camera]")
        carol.page.wait_for_selector(TILE.format("Bob") + " video", timeout=30_000)
        cli.wait_for(r"Bob \(\w+\) turned their camera on")

        # Alice unmutes from another terminal: her running call follows, the pages clear.
        alice.run("mic", space, "hall", "on")
        cli.wait_for(r"your microphone is on")
        for web in (bob, carol):
            web.page.wait_for_selector(MUTED.format("Alice"), state="detached", timeout=30_000)

        # A host's mute reads differently: "Muted by Alice".
        alice.run("mod", space, "hall", "mute", "Carol")
        bob.page.wait_for_selector(MUTED.format("Carol"), timeout=30_000)
        assert bob.page.get_attribute(MUTED.format("Carol"), "title") == "Muted by Alice"
        bob.screenshot("call-selfmute-host-muted")

        # Bob mutes himself again; the CLI's --stats says so (self, not a host's mute). (The
        # CLI's lines hold the first "turned their microphone off" too: wait for the second.)
        bob.page.click("[data-testid=call-mic]")
        off = re.compile(r"Bob \(\w+\) turned their microphone off")
        until_sync(
            lambda: sum(1 for line in list(cli.lines) if off.search(line)) >= 2,
            "the CLI told of Bob's second microphone-off",
            timeout=30,
        )
        cli.stop()
        stats = json.loads((tmp_path / "alice.json").read_text())
        people = {p["display_name"]: p for p in stats["participants"]}
        assert people["Bob"]["mic_off"] is True and people["Bob"]["muted"] is False
        assert people["Bob"]["camera_off"] is False
        assert people["Carol"]["muted"] is True and people["Carol"]["mic_off"] is False
        assert stats["self"]["mic_off"] is False
        for web in (bob, carol):
            web.page.click("[data-testid=call-leave]")
    assert bob.problems() == [] and carol.problems() == []
