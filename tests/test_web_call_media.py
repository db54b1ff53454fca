"""The browser's call media plumbing (web/src/call/mesh.ts, devices.ts) in a real Chromium.

A test page (web/test/browser/call_media_page.ts, bundled with esbuild, served under the web
app's CSP) makes two participants, each with its own MeshTopology, joined by an in-page
signaller (the sealing of signals is the call client's, tested with it). Alice's camera and
microphone are Chromium's fake devices opened through devices.ts (the camera plays a Y4M of a
known colour); Bob's are a canvas of another colour and an oscillator. Checked: the pair
connects with three sections (audio, camera, screen), each side decodes the other's video
(colour) and hears its audio (WebAudio), mute stops the audio leaving, camera off stops the
video, a shared screen arrives as a third track (its own colour; also Alice's own screen
through getDisplayMedia); relay-only through a real coturn (and a refused TURN credential fails
the pair with its reason); the same pair in Firefox ESR; devices.ts names a denied permission
and a missing device in plain words; the built app ships the SFrame worker under its CSP.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from media_page_support import WEB, PageServer, chromium_args, write_y4m

pytestmark = pytest.mark.timeout(240)

YUV = (138, 68, 184)  # about RGB (230, 120, 20): Alice's fake camera
ALICE_RGB = (230, 120, 20)
BOB_RGB = (20, 60, 220)  # Bob's canvas camera
SCREEN_RGB = (30, 200, 40)  # Bob's canvas "screen"


def close_to(got: list[int], want: tuple[int, int, int], tolerance: int = 35) -> bool:
    return len(got) == 3 and all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("call-media-page")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    subprocess.run(
        ["node", "test/browser/build_call_media.mjs", str(out)], cwd=WEB, check=True, timeout=60
    )
    with PageServer(out) as server:
        yield server.url


def launch(chromium: Any, args: list[str]) -> Any:
    return chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)


def open_page(browser: Any, url: str) -> WebPage:
    page = WebPage(browser.new_page(), "call-media")
    page.page.goto(url)
    page.page.wait_for_selector("html[data-call-ready]", state="attached")
    return page


def seen(page: WebPage, who: str, kind: str, ms: int = 1500) -> dict[str, Any]:
    out: dict[str, Any] = page.page.evaluate(
        "([w, k, ms]) => window.callTest.seen(w, k, ms)", [who, kind, ms]
    )
    return out


def wait_track(page: WebPage, who: str, kind: str, present: bool = True) -> bool:
    return bool(
        page.page.evaluate(
            "([w, k, p]) => window.callTest.waitTrack(w, k, p)", [who, kind, present]
        )
    )


def test_mesh_media_both_ways_mute_camera_off_and_screen(
    chromium: Any, page_url: str, tmp_path: Path
) -> None:
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    browser = launch(chromium, chromium_args(y4m))
    try:
        page = open_page(browser, page_url)
        started = page.page.evaluate("() => window.callTest.start()")
        assert started["links"] == ["connected", "connected"], started
        for who in ("alice", "bob"):
            for kind in ("camera", "audio"):
                assert wait_track(page, who, kind), f"{who} gets the other's {kind}"

        # Both ways: video of the right colour, audio that is not silence.
        bob_sees = seen(page, "bob", "camera")
        alice_sees = seen(page, "alice", "camera")
        assert close_to(bob_sees["colour"], ALICE_RGB), bob_sees
        assert close_to(alice_sees["colour"], BOB_RGB), alice_sees
        assert bob_sees["framesDecoded"] > 10 and alice_sees["framesDecoded"] > 10
        bob_hears = seen(page, "bob", "audio", 2500)
        alice_hears = seen(page, "alice", "audio", 2500)
        assert bob_hears["audioPeak"] > 0.01, bob_hears
        assert alice_hears["audioPeak"] > 0.01, alice_hears
        assert bob_hears["packets"] > 20 and alice_hears["packets"] > 20

        # Nobody shares a screen yet: no screen track on either side.
        assert (
            page.page.evaluate("() => window.callTest.sinkEvents('alice')")["events"].count(
                "screen:track"
            )
            == 0
        )

        # Mute: nothing of Alice's audio leaves (no packets arrive at Bob).
        no_audio = {"audio": False, "camera": True, "screen": True}
        page.page.evaluate("s => window.callTest.setSending('alice', s)", no_audio)
        seen(page, "bob", "audio", 500)  # in flight
        muted = seen(page, "bob", "audio", 1500)
        assert muted["packets"] == 0, muted
        assert seen(page, "bob", "camera", 1000)["packets"] > 10, "the camera still goes"
        everything = {"audio": True, "camera": True, "screen": True}
        page.page.evaluate("s => window.callTest.setSending('alice', s)", everything)
        assert seen(page, "bob", "audio", 1500)["packets"] > 20, "unmuted: audio again"

        # Camera off (devices.ts stops the camera; the topology drops the track): no video.
        assert page.page.evaluate("() => window.callTest.aliceCamera(false)") is False
        seen(page, "bob", "camera", 500)
        off = seen(page, "bob", "camera", 1500)
        assert off["packets"] == 0, off
        assert wait_track(page, "bob", "camera", present=False), "the sink is told: no camera"
        assert page.page.evaluate("() => window.callTest.aliceCamera(true)") is True
        back = seen(page, "bob", "camera", 2000)
        assert back["packets"] > 10, back
        assert close_to(seen(page, "bob", "camera")["colour"], ALICE_RGB)

        # Screen share: a third track at Alice, of the screen's colour; the camera stays.
        page.page.evaluate("() => window.callTest.bobScreen(true)")
        assert wait_track(page, "alice", "screen"), "the shared screen arrives"
        screen = seen(page, "alice", "screen", 1500)
        assert close_to(screen["colour"], SCREEN_RGB), screen
        assert close_to(seen(page, "alice", "camera")["colour"], BOB_RGB)
        page.page.evaluate("() => window.callTest.bobScreen(false)")
        seen(page, "alice", "screen", 500)
        assert seen(page, "alice", "screen", 1500)["packets"] == 0, "screen share off"
        assert wait_track(page, "alice", "screen", present=False), "the sink is told: no screen"

        # Alice shares her screen through devices.ts (getDisplayMedia, after a click): Bob sees it.
        page.page.evaluate("() => window.callTest.aliceScreenButton()")
        page.page.click("#alice-screen")
        assert page.page.evaluate("() => window.callTest.screenResult") == "live"
        assert wait_track(page, "bob", "screen"), "Alice's screen arrives"
        assert seen(page, "bob", "screen", 1000)["framesDecoded"] > 0
        assert page.page.evaluate("() => window.callTest.aliceStopScreen()") is True
        assert wait_track(page, "bob", "screen", present=False), "and goes when she stops"

        events = page.page.evaluate("() => window.callTest.sinkEvents('alice')")
        assert events["links"] == ["connected"], events
        speaker = page.page.evaluate("() => window.callTest.speaker()")
        assert speaker["chosen"] is True and speaker["unknown"] == "missing", speaker
        lists = page.page.evaluate("() => window.callTest.listDevices()")
        assert lists["cameras"] and lists["microphones"], lists
        assert all(d["label"] and d["id"] for d in lists["cameras"] + lists["microphones"]), lists
        page.page.evaluate("() => window.callTest.close()")
        assert [e for e in page.problems() if "favicon" not in e] == []
        page.screenshot("call-media-mesh")
    finally:
        browser.close()


def test_device_errors_in_plain_words(chromium: Any, page_url: str) -> None:
    # No permission: a context that never grants camera or microphone (no fake UI to accept).
    browser = launch(chromium, ["--use-fake-device-for-media-stream"])
    try:
        page = open_page(browser, page_url)
        denied = page.page.evaluate("() => window.callTest.tryDevices()")
        assert denied["ok"] is False and denied["problem"] == "denied", denied
        assert denied["message"].startswith("Permission to use your camera and microphone")
    finally:
        browser.close()
    # Permission granted, but no device at all (no fake devices on this machine).
    browser = launch(chromium, ["--use-fake-ui-for-media-stream"])
    try:
        page = open_page(browser, page_url)
        missing = page.page.evaluate("() => window.callTest.tryDevices()")
        assert missing["ok"] is False and missing["problem"] == "missing", missing
        assert missing["message"].startswith("No camera or microphone was found"), missing
    finally:
        browser.close()


def test_the_built_app_ships_the_sframe_worker_under_its_csp(
    web_server: Any, web_dist: Path, new_page: Any
) -> None:
    """The real build emits the worker as an asset of its own, listed in the manifest (so in
    the bundle hash) and named by a meta tag; under `salon serve`'s CSP (worker-src 'self',
    no blob:) the page starts it as a module worker and it answers."""
    manifest = json.loads((web_dist / "manifest.json").read_text())
    html = (web_dist / "index.html").read_text()
    found = re.search(
        r'<meta name="salon-sframe-worker" content="/(assets/sframe_worker-[^"]+\.js)">', html
    )
    assert found is not None, "index.html names the worker"
    assert found.group(1) in manifest["files"]
    web: WebPage = new_page()
    web.page.goto(f"{web_server.url}/")
    reply = web.page.evaluate(
        """() => new Promise((resolve, reject) => {
            const url = document.querySelector('meta[name="salon-sframe-worker"]').content;
            const w = new Worker(url, { type: "module", name: "sframe" });
            w.onmessage = (e) => resolve({ type: e.data.type, sendKid: e.data.sendKid });
            w.onerror = (e) => reject(new Error("worker failed: " + e.message));
            w.postMessage({ id: 1, type: "counters" });
            setTimeout(() => reject(new Error("no answer from the worker")), 10000);
        })"""
    )
    assert reply == {"type": "counters", "sendKid": None}
    csp = web_server_csp(web_server)
    assert "worker-src 'self';" in csp and "blob:" not in csp.split("worker-src")[1].split(";")[0]
    assert web.csp_violations() == []


def web_server_csp(web_server: Any) -> str:
    with urllib.request.urlopen(f"{web_server.url}/") as response:
        return str(response.headers["Content-Security-Policy"])


def test_mesh_relay_only_through_coturn(chromium: Any, page_url: str, coturn: Any) -> None:
    """iceTransportPolicy "relay" with TURN REST credentials (as GetIceServers hands them out):
    both sides connect through a real coturn, and media flows."""
    from spaces.handlers.ice import turn_credentials

    username, credential, _expiry = turn_credentials(coturn.secret, 600, time.time())
    servers = [{"urls": [coturn.url], "username": username, "credential": credential}]
    browser = launch(chromium, [*chromium_args(None), "--allow-loopback-in-peer-connection"])
    try:
        page = open_page(browser, page_url)
        started = page.page.evaluate(
            "s => window.callTest.start({ relayOnly: true, iceServers: s })", servers
        )
        assert started["links"] == ["connected", "connected"], started
        for who in ("alice", "bob"):
            pair = page.page.evaluate("w => window.callTest.selectedPair(w)", who)
            assert pair == {"local": "relay", "remote": "relay"}, pair
        assert wait_track(page, "alice", "camera") and wait_track(page, "bob", "audio")
        assert seen(page, "alice", "camera", 1000)["packets"] > 10
        log = coturn.log()
        assert "ALLOCATE processed, success" in log
        assert coturn.allocated_usernames(), "the relay was allocated under our REST username"
        page.page.evaluate("() => window.callTest.close()")
        # TURN refusing our credentials: no relay candidate, so the pair fails, saying why.
        page.page.reload()
        page.page.wait_for_selector("html[data-call-ready]", state="attached")
        bad = [{**servers[0], "credential": "not-the-right-one"}]
        failed = page.page.evaluate(
            "s => window.callTest.start({ relayOnly: true, iceServers: s })", bad
        )
        assert "failed" in failed["links"], failed
        assert any("relay-only: no relay candidate" in d for d in failed["details"]), failed
    finally:
        browser.close()


def test_firefox_mesh_media_both_ways_mute_and_screen(firefox: Any, page_url: str) -> None:
    """The same pair in Firefox ESR (its own fake camera and microphone for Alice): each side
    decodes the other, mute stops the audio leaving, a shared screen arrives as a third track."""
    page = firefox()
    page.goto(page_url)
    page.wait("html[data-call-ready]")

    def ev(expression: str) -> Any:
        return page.evaluate(expression, timeout=60.0)

    started = ev("window.callTest.start()")
    assert started["links"] == ["connected", "connected"], started
    for who in ("alice", "bob"):
        for kind in ("camera", "audio"):
            assert ev(f"window.callTest.waitTrack('{who}', '{kind}', true)"), (who, kind)
    alice_sees = ev("window.callTest.seen('alice', 'camera', 1500)")
    assert close_to(alice_sees["colour"], BOB_RGB), alice_sees
    assert ev("window.callTest.seen('bob', 'camera', 1500)")["framesDecoded"] > 10
    assert ev("window.callTest.seen('bob', 'audio', 1500)")["packets"] > 20
    ev("window.callTest.setSending('alice', {audio: false, camera: true, screen: true})")
    ev("window.callTest.seen('bob', 'audio', 500)")
    assert ev("window.callTest.seen('bob', 'audio', 1500)")["packets"] == 0, "muted"
    ev("window.callTest.bobScreen(true)")
    assert ev("window.callTest.waitTrack('alice', 'screen', true)")
    screen = ev("window.callTest.seen('alice', 'screen', 1500)")
    assert close_to(screen["colour"], SCREEN_RGB), screen
    ev("window.callTest.close()")
    assert [e for e in page.problems() if "favicon" not in e] == []
