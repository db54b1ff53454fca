"""The call screens of the web app in Chromium (UX.md screen 8), on a real server.

The pre-join screen with the real (fake) camera and microphone: the preview plays, the
pickers list the devices, "join with my microphone off" / "camera off" are there, one Join
button; it keeps the look promises (44 px, names, no jargon, no sideways scroll) on a phone
and a desktop, light and dark. Each device failure has its own plain message (the browser's
own refusals, raised in the page by an init script: permission denied, device busy, no
device). Screenshots go to test-artifacts/screens/ (call-prejoin-*, call-denied-*).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_web_look as look
from browser_support import JOIN_NAME, JOIN_SUBMIT, SPACE_VIEW, screenshot_path
from conftest import SALON, SalonServer

from client.call.media import colour_distance, name_colour

pytestmark = pytest.mark.timeout(240)
# Calls of at most three: a fourth is told the call is full.
SERVER_CONFIG = {"conference": {"max_participants": 3}}

PREJOIN = "[data-testid=call-prejoin]"
JOIN_CALL = "[data-testid=call-join]"

# The browser refusing the camera (permission denied) and finding the microphone busy.
REFUSE = """
navigator.mediaDevices.getUserMedia = async (constraints) => {
  if (constraints.video) throw new DOMException("Permission denied", "NotAllowedError");
  throw new DOMException("Could not start audio source", "NotReadableError");
};
"""
# A computer with no camera and no microphone at all.
NOTHING = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("Requested device not found", "NotFoundError");
};
navigator.mediaDevices.enumerateDevices = async () => [];
"""

VIEWS = [(1280, 800, "light"), (1280, 800, "dark"), (390, 844, "light"), (390, 844, "dark")]
PLAYING = """() => {
  const v = document.querySelector("[data-testid=call-prejoin] video");
  return v !== null && !v.paused && v.readyState >= 2 && v.videoWidth > 0;
}"""


def shoot(page: Any, name: str, width: int, height: int, theme: str) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=theme)
    page.wait_for_timeout(300)  # let the colour transitions of the theme switch finish
    label = f"{theme}{'-phone' if width < 500 else ''}"
    page.screenshot(path=str(screenshot_path(f"{name}-chromium-{label}")), full_page=True)


def test_prejoin_preview_pickers_and_device_failures(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Book club", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "Thursday call", "--kind", "conference")

    web = new_page()
    page = web.page
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME)
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    page.click("nav.sidebar a:has-text('Thursday call')", timeout=30_000)
    page.wait_for_selector(PREJOIN)

    # The preview plays the (fake) camera; the pickers list the browser's devices.
    page.wait_for_function(PLAYING, timeout=15_000)
    assert page.locator("select").nth(0).locator("option").count() >= 1
    assert page.locator("select").nth(1).locator("option").count() >= 1
    assert page.is_enabled(JOIN_CALL)
    # The microphone's level moves (the fake microphone beeps).
    page.wait_for_function(
        "() => document.querySelector('[data-testid=mic-meter]')?.value > 0.02", timeout=15_000
    )
    assert page.locator("[data-testid=join-muted]").count() == 1
    assert page.locator("[data-testid=join-camera-off]").count() == 1
    assert page.locator("[role=alert]").count() == 0
    assert "End-to-end encrypted" in page.inner_text(PREJOIN)
    # Camera off: the preview gives way to the avatar and says so.
    page.check("[data-testid=join-camera-off]")
    page.wait_for_selector("text=Your camera will be off")
    page.uncheck("[data-testid=join-camera-off]")
    page.wait_for_function(PLAYING, timeout=15_000)

    problems = look.audit(page, "call pre-join")
    for width, height, theme in VIEWS:
        shoot(page, "call-prejoin", width, height, theme)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="light")

    # Camera refused, microphone busy: each says so, with what to do; Join still works.
    page.add_init_script(REFUSE)
    page.reload()
    page.wait_for_selector("[data-testid=camera-problem]", timeout=30_000)
    camera = page.inner_text("[data-testid=camera-problem]")
    microphone = page.inner_text("[data-testid=microphone-problem]")
    assert "Permission to use your camera was denied" in camera and "try again" in camera
    assert "microphone is busy" in microphone
    assert page.is_checked("[data-testid=join-muted]") and page.is_checked(
        "[data-testid=join-camera-off]"
    )
    assert page.is_enabled(JOIN_CALL)
    assert page.locator("button:has-text('Try again')").count() == 1
    problems += look.audit(page, "call pre-join, devices refused")
    shoot(page, "call-denied", 1280, 800, "light")
    shoot(page, "call-denied", 390, 844, "dark")

    # No device at all.
    web2 = new_page(theme="dark", phone=True)
    page2 = web2.page
    page2.add_init_script(NOTHING)
    page2.goto(made["link"])
    page2.wait_for_selector(JOIN_NAME)
    page2.fill(JOIN_NAME, "Carol")
    page2.click(JOIN_SUBMIT)
    page2.wait_for_selector(SPACE_VIEW, timeout=30_000)
    page2.click("nav.sidebar a:has-text('Thursday call')", timeout=30_000)
    page2.wait_for_selector("[data-testid=camera-problem]", timeout=30_000)
    assert "No camera was found" in page2.inner_text("[data-testid=camera-problem]")
    assert "No microphone was found" in page2.inner_text("[data-testid=microphone-problem]")
    assert page2.locator("select >> nth=0").is_disabled()
    web2.screenshot("call-nodevice")

    assert problems == []
    assert web.problems() == [] and web2.problems() == []


