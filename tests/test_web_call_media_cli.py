"""A Chromium page in a real call (SFU, then mesh) with a real ``salon call`` CLI participant,
without the UI.

The page (web/test/browser/call_cli_page.ts) is served by a real ``salon serve`` (its CSP),
joins the space from an invite link and the conference room with the web CallClient (call.ts)
over the real topologies (callTopologies(): sfu.ts with the SFrame worker, or mesh.ts), its
camera Chromium's fake one playing a Y4M of a known colour. Alice runs ``salon call --screen
test`` beside it. Checked: the CLI decodes the page's camera (colour), microphone and shared
screen with zero decryption failures; the page shows Alice's camera, audio and screen
(colours, audio not silence; on the SFU from its slots, with zero failures in its worker);
both show the same verification code.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from call_helpers import CALL_ENV
from conftest import SALON, SalonServer
from media_page_support import WEB, chromium_args, write_y4m

from client.call.media import colour_distance, name_colour, screen_colour

pytestmark = pytest.mark.timeout(240)

YUV = (138, 68, 184)  # about RGB (230, 120, 20): the page's fake camera
PAGE_BGR = (20, 120, 230)
SCREEN_RGB = (30, 200, 40)


@pytest.fixture(scope="module")
def call_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalonServer]:
    out = tmp_path_factory.mktemp("call-cli-page")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    subprocess.run(
        ["node", "test/browser/build_call_cli.mjs", str(out)], cwd=WEB, check=True, timeout=90
    )
    srv = SalonServer(tmp_path_factory.mktemp("call-cli-server"), {"server": {"web_dir": str(out)}})
    srv.start()
    yield srv
    srv.stop()


class CliCall:
    """``salon call`` in the background; its lines collected as they come."""

    def __init__(self, user: Any, space: str, room: str, stats: Path, *extra: str) -> None:
        args = [str(SALON), "call", space, room, "--stats", str(stats), *extra]
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

    def wait_for(self, pattern: str, timeout: float = 40) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the CLI call did not end:\n" + "\n".join(self.lines)) from None
        self._reader.join(10)
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


@pytest.mark.parametrize("topology", ["sfu", "mesh"])
def test_a_page_and_a_cli_in_a_call(
    topology: str, chromium: Any, call_server: SalonServer, module_user: Any, tmp_path: Path
) -> None:
    alice = module_user(f"alice-{topology}")
    made = alice.json("space", "create", "Town hall", "--server", call_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "stage", "--kind", "conference", "--topology", topology)
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    args = [*chromium_args(y4m), "--allow-loopback-in-peer-connection"]
    browser = chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    cli = None
    try:
        web = WebPage(browser.new_page(), "call-cli")
        page = web.page
        page.goto(f"{call_server.url}/")
        page.wait_for_selector("html[data-call-ready]", state="attached")
        page.evaluate("([l, n]) => window.callCli.join(l, n)", [made["link"], "Bob"])
        cli = CliCall(
            alice, space, "stage", tmp_path / "alice.json", "--duration", "30", "--screen", "test"
        )
        cli.wait_for(r"verification code|waiting|joined", 40)
        started = page.evaluate("r => window.callCli.startCall(r)", "stage")
        assert started["phase"] == "in-call", started
        page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", ["Alice", "camera"])
        page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", ["Alice", "audio"])
        page.evaluate("() => window.callCli.shareScreen([30, 200, 40])")
        camera = page.evaluate("([n, k]) => window.callCli.seen(n, k)", ["Alice", "camera"])
        bgr = tuple(camera["colour"][::-1])
        assert colour_distance(bgr, name_colour("Alice")) < 60, camera
        page.evaluate("([n, k]) => window.callCli.waitTrack(n, k)", ["Alice", "screen"])
        screen = page.evaluate("([n, k]) => window.callCli.seen(n, k)", ["Alice", "screen"])
        assert colour_distance(tuple(screen["colour"][::-1]), screen_colour("Alice")) < 60, screen
        audio = page.evaluate("([n, k]) => window.callCli.seen(n, k)", ["Alice", "audio"])
        assert audio["peak"] > 0.01, audio
        view = page.evaluate("() => window.callCli.view()")
        assert view["topology"] == topology and view["encrypted"] is True, view
        code = view["code"]
        stats = cli.finish(60)
        left = page.evaluate("() => window.callCli.leave()")
        bob = peer(stats, "Bob")
        assert bob["video_frames_decoded"] > 10 and bob["audio_frames_decoded"] > 30, bob
        assert bob["decrypt_failures"] == 0, bob
        assert colour_distance(tuple(bob["dominant_colour"]), PAGE_BGR) < 60, bob
        assert bob["screen"]["frames_decoded"] > 10, bob["screen"]
        assert bob["screen"]["decrypt_failures"] == 0
        screen_bgr = tuple(bob["screen"]["dominant_colour"])
        assert colour_distance(screen_bgr, SCREEN_RGB[::-1]) < 80, bob["screen"]
        if topology == "sfu":  # SFrame in the worker (the mesh is DTLS-SRTP end to end)
            tracks = left["counters"]["tracks"]
            slots = {k: v for k, v in tracks.items() if k.startswith("slot-")}
            assert sum(v["decrypted"] for v in slots.values()) > 50, slots
            assert sum(v["failures"] for v in slots.values()) == 0, slots
        else:
            assert left["counters"] is None, "no SFrame worker started for a mesh call"
        shown = [line for line in cli.lines if "verification code" in line]
        assert code is not None and any(code in line for line in shown), (code, shown)
        assert [e for e in web.problems() if "favicon" not in e] == []
    finally:
        if cli is not None:
            cli.kill()
        browser.close()
