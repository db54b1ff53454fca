"""Firefox ESR in real calls with the CLI (``salon call``, aiortc) and Chromium, without the UI.

The page is web/test/browser/call_cli_page.ts (the web CallClient over the real topologies,
served by a real ``salon serve``), in Debian's firefox-esr (tests/browser_support.py
``firefox``) and in Chromium (its fake camera a Y4M of a known colour).

- SFU: Firefox, Chromium and the CLI in one room of the server's SFU: Firefox shows the CLI's
  and Chromium's cameras (colours checked in Firefox: it decodes them) and audio tracks;
  Chromium shows Firefox's and the CLI's; the CLI decodes Firefox's and Chromium's video and
  audio; zero decrypt failures in both pages' SFrame workers and in the CLI; the verification
  code is the same in the three. (Firefox's fake camera is its own picture, not the Y4M, and
  headless it plays no audio: what others get from it is checked by frame counts.)
- Mesh: Firefox and the CLI, each making the offer in turn; media both ways (the CLI's colour
  in Firefox, Firefox's video and audio decoded by the CLI), the same code.

ICE: Firefox ESR gathers no loopback candidates (media.peerconnection.ice.loopback does not
change that in 153 ESR), so here the CLI and the server's SFU offer every interface instead of
127.0.0.1 (``SALON_ICE_HOSTS=""``, ``SalonServer.ice_hosts``). Firefox keeps its defaults: its
host candidates are mDNS ``.local`` names (no camera grant: the prompt is off), which aioice
resolves; the ``c=`` line naming one is made plain by client/call/mesh.py.
"""

from __future__ import annotations

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
from browser_support import (
    CHROMIUM,
    JOIN_NAME,
    JOIN_SUBMIT,
    SPACE_VIEW,
    FirefoxError,
    FirefoxPage,
    WebPage,
)
from call_helpers import CALL_ENV
from conftest import SALON, SalonServer
from media_page_support import WEB, chromium_args, write_y4m
from test_web_call_sfu6 import AUDIO_BY_NAME, poll
from test_web_call_ui import PLAYING, PREJOIN, REMOTE_PLAYING, TILE_COLOUR, join_call, open_room

from client.call.media import colour_distance, name_colour

pytestmark = pytest.mark.timeout(180)

YUV = (138, 68, 184)  # about RGB (230, 120, 20): Chromium's fake camera
CHROMIUM_RGB = (230, 120, 20)
EVERY_INTERFACE = {**CALL_ENV, "SALON_ICE_HOSTS": ""}


@pytest.fixture(scope="module")
def ff_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalonServer]:
    out = tmp_path_factory.mktemp("call-ff-page")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    subprocess.run(
        ["node", "test/browser/build_call_cli.mjs", str(out)], cwd=WEB, check=True, timeout=90
    )
    # The mesh test joins again (a new key) until the pair's offerer is the one it wants: more
    # joins from this one address than the default per-minute budget allows.
    config = {
        "server": {"web_dir": str(out)},
        "limits": {"join_attempts_per_minute_per_address": 1000},
    }
    srv = SalonServer(tmp_path_factory.mktemp("call-ff-server"), config)
    srv.ice_hosts = ""  # the SFU on every interface: Firefox pairs with no loopback candidate
    srv.start()
    yield srv
    srv.stop()


class Cli:
    """``salon call`` in the background (every interface), its lines collected as they come."""

    def __init__(self, user: Any, space: str, room: str, stats: Path) -> None:
        args = [str(SALON), "call", space, room, "--duration", "90", "--stats", str(stats)]
        self.stats = stats
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=user.env(EVERY_INTERFACE),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 40) -> re.Match[str]:
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if found := regex.search(line):
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(self.lines[-30:]))

    def decoding(self, name: str, frames: int = 20, timeout: float = 40) -> None:
        """Until the CLI's status line counts ``frames`` video and audio frames from ``name``."""
        pattern = rf"{name} \([^)]*?(\d+) video / (\d+) audio frames"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in reversed(list(self.lines)):
                found = re.search(pattern, line)
                if found and min(int(found.group(1)), int(found.group(2))) >= frames:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{name} not decoded:\n" + "\n".join(self.lines[-10:]))

    def finish(self) -> dict[str, Any]:
        """SIGINT (it leaves the call), then its --stats."""
        self.proc.send_signal(signal.SIGINT)
        _, stderr = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
        result: dict[str, Any] = json.loads(self.stats.read_text())
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def peer(stats: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in stats["participants"] if p["display_name"] == name]
    assert found, stats["participants"]
    return dict(found[0])