# -- in a call, with real CLI participants ------------------------------------------------------

CALL_VIEW = "[data-testid=call-view]"
CALL_ENV = {"SALON_ICE_HOSTS": "127.0.0.1", "PYTHONFAULTHANDLER": "1"}
# Every remote tile's video plays (a decoded picture, time moving on).
REMOTE_PLAYING = """(n) => {
  const videos = [...document.querySelectorAll("[data-testid=call-tile]:not([data-me]) video")];
  return videos.length >= n && videos.every(
    (v) => !v.paused && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0);
}"""


# The per-channel median RGB of what a tile's <video> shows
# (like client.call.media.dominant_colour).
TILE_COLOUR = """(name) => {
  const v = document.querySelector(`[data-testid=call-tile][data-name="${name}"] video`);
  if (v === null || v.videoWidth === 0) return null;
  const c = document.createElement("canvas");
  c.width = 64; c.height = 48;
  const g = c.getContext("2d");
  g.drawImage(v, 0, 0, 64, 48);
  const d = g.getImageData(0, 0, 64, 48).data;
  const ch = [[], [], []];
  for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) ch[k].push(d[i + k]);
  return ch.map((a) => a.sort((x, y) => x - y)[a.length >> 1]);
}"""
# The loudest level (RMS, 0..1) heard over ~1.5 s on every remote participant's <audio>.
AUDIO_LEVELS = """async () => {
  const ctx = new AudioContext();
  await ctx.resume();
  const meters = [...document.querySelectorAll("[data-testid=call-audio]")].map((el) => {
    const an = ctx.createAnalyser();
    ctx.createMediaStreamSource(el.srcObject).connect(an);
    return { an, max: 0, buf: new Float32Array(an.fftSize) };
  });
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 50));
    for (const m of meters) {
      m.an.getFloatTimeDomainData(m.buf);
      let sum = 0;
      for (const x of m.buf) sum += x * x;
      m.max = Math.max(m.max, Math.sqrt(sum / m.buf.length));
    }
  }
  await ctx.close();
  return meters.map((m) => m.max);
}"""
CODE_SHOWN = (
    "(code) => document.querySelector('[data-testid=call-code-line]')?.textContent === code"
)


