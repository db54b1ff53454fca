"""A host in a Chromium page moderates a server-routed call of pages and ``salon call`` CLIs
(issue 10), every action signed by the page and checked by every client.

One call, its steps in order: Bob (a moderator, in a page) shares his screen and Dave's CLI
decodes it (its ``--stats`` and its ``--record`` file, decoded with PyAV, hold it); Dave raises
his hand (``salon hand``), every page shows it, Bob lowers it, everyone sees it lowered; Bob
turns Dave's microphone off and Dave's tone, loud at Carol's page before, goes silent there
(WebAudio on his ``<audio data-name=Dave>``); Bob mutes everyone: Carol's page says her
microphone is off, every page shows the muted icons, Carol's beeps stop arriving at Bob's page
and the CLI saw it; Bob locks the call (Eve's page and Frank's CLI are told it is locked),
unlocks it (she gets in), bans her (her page says so, and she cannot join again) and bans
Frank's CLI (it exits with its own error); Bob ends the call: every page says so and Dave's
CLI exits cleanly. Then a mesh (Bob's screen in the CLI's stats and recording) and a stage room
(Bob lets Dave's CLI speak and makes him a listener again). Screenshots of each state
(call-mod-*) in light and dark, desktop and phone width.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import test_web_look as look
from conftest import SalonServer
from test_web_call_sfu6 import AUDIO_BY_NAME, poll, yuv
from test_web_call_ui import (
    CALL_VIEW,
    REMOTE_PLAYING,
    SCREEN_PLAYING,
    CliCall,
    cli_calls,
    join_call,
    open_room,
    shoot,
)

from client.call.media import colour_distance

pytestmark = pytest.mark.timeout(300)
SERVER_CONFIG = {"conference": {"max_participants": 6}}
# Every page's camera is this colour (magenta): what is green in a CLI's recording is the
# screen Chromium shares (its fake screen is a green test pattern).
CAMERA_RGB = (210, 40, 200)
FAKE_CAMERA_YUV = yuv(CAMERA_RGB)

MIC = "[data-testid=call-mic]"
OVER = "[data-testid=call-over]"
REASON = "[data-testid=call-reason]"
LOUD, SILENT = 0.005, 0.002  # WebAudio RMS levels: a sound arrives / nothing does


def tile(name: str, part: str = "") -> str:
    return f"[data-testid=call-tile][data-name={name}] {part}".strip()


def level(web: Any, name: str) -> float:
    """The loudest RMS heard from ``name``'s <audio> on ``web``'s page over ~1.5 s."""
    return float(web.page.evaluate(AUDIO_BY_NAME).get(name, 0.0))


def manage(host: Any, name: str, button: str) -> None:
    """On the host's page: the people panel (opened if need be), Manage NAME, then BUTTON."""
    page = host.page
    if page.locator("[data-testid=call-people-panel]").count() == 0:
        page.click("[data-testid=call-people]")
    page.click(f"button[aria-label='Manage {name}']", timeout=30_000)
    page.click(f'dialog[open] button:has-text("{button}")')


def views(web: Any, name: str) -> None:
    """Screenshots of ``web``'s page at desktop and phone width, light and dark."""
    for width, height, theme in ((1280, 800, "light"), (390, 844, "dark")):
        shoot(web.page, name, width, height, theme)
    web.page.set_viewport_size({"width": 1280, "height": 800})
    web.page.emulate_media(color_scheme="light")