def room(user: Any, server: SalonServer, name: str, topology: str) -> tuple[str, str]:
    made = user.json("space", "create", "Firefox", "--server", server.url, "--as", "Alice")
    space = made["space_id"]
    user.run("room", "create", space, name, "--kind", "conference", "--topology", topology)
    return space, made["link"]


def open_firefox(firefox: Any, server: SalonServer, link: str, name: str) -> FirefoxPage:
    ff: FirefoxPage = firefox()
    ff.goto(f"{server.url}/")
    ff.wait("html[data-call-ready]")
    ff.evaluate(f"window.callCli.join({json.dumps(link)}, {json.dumps(name)})", timeout=30)
    return ff


def slot_counters(left: dict[str, Any]) -> dict[str, Any]:
    tracks = left["counters"]["tracks"]
    return {k: v for k, v in tracks.items() if k.startswith("slot-")}


def test_firefox_chromium_and_the_cli_on_the_sfu(
    firefox: Any, chromium: Any, ff_server: SalonServer, module_user: Any, tmp_path: Path
) -> None:
    alice = module_user("alice-ff-sfu")
    space, link = room(alice, ff_server, "stage", "sfu")
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    browser = chromium.browser_type.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(y4m)
    )
    cli = None
    try:
        carol = WebPage(browser.new_page(), "call-ff")
        page = carol.page
        page.goto(f"{ff_server.url}/")
        page.wait_for_selector("html[data-call-ready]", state="attached")
        page.evaluate("([l, n]) => window.callCli.join(l, n)", [link, "Carol"])
        bob = open_firefox(firefox, ff_server, link, "Bob")
        cli = Cli(alice, space, "stage", tmp_path / "alice.json")
        cli.wait_for(r"joined call")
        assert page.evaluate("r => window.callCli.startCall(r)", "stage")["phase"] == "in-call"
        started = bob.evaluate("window.callCli.startCall('stage')", timeout=30)
        assert started["phase"] == "in-call" and started["topology"] == "sfu", started

        # Firefox decodes the CLI's and Chromium's cameras (their colours) and gets their audio.
        try:
            for name in ("Alice", "Carol"):
                for kind in ("camera", "audio"):
                    bob.evaluate(f"window.callCli.waitTrack('{name}', '{kind}')", timeout=40)
        except FirefoxError as exc:  # what the CLI says (e.g. the SFU refusing its offer)
            raise AssertionError(f"{exc}\nthe CLI:\n" + "\n".join(cli.lines[-8:])) from exc
        alice_cam = bob.evaluate("window.callCli.seen('Alice', 'camera')", timeout=30)
        got = tuple(alice_cam["colour"][::-1])
        assert colour_distance(got, name_colour("Alice")) < 60, alice_cam
        carol_cam = bob.evaluate("window.callCli.seen('Carol', 'camera')", timeout=30)
        assert colour_distance(tuple(carol_cam["colour"]), CHROMIUM_RGB) < 60, carol_cam

        # Chromium shows Firefox's and the CLI's; the CLI decodes Firefox's and Chromium's.
        for name in ("Alice", "Bob"):
            for kind in ("camera", "audio"):
                page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", [name, kind])
        cli.decoding("Bob")
        cli.decoding("Carol")

        codes = {
            "firefox": bob.evaluate("window.callCli.view()")["code"],
            "chromium": page.evaluate("() => window.callCli.view()")["code"],
            "cli": cli.wait_for(r"verification code ([\d ]+) \(3 in the call").group(1),
        }
        assert codes["firefox"] is not None and len(set(codes.values())) == 1, codes
        ff_left = bob.evaluate("window.callCli.leave()", timeout=30)
        cr_left = page.evaluate("() => window.callCli.leave()")
        stats = cli.finish()
        for who, left in (("firefox", ff_left), ("chromium", cr_left)):
            slots = slot_counters(left)
            assert sum(v["decrypted"] for v in slots.values()) > 50, (who, slots)
            assert sum(v["failures"] for v in slots.values()) == 0, (who, slots)
        for name in ("Bob", "Carol"):
            seen = peer(stats, name)
            assert seen["video_frames_decoded"] > 10 and seen["audio_frames_decoded"] > 20, seen
            assert seen["decrypt_failures"] == 0, seen
        assert colour_distance(tuple(peer(stats, "Carol")["dominant_colour"]), YUV_BGR) < 60
        assert [e for e in bob.problems() if "favicon" not in e] == []
        assert [e for e in carol.problems() if "favicon" not in e] == []
    finally:
        if cli is not None:
            cli.kill()
        browser.close()