class CliCall:
    """``salon call SPACE ROOM`` in the background; its output lines read as they come."""

    def __init__(
        self, user: Any, space: str, room: str, stats: Path, duration: float, *extra: str
    ) -> None:
        args = [
            str(SALON),
            "call",
            space,
            room,
            "--duration",
            str(duration),
            "--stats",
            str(stats),
            *extra,
        ]
        self.stats = stats
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=user.env(CALL_ENV),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 45.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := regex.search(line):
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        stderr = (
            self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        )
        raise AssertionError(
            f"no {pattern!r} in the CLI's call:\n" + "\n".join(self.lines) + stderr[-3000:]
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def cli_calls() -> Iterator[list[CliCall]]:
    running: list[CliCall] = []
    try:
        yield running
    finally:
        for call in running:
            if call.proc.poll() is None:
                call.proc.kill()
                call.proc.wait()


def open_room(web: Any, link: str, name: str, room: str) -> None:
    page = web.page
    page.goto(link)
    page.wait_for_selector(JOIN_NAME)
    page.fill(JOIN_NAME, name)
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    goto_room(web, room)


def goto_room(web: Any, room: str) -> None:
    web.page.click(f"nav.sidebar a:has-text('{room}')", timeout=30_000)
    web.page.wait_for_selector(PREJOIN, timeout=30_000)
    web.page.wait_for_function(PLAYING, timeout=15_000)


def join_call(web: Any) -> None:
    web.page.click(JOIN_CALL)


def page_code(page: Any) -> str:
    page.click("[data-testid=call-lock]")
    page.wait_for_selector("dialog[open] [data-testid=call-code]")
    code = str(page.inner_text("[data-testid=call-code]")).strip()
    return code


def test_two_pages_and_a_cli_in_a_mesh_then_a_host_admits(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice2")
    made = alice.json("space", "create", "Town hall", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "hall", "--kind", "conference")
    alice.run("room", "create", space, "door", "--kind", "conference", "--lobby")
    dave = module_user("dave")
    dave.run("join", made["link"], "--as", "Dave")

    bob = new_page()
    carol = new_page(theme="dark")
    open_room(bob, made["link"], "Bob", "hall")
    open_room(carol, made["link"], "Carol", "door")
    alice.run("role", space, "Bob", "moderator")

    with cli_calls() as running:
        # Mesh: Bob and Carol in pages, Alice on the CLI; each page decodes the other two.
        join_call(bob)
        bob.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        carol.page.click("nav.sidebar a:has-text('hall')")
        carol.page.wait_for_selector(PREJOIN)
        carol.page.wait_for_function(PLAYING, timeout=15_000)
        join_call(carol)
        cli = CliCall(alice, space, "hall", tmp_path / "alice.json", 60)
        running.append(cli)
        code = cli.wait_for(r"verification code ([\d ]+) \(3 in the call").group(1)
        for web in (bob, carol):
            web.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=45_000)
            assert web.page.locator("[data-testid=call-tile]").count() == 3
            assert "3 people" in web.page.inner_text("[data-testid=call-count]")
        # What the pages decode is Alice's own picture (her colour) and sound (not silence).
        for web in (bob, carol):
            rgb = web.page.evaluate(TILE_COLOUR, "Alice")
            b, g, r = name_colour("Alice")
            assert rgb is not None and colour_distance(tuple(rgb), (r, g, b)) < 60, rgb
            levels = web.page.evaluate(AUDIO_LEVELS)
            assert len(levels) == 2 and min(levels) > 0.005, levels
        for web in (carol, bob):
            web.page.wait_for_function(
                CODE_SHOWN,
                arg=code,
                timeout=30_000,
            )
            assert page_code(web.page) == code
            if web is carol:  # Esc closes the dialog
                web.page.keyboard.press("Escape")
                web.page.wait_for_selector("dialog[open]", state="detached")
        # Carol raises her hand: Bob's page shows it on her tile (not by colour alone).
        carol.page.click("[data-testid=call-hand]")
        bob.page.wait_for_selector(
            "[data-testid=call-tile][data-name=Carol] .tile-hand", timeout=30_000
        )
        carol_tile = bob.page.get_attribute(
            "[data-testid=call-tile][data-name=Carol]", "aria-label"
        )
        assert "hand raised" in str(carol_tile)
        carol.page.click("[data-testid=call-hand]")
        bob.page.wait_for_selector(
            "[data-testid=call-tile][data-name=Carol] .tile-hand", state="detached", timeout=30_000
        )
        # Carol's own controls: microphone off and on, camera off (her tile shows her initial)
        # and on again, the device dialog (Esc closes it).
        mic = "[data-testid=call-mic]"
        carol.page.click(mic)
        carol.page.wait_for_selector(f"{mic}[aria-label='Turn on your microphone']")
        carol.page.click(mic)
        carol.page.wait_for_selector(f"{mic}[aria-label='Turn off your microphone']")
        carol.page.click("[data-testid=call-camera]")
        carol.page.wait_for_selector("[data-testid=call-tile][data-me] .tile-off", timeout=15_000)
        carol.page.click("[data-testid=call-camera]")
        carol.page.wait_for_selector("[data-testid=call-tile][data-me] video", timeout=15_000)
        carol.page.click("[data-testid=call-devices]")
        carol.page.wait_for_selector("dialog[open] select")
        problems_devices = look.audit(carol.page, "call devices dialog")
        carol.page.keyboard.press("Escape")
        carol.page.wait_for_selector("dialog[open]", state="detached")
        bob.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=45_000)
        bob.screenshot("call-verify")
        bob.page.keyboard.press("Escape")
        bob.page.wait_for_selector("dialog[open]", state="detached")
        problems = problems_devices + look.audit(bob.page, "call grid")
        for width, height, theme in VIEWS:
            shoot(bob.page, "call-grid", width, height, theme)
        bob.page.set_viewport_size({"width": 1280, "height": 800})
        bob.page.emulate_media(color_scheme="light")
        carol.page.click("[data-testid=call-leave]")
        carol.page.wait_for_selector(PREJOIN, timeout=30_000)
        bob.page.click("[data-testid=call-leave]")
        bob.page.wait_for_selector(PREJOIN, timeout=30_000)
        cli.stop()

        # A lobby room: Bob (a host) is in; Dave (CLI) knocks, Bob admits him; Carol's page waits.
        goto_room(bob, "door")
        join_call(bob)
        bob.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        knocker = CliCall(dave, space, "door", tmp_path / "dave.json", 60)
        running.append(knocker)
        knocker.wait_for(r"lobby")
        bob.page.click("[data-testid=call-people]")
        bob.page.wait_for_selector("[data-testid=call-knocker][data-name=Dave]", timeout=30_000)
        problems += look.audit(bob.page, "host panel")
        shoot(bob.page, "call-host-panel", 1280, 800, "light")
        shoot(bob.page, "call-host-panel", 390, 844, "dark")
        bob.page.set_viewport_size({"width": 1280, "height": 800})
        bob.page.click("button[aria-label='Let Dave in']")
        knocker.wait_for(r"verification code ([\d ]+) \(2 in the call")
        bob.page.wait_for_function(REMOTE_PLAYING, arg=1, timeout=45_000)
        # Per-person controls: Bob turns Dave's microphone off (a signed mute the CLI obeys).
        bob.page.click("button[aria-label='Manage Dave']")
        bob.page.click('dialog[open] button:has-text("Turn off Dave\'s microphone")')
        knocker.wait_for(r"Bob \(\w+\) muted you")
        bob.page.keyboard.press("Escape")  # Esc closes the people panel
        bob.page.wait_for_selector("[data-testid=call-people-panel]", state="detached")
        bob.page.click("[data-testid=call-people]")
        goto_room(carol, "door")
        join_call(carol)
        carol.page.wait_for_selector("[data-testid=call-lobby]", timeout=30_000)
        assert "Waiting for a host to let you in" in carol.page.inner_text(
            "[data-testid=call-lobby]"
        )
        problems += look.audit(carol.page, "lobby")
        shoot(carol.page, "call-lobby", 1280, 800, "dark")
        shoot(carol.page, "call-lobby", 390, 844, "light")
        bob.page.wait_for_selector("[data-testid=call-knocker][data-name=Carol]", timeout=30_000)
        bob.page.click('button[aria-label="Don\'t let Carol in"]')
        carol.page.wait_for_selector("[data-testid=call-over]", timeout=30_000)
        assert "Bob did not let you in" in carol.page.inner_text("[data-testid=call-reason]")
        shoot(carol.page, "call-denied-lobby", 1280, 800, "light")

        # Bob locks the call: Carol's next try says so.
        bob.page.click("[data-testid=call-lock-toggle]")
        bob.page.wait_for_selector("[data-testid=call-count]:has-text('locked')", timeout=30_000)
        carol.page.click("nav.sidebar a:has-text('hall')")
        goto_room(carol, "door")
        join_call(carol)
        carol.page.wait_for_selector("[data-testid=call-over]", timeout=30_000)
        assert "locked" in carol.page.inner_text("[data-testid=call-reason]")

        # Bob ends the call for everyone (confirmed): Dave's CLI is ended, Bob's page says so.
        bob.page.click("button:has-text('End the call for everyone')")
        bob.page.click("dialog[open] button:has-text('End the call')")
        bob.page.wait_for_selector("[data-testid=call-over][data-phase=ended]", timeout=30_000)
        knocker.proc.wait(timeout=30)
        shoot(bob.page, "call-ended", 390, 844, "light")

    assert problems == []
    assert bob.problems() == [] and carol.problems() == []