def recorded_frames(path: Path) -> list[Any]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def assert_screen_recorded(screen: dict[str, Any], record: Path) -> None:
    """The screen's colour (as the CLI decoded it) is not a camera's, and the recording shows
    it: absent from its first frame (before the share), a good part of a later one."""
    b, g, r = screen["dominant_colour"]
    assert colour_distance((r, g, b), CAMERA_RGB) > 100, screen
    frames = recorded_frames(record)
    assert len(frames) > 15, len(frames)
    target = np.array(screen["dominant_colour"])
    share = [float((np.abs(f.astype(int) - target).sum(axis=2) < 60).mean()) for f in frames]
    assert share[0] < 0.01 and max(share) > 0.05, share[:: max(1, len(share) // 20)]


def test_a_page_host_moderates_pages_and_clis(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Guild", "--server", web_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, "hall", "--kind", "conference", "--topology", "sfu")
    dave, frank = module_user("dave"), module_user("frank")
    dave.run("join", link, "--as", "Dave")
    frank.run("join", link, "--as", "Frank")

    bob = new_page()
    carol = new_page(theme="dark")
    eve = new_page(theme="dark", phone=True)
    open_room(bob, link, "Bob", "hall")
    alice.run("role", space, "Bob", "moderator")
    open_room(carol, link, "Carol", "hall")
    record = tmp_path / "dave.mp4"
    problems: list[str] = []

    with cli_calls() as running:
        cli = CliCall(dave, space, "hall", tmp_path / "dave.json", 240, "--record", str(record))
        running.append(cli)
        cli.wait_for(r"joined call")
        join_call(bob)
        join_call(carol)
        cli.wait_for(r"verification code ([\d ]+) \(3 in the call", 60)
        for web in (bob, carol):
            web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=45_000)
            web.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=60_000)

        # Bob shares his screen: Dave's CLI decodes it (and records it; checked at the end).
        bob.page.click("[data-testid=call-screen]")
        bob.page.wait_for_selector("[data-testid=call-screen][aria-pressed=true]")
        cli.wait_for(r"Bob .* is sharing a screen", 45)
        carol.page.wait_for_function(SCREEN_PLAYING, timeout=45_000)

        # Dave raises his hand (salon hand): both pages show it; Bob lowers it, all see that.
        dave.run("hand", space, "hall", "up")
        for web in (bob, carol):
            web.page.wait_for_selector(tile("Dave", ".tile-hand"), timeout=30_000)
        cli.wait_for(r"you raised a hand")
        assert "hand raised" in str(bob.page.get_attribute(tile("Dave"), "aria-label"))
        bob.page.click("[data-testid=call-people]")
        bob.page.wait_for_selector(
            "[data-testid=call-person][data-name=Dave]:has-text('hand raised')", timeout=30_000
        )
        problems += look.audit(carol.page, "a hand raised")
        views(carol, "call-mod-hand")
        bob.page.click("button[aria-label='Manage Dave']")
        bob.page.wait_for_selector("dialog[open] button:has-text('Lower Dave')")
        problems += look.audit(bob.page, "host menu")
        views(bob, "call-mod-host-menu")
        bob.page.click('dialog[open] button:has-text("Lower Dave\'s hand")')
        for web in (bob, carol):
            web.page.wait_for_selector(tile("Dave", ".tile-hand"), state="detached", timeout=30_000)
        cli.wait_for(r"Bob \(\w+\) lowered your hand")

        # Bob turns Dave's (CLI) microphone off: his tone, heard at Carol's page, stops there.
        poll(lambda: level(carol, "Dave") > LOUD, 45, "Carol's page never heard Dave's tone")
        manage(bob, "Dave", "Turn off Dave's microphone")
        cli.wait_for(r"Bob \(\w+\) muted you")
        carol.page.wait_for_selector(tile("Dave", ".tile-muted"), timeout=30_000)
        poll(lambda: level(carol, "Dave") < SILENT, 30, "Carol's page still hears Dave")

        # Mute everyone: Carol's page turns her microphone off; every page shows the muted
        # icons; her (fake microphone's) beeps stop arriving at Bob's page; the CLI saw it.
        poll(lambda: level(bob, "Carol") > LOUD, 45, "Bob's page never heard Carol")
        bob.page.click("button:has-text('Mute everyone')")
        carol.page.wait_for_selector(f"{MIC}[aria-label='Turn on your microphone']", timeout=30_000)
        carol.page.wait_for_selector(f"{tile('Carol')}[data-me] .tile-muted", timeout=30_000)
        for who in ("Carol", "Dave"):
            bob.page.wait_for_selector(tile(who, ".tile-muted"), timeout=30_000)
        assert bob.page.locator(f"{tile('Bob')}[data-me] .tile-muted").count() == 0
        assert bob.page.locator(f"{MIC}[aria-label='Turn off your microphone']").count() == 1
        cli.wait_for(r"Bob \(\w+\) muted everyone")
        poll(lambda: level(bob, "Carol") < SILENT, 30, "Bob's page still hears Carol")
        bob.page.keyboard.press("Escape")
        bob.page.wait_for_selector("[data-testid=call-people-panel]", state="detached")
        problems += look.audit(carol.page, "call, everyone muted")
        views(carol, "call-mod-muted-all")

        # Lock: Eve's page is refused with its own words; unlocked, she gets in.
        bob.page.click("[data-testid=call-people]")
        bob.page.click("[data-testid=call-lock-toggle]")
        bob.page.wait_for_selector("[data-testid=call-count]:has-text('locked')", timeout=30_000)
        cli.wait_for(r"Bob \(\w+\) locked the call")
        open_room(eve, link, "Eve", "hall")
        join_call(eve)
        eve.page.wait_for_selector(f"{OVER}[data-phase=failed]", timeout=30_000)
        assert "The call is locked" in eve.page.inner_text(REASON)
        views(eve, "call-mod-locked")
        locked_out = frank.run("call", space, "hall", "--duration", "20", check=False)
        assert locked_out.returncode == 5, locked_out.stderr
        assert "error: cannot join: a host locked this call" in locked_out.stderr, locked_out.stderr
        bob.page.click("[data-testid=call-lock-toggle]")
        bob.page.wait_for_selector(
            "[data-testid=call-count]:not(:has-text('locked'))", timeout=30_000
        )
        eve.page.click(f"{OVER} button:has-text('Try again')")
        eve.page.wait_for_selector("[data-testid=call-join]", timeout=30_000)
        join_call(eve)
        eve.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        cli.wait_for(r"verification code ([\d ]+) \(4 in the call", 60)

        # Ban: Eve's page says Bob banned her, and her next try is refused as banned.
        manage(bob, "Eve", "Ban from the call")
        assert "will not be able to join it again" in bob.page.inner_text("dialog[open]")
        bob.page.click("dialog[open] button:has-text('Ban')")
        eve.page.wait_for_selector(f"{OVER}[data-phase=removed]", timeout=30_000)
        assert "Bob banned you from this call" in eve.page.inner_text(REASON)
        problems += look.audit(eve.page, "banned")
        views(eve, "call-mod-banned")
        eve.page.click(f"{OVER} a:has-text('Back to')")
        eve.page.click("nav.sidebar a:has-text('hall')", timeout=30_000)
        eve.page.wait_for_function(
            "() => document.querySelector('[data-testid=call-join]:not(:disabled)') !== null",
            timeout=30_000,
        )
        join_call(eve)
        eve.page.wait_for_selector(f"{OVER}[data-phase=failed]", timeout=30_000)
        assert "You are banned from this call" in eve.page.inner_text(REASON)

        # Ban a CLI: Frank's call ends with its own error and exit status.
        frank_call = CliCall(frank, space, "hall", tmp_path / "frank.json", 120, "--video", "none")
        running.append(frank_call)
        frank_call.wait_for(r"joined call")
        manage(bob, "Frank", "Ban from the call")
        bob.page.click("dialog[open] button:has-text('Ban')")
        assert frank_call.proc.wait(timeout=30) == 5
        assert frank_call.proc.stderr is not None
        frank_error = frank_call.proc.stderr.read()
        assert re.search(r"error: Bob \(\w+\) banned you from this call", frank_error), frank_error
        again = frank.run("call", space, "hall", "--duration", "20", check=False)
        assert again.returncode == 5 and "banned" in again.stderr, again.stderr

        # Bob ends the call (confirmed): every page says so, Dave's CLI leaves cleanly.
        bob.page.click("button:has-text('End the call for everyone')")
        bob.page.click("dialog[open] button:has-text('End the call')")
        for web in (bob, carol):
            web.page.wait_for_selector(f"{OVER}[data-phase=ended]", timeout=30_000)
            assert "Bob ended the call for everyone" in web.page.inner_text(REASON)
        assert cli.proc.wait(timeout=60) == 0
        cli.wait_for(r"ended the call")
        problems += look.audit(carol.page, "call ended")
        views(carol, "call-mod-ended")

    stats = json.loads((tmp_path / "dave.json").read_text())
    assert stats["self"]["muted"] is True and stats["self"]["hand_raised"] is False, stats["self"]
    seen = {p["display_name"]: p for p in stats["participants"]}
    assert seen["Carol"]["muted"] is True, seen["Carol"]
    screen = seen["Bob"]["screen"]
    assert screen["frames_decoded"] > 10, screen
    # Every key change (Eve's and Frank's joins and leaves) reached the CLI before the page
    # sent under it (§15.5: senders switch once their key is delivered): nothing fails.
    assert screen["decrypt_failures"] == 0, screen
    assert_screen_recorded(screen, record)
    assert problems == []
    for web in (bob, carol, eve):
        assert [p for p in web.problems() if "favicon" not in p] == [], web.problems()


def test_a_screen_shared_in_a_mesh_and_a_stage(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    """A mesh: Bob's page shares his screen, the CLI's --stats and --record hold it. A stage:
    Bob (a host, in his page) lets Dave's CLI speak (his tone arrives at Bob's page), then makes
    him a listener again (it stops)."""
    alice = module_user("alice2")
    made = alice.json("space", "create", "Studio", "--server", web_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, "pair", "--kind", "conference", "--topology", "mesh")
    alice.run("room", "create", space, "forum", "--kind", "conference", "--stage")
    dave = module_user("dave2")
    dave.run("join", link, "--as", "Dave")
    bob = new_page()
    open_room(bob, link, "Bob", "pair")
    alice.run("role", space, "Bob", "moderator")
    record = tmp_path / "dave.webm"
    with cli_calls() as running:
        cli = CliCall(dave, space, "pair", tmp_path / "dave.json", 120, "--record", str(record))
        running.append(cli)
        cli.wait_for(r"joined call")
        join_call(bob)
        bob.page.wait_for_selector(f"{CALL_VIEW}[data-topology=mesh]", timeout=45_000)
        bob.page.wait_for_function(REMOTE_PLAYING, arg=1, timeout=60_000)
        cli.wait_for(r"first video from Bob")
        bob.page.click("[data-testid=call-screen]")
        cli.wait_for(r"Bob .* is sharing a screen", 45)
        cli.wait_for(r"status: .*Bob \(connected")  # a status line after the screen arrived
        bob.page.click("[data-testid=call-leave]")
        cli.wait_for(r"Bob \(\w+\) left")
        cli.stop()
        assert cli.proc.returncode == 0
        stats = json.loads((tmp_path / "dave.json").read_text())
        assert stats["topology"] == "mesh", stats["topology"]
        screen = next(p for p in stats["participants"] if p["display_name"] == "Bob")["screen"]
        assert screen["frames_decoded"] > 10 and screen["decrypt_failures"] == 0, screen
        assert_screen_recorded(screen, record)

        # The stage: Dave (CLI) listens until Bob lets him speak, then listens again.
        bob.page.click("nav.sidebar a:has-text('forum')")
        bob.page.wait_for_selector("[data-testid=call-join]", timeout=30_000)
        join_call(bob)
        bob.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        stage = CliCall(dave, space, "forum", tmp_path / "stage.json", 120)
        running.append(stage)
        stage.wait_for(r"joined call")
        manage(bob, "Dave", "Let Dave speak")
        stage.wait_for(r"you are a speaker now")
        bob.page.wait_for_selector(
            "[data-testid=call-person][data-name=Dave]:has-text('Speaker')", timeout=30_000
        )
        poll(lambda: level(bob, "Dave") > LOUD, 45, "Bob's page never heard Dave speak")
        manage(bob, "Dave", "Make Dave a listener")
        stage.wait_for(r"you are a listener now")
        bob.page.wait_for_selector(tile("Dave", ".tile-seat"), timeout=30_000)
        poll(lambda: level(bob, "Dave") < SILENT, 30, "Bob's page still hears Dave")
        bob.page.keyboard.press("Escape")
        bob.page.wait_for_selector("[data-testid=call-people-panel]", state="detached")
        views(bob, "call-mod-stage")
        stage.stop()
    assert [p for p in bob.problems() if "favicon" not in p] == [], bob.problems()