YUV_BGR = CHROMIUM_RGB[::-1]


@pytest.mark.parametrize("offerer", ["firefox", "cli"])
def test_firefox_and_the_cli_in_a_mesh(
    offerer: str, firefox: Any, ff_server: SalonServer, module_user: Any, tmp_path: Path
) -> None:
    """Both ways: Firefox makes the offer (its member key the lower), then the CLI does."""
    # A new member (key) until the pair's offerer is the one wanted (the lower key offers). A
    # founder whose key sits near either end makes one order rare for any joiner, so after a
    # few tries the founder is made anew too.
    seen: list[Any] = []
    for founder in range(6):
        alice = module_user(f"alice-ff-mesh-{offerer}-{founder}")
        space, link = room(alice, ff_server, "porch", "mesh")
        if founder == 0:
            bob = open_firefox(firefox, ff_server, link, "Bob")
        else:
            bob.evaluate(f"window.callCli.join({json.dumps(link)}, 'Bob')", timeout=30)
        for _ in range(6):
            seen.append(bob.evaluate("window.callCli.offersToFounder()"))
            if seen[-1] == (offerer == "firefox"):
                break
            bob.evaluate(f"window.callCli.join({json.dumps(link)}, 'Bob')", timeout=30)
        else:
            continue
        break
    else:
        raise AssertionError(f"no member key of the wanted order: {seen}")
    cli = Cli(alice, space, "porch", tmp_path / "alice.json")
    try:
        cli.wait_for(r"joined call")
        started = bob.evaluate("window.callCli.startCall('porch')", timeout=30)
        assert started["phase"] == "in-call" and started["topology"] == "mesh", started
        for kind in ("camera", "audio"):
            bob.evaluate(f"window.callCli.waitTrack('Alice', '{kind}')", timeout=40)
        camera = bob.evaluate("window.callCli.seen('Alice', 'camera')", timeout=30)
        assert colour_distance(tuple(camera["colour"][::-1]), name_colour("Alice")) < 60, camera
        cli.decoding("Bob")
        code = bob.evaluate("window.callCli.view()")["code"]
        assert code is not None
        cli.wait_for(rf"verification code {code} \(2 in the call")
        left = bob.evaluate("window.callCli.leave()", timeout=30)
        assert left["counters"] is None, "no SFrame worker in a mesh call"
        seen = peer(cli.finish(), "Bob")
        assert seen["video_frames_decoded"] > 10 and seen["audio_frames_decoded"] > 20, seen
        assert [e for e in bob.problems() if "favicon" not in e] == []
    finally:
        cli.kill()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory, web_dist: Path) -> Iterator[SalonServer]:
    """The web app itself (not the test page), its SFU on every interface (as ``ff_server``)."""
    srv = SalonServer(
        tmp_path_factory.mktemp("call-ff-app"), {"server": {"web_dir": str(web_dist)}}
    )
    srv.ice_hosts = ""
    srv.start()
    yield srv
    srv.stop()