SCREEN_PLAYING = """() => {
  const v = document.querySelector("[data-testid=call-tile-screen] video");
  return v !== null && !v.paused && v.readyState >= 2 && v.videoWidth > 0;
}"""


def test_server_call_screen_share_and_removal(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice3")
    made = alice.json("space", "create", "Library", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "stage", "--kind", "conference", "--topology", "sfu")

    bob = new_page()
    carol = new_page(theme="dark", phone=True)
    open_room(bob, made["link"], "Bob", "stage")
    alice.run("role", space, "Bob", "moderator")
    open_room(carol, made["link"], "Carol", "stage")

    with cli_calls() as running:
        cli = CliCall(alice, space, "stage", tmp_path / "alice.json", 90, "--screen", "test")
        running.append(cli)
        cli.wait_for(r"joined call")
        join_call(bob)
        join_call(carol)
        code = cli.wait_for(r"verification code ([\d ]+) \(3 in the call").group(1)
        for web in (bob, carol):
            web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=30_000)
            assert "moved to the server" in web.page.inner_text("[data-testid=call-topology]")
            web.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=45_000)
            web.page.wait_for_function(SCREEN_PLAYING, timeout=45_000)
            web.page.wait_for_function(CODE_SHOWN, arg=code, timeout=30_000)
        # Whoever the server names as speaking (it only says so when that changes, so not
        # asserted to happen here) is named in words on the tile, not by a colour alone.
        assert bob.page.evaluate(
            "[...document.querySelectorAll('.tile-speaking')]"
            ".every((t) => t.querySelector('.tile-speaking-tag') !== null)"
        )
        shoot(bob.page, "call-grid-server", 1280, 800, "light")
        shoot(carol.page, "call-grid-server", 390, 844, "dark")

        # Bob shares his screen: the CLI sees it.
        bob.page.click("[data-testid=call-screen]")
        cli.wait_for(r"Bob .* is sharing a screen", 45)
        bob.page.wait_for_selector("[data-testid=call-screen][aria-pressed=true]")

        # Bob removes Carol (confirmed): her page says so.
        bob.page.click("[data-testid=call-people]")
        bob.page.click("button[aria-label='Manage Carol']")
        bob.page.click("dialog[open] button:has-text('Remove from the call')")
        confirm = bob.page.inner_text("dialog[open]")
        assert "Carol will be removed from the call" in confirm
        bob.page.click("dialog[open] button:has-text('Remove')")
        carol.page.wait_for_selector("[data-testid=call-over][data-phase=removed]", timeout=30_000)
        web_removed = carol.page.inner_text("[data-testid=call-reason]")
        assert "Bob" in web_removed, web_removed
        shoot(carol.page, "call-removed", 390, 844, "dark")
        bob.page.click("[data-testid=call-leave]")
        bob.page.wait_for_selector(PREJOIN, timeout=30_000)
        cli.stop()
        stats = json.loads((tmp_path / "alice.json").read_text())
    bob_seen = [p for p in stats["participants"] if p["display_name"] == "Bob"]
    assert bob_seen and bob_seen[0]["screen"]["frames_decoded"] > 0, stats
    assert bob.problems() == [] and carol.problems() == []


def test_a_stage_hosts_choose_who_speaks(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    """A stage: Carol's page listens (her microphone can't be turned on, she is told why) until
    Bob's page lets her speak; Bob lets Dave (CLI) speak too, and Dave's CLI says so. A fourth
    (Eve's page) finds the call full."""
    alice = module_user("alice5")
    made = alice.json("space", "create", "Forum", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "forum", "--kind", "conference", "--stage")
    dave = module_user("dave5")
    dave.run("join", made["link"], "--as", "Dave")
    bob = new_page()
    carol = new_page(phone=True)
    open_room(bob, made["link"], "Bob", "forum")
    alice.run("role", space, "Bob", "moderator")
    open_room(carol, made["link"], "Carol", "forum")
    with cli_calls() as running:
        join_call(bob)
        bob.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        join_call(carol)
        carol.page.wait_for_selector(CALL_VIEW, timeout=30_000)
        cli = CliCall(dave, space, "forum", tmp_path / "dave.json", 60)
        running.append(cli)
        cli.wait_for(r"joined call")
        mic = "[data-testid=call-mic]"
        carol.page.wait_for_selector(f"{mic}[aria-label='Only speakers can talk']:disabled")
        assert "Raise your hand to ask to speak" in carol.page.inner_text(CALL_VIEW)
        shoot(carol.page, "call-stage-listener", 390, 844, "light")
        bob.page.click("[data-testid=call-people]")
        for name in ("Carol", "Dave"):
            bob.page.click(f"button[aria-label='Manage {name}']", timeout=30_000)
            bob.page.click(f"dialog[open] button:has-text('Let {name} speak')")
            bob.page.wait_for_selector("dialog[open]", state="detached")
        cli.wait_for(r"you are a speaker now")
        carol.page.wait_for_selector(f"{mic}:not(:disabled)", timeout=30_000)
        bob.page.wait_for_selector(
            "[data-testid=call-person][data-name=Dave]:has-text('Speaker')", timeout=30_000
        )
        # A fourth person: the call is full, and her page says so.
        eve = new_page(theme="dark")
        open_room(eve, made["link"], "Eve", "forum")
        join_call(eve)
        eve.page.wait_for_selector("[data-testid=call-over]", timeout=30_000)
        assert "full" in eve.page.inner_text("[data-testid=call-reason]")
        shoot(eve.page, "call-full", 1280, 800, "dark")
        assert eve.problems() == []
        cli.stop()
    assert bob.problems() == [] and carol.problems() == []


def test_firefox_prejoin_and_a_call_with_the_cli(
    web_server: SalonServer, module_user: Any, firefox: Any, tmp_path: Path
) -> None:
    """Firefox ESR: the pre-join preview plays its fake camera, and the page joins a server-routed
    call with a CLI participant: the call screen shows her and the CLI's verification code.
    (Media between Firefox and the CLI is checked in tests/test_web_call_firefox.py: Firefox
    gathers no loopback candidates, and this module's SFU and CLI are on 127.0.0.1.)"""
    alice = module_user("alice6")
    made = alice.json("space", "create", "Orchard", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "shed", "--kind", "conference", "--topology", "sfu")
    ff = firefox()
    ff.goto(made["link"])
    ff.wait(JOIN_NAME)
    ff.fill(JOIN_NAME, "Bob")
    ff.click(JOIN_SUBMIT)
    ff.wait(SPACE_VIEW, timeout=30)
    ff.click("nav.sidebar a::-p-text(shed)")
    ff.wait(PREJOIN, timeout=30)
    deadline = time.monotonic() + 20
    while not ff.evaluate(f"({PLAYING})()"):
        assert time.monotonic() < deadline, "the preview does not play in Firefox"
        time.sleep(0.2)
    ff.screenshot("call-prejoin")
    with cli_calls() as running:
        cli = CliCall(alice, space, "shed", tmp_path / "alice.json", 60)
        running.append(cli)
        cli.wait_for(r"joined call")
        ff.click(JOIN_CALL)
        code = cli.wait_for(r"verification code ([\d ]+) \(2 in the call").group(1)
        ff.wait("[data-testid=call-tile][data-name=Alice]", timeout=30)
        ff.wait(f"[data-testid=call-code-line]::-p-text({code})", timeout=30)
        ff.screenshot("call-grid")
        cli.stop()
    assert ff.problems() == []


def test_connection_lost_in_a_call_then_back(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    """The server goes away mid-call: the page says it is reconnecting (calmly, in the call),
    and is in the call again once the server is back. Last in the module: it restarts the
    module's server."""
    alice = module_user("alice4")
    made = alice.json("space", "create", "Garden", "--server", web_server.url, "--as", "Alice")
    alice.run("room", "create", made["space_id"], "porch", "--kind", "conference")
    bob = new_page(phone=True)
    open_room(bob, made["link"], "Bob", "porch")
    join_call(bob)
    page = bob.page
    page.wait_for_selector(f"{CALL_VIEW} [data-testid=call-tile]", timeout=30_000)
    web_server.stop()
    try:
        banner = page.wait_for_selector("[data-testid=call-banner]", timeout=30_000)
        assert banner is not None and "Reconnecting" in banner.inner_text()
        assert page.locator(CALL_VIEW).count() == 1  # still the call, not an error screen
        shoot(page, "call-reconnecting", 390, 844, "light")
    finally:
        web_server.start(port=web_server.port)
    page.wait_for_selector("[data-testid=call-banner]", state="detached", timeout=45_000)
    page.wait_for_selector(f"{CALL_VIEW} [data-testid=call-tile]", timeout=45_000)
    assert page.locator("[data-testid=call-tile]").count() == 1
    # The browser itself logs the refused connections while the server is away; nothing else.
    assert [p for p in bob.problems() if "ERR_CONNECTION_REFUSED" not in p] == []