def ff_until(ff: FirefoxPage, expression: str, what: str, timeout: float = 45) -> None:
    end = time.monotonic() + timeout
    while not ff.evaluate(expression):
        assert time.monotonic() < end, what
        time.sleep(0.3)


def test_firefox_in_the_call_screen_with_chromium_and_the_cli(
    firefox: Any, new_page: Any, app_server: SalonServer, module_user: Any, tmp_path: Path
) -> None:
    """The web app's own call screen in Firefox ESR, on the SFU with a Chromium page and a CLI:
    its remote tiles play (the CLI's colour decoded), its microphone turns off and on again
    (Chromium's page shows it), the CLI decodes it, the codes match; screenshots."""
    alice = module_user("alice-ff-app")
    space, link = room(alice, app_server, "porch", "sfu")
    carol = new_page()
    open_room(carol, link, "Carol", "porch")
    cli = Cli(alice, space, "porch", tmp_path / "alice.json")
    try:
        cli.wait_for(r"joined call")
        join_call(carol)
        ff = firefox()
        ff.goto(link)
        ff.wait(JOIN_NAME)
        ff.fill(JOIN_NAME, "Bob")
        ff.click(JOIN_SUBMIT)
        ff.wait(SPACE_VIEW, timeout=30)
        ff.click("nav.sidebar a::-p-text(porch)")
        ff.wait(PREJOIN, timeout=30)
        ff_until(ff, f"({PLAYING})()", "the preview does not play in Firefox", 20)
        ff.click("[data-testid=call-join]")
        ff.wait("[data-testid=call-view][data-topology=sfu]", timeout=30)
        ff_until(ff, f"({REMOTE_PLAYING})(2)", "Firefox's remote tiles do not play", 60)
        rgb = ff.evaluate(f"({TILE_COLOUR})('Alice')")
        b, g, r = name_colour("Alice")
        assert rgb is not None and colour_distance(tuple(rgb), (r, g, b)) < 60, rgb
        # Chromium's fake camera: a green test pattern.
        red, green, blue = ff.evaluate(f"({TILE_COLOUR})('Carol')")
        assert green > red + 60 and green > blue + 60, (red, green, blue)
        carol.page.wait_for_function(REMOTE_PLAYING, arg=2, timeout=60_000)
        cli.decoding("Bob")
        code = cli.wait_for(r"verification code ([\d ]+) \(3 in the call").group(1)
        ff.wait(f"[data-testid=call-code-line]::-p-text({code})", timeout=30)

        # Firefox turns its microphone off (a local choice: no signed action, so no icon on the
        # others' pages): its fake microphone's tone stops arriving at Chromium's page; on again,
        # it comes back.
        mic = "[data-testid=call-mic]"

        def bob_level() -> float:
            return float(carol.page.evaluate(AUDIO_BY_NAME).get("Bob", 0.0))

        poll(lambda: bob_level() > 0.005, 45, "Chromium's page never heard Firefox")
        ff.click(mic)
        ff.wait(f"{mic}[aria-label='Turn on your microphone']")
        ff.wait("[data-testid=call-tile][data-me] .tile-muted")
        poll(lambda: bob_level() < 0.002, 30, "Chromium's page still hears Firefox, muted")
        ff.screenshot("call-grid-muted")
        ff.click(mic)
        ff.wait(f"{mic}[aria-label='Turn off your microphone']")
        poll(lambda: bob_level() > 0.005, 30, "Chromium's page does not hear Firefox again")
        ff.screenshot("call-grid-sfu")
        ff.viewport(390, 844)
        ff.screenshot("call-grid-sfu-phone")
        ff.click("[data-testid=call-leave]")
        ff.wait(PREJOIN, timeout=30)
        stats = cli.finish()
        seen = peer(stats, "Bob")
        assert seen["video_frames_decoded"] > 10 and seen["decrypt_failures"] == 0, seen
        assert [e for e in ff.problems() if "favicon" not in e] == []
        assert [e for e in carol.problems() if "favicon" not in e] == []
    finally:
        cli.kill()
