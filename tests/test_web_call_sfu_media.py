"""The browser's SFU topology (web/src/call/sfu.ts) against the real SFU node (sfu/node.py).

A Chromium (then Firefox) page joins a real ``SfuNode`` through ``SfuTopology`` (its offer goes
to the node as the server would pass it: ``node.join(conference, participant, sdp,
sender_index=1)``), its camera and microphone from devices.ts (fake devices, the camera a Y4M of
a known colour), every frame SFrame-protected in the media worker. A Python participant (the
reference ``client.call.e2ee_media.SfuSession``) joins the same conference with index 2. Keys are
given to both sides by the test (the call client's key exchange is tested with it). Checked: the
node accepts the browser's offer layout; the Python side decrypts and decodes the browser's
camera (its colour), microphone and shared screen (a third published section, marked
``a=content:slides``) with zero failures; the page maps the node's slots back to the Python
participant (by the publisher index in the frames' key ids) and shows its camera (colour) and
audio (WebAudio), with zero decrypt failures in the worker. The same in Firefox ESR (over
WebDriver BiDi; its fake camera is its own picture and headless it plays no audio, so there the
camera's colour and the page's audio level are not checked, the worker's counters are).
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser_support import CHROMIUM, FirefoxPage, WebPage
from media_page_support import CSP, WEB, chromium_args, write_y4m

from client.call.e2ee_media import MEDIA_SUITE, DecryptingReceiver, SfuSession
from client.call.media import TestPatternTrack, ToneTrack, dominant_colour
from client.call.sframe import SFrameContext
from rtc import aiortc_adapter
from sfu.node import SfuNode

pytestmark = pytest.mark.timeout(240)

CONF = "conf-web"
ALICE, BOB = "aa" * 32, "bb" * 32  # member keys (hex); Alice is the page
ALICE_INDEX, BOB_INDEX = 1, 2
ALICE_KEY, BOB_KEY = bytes(range(32)), bytes(range(32, 64))
YUV = (138, 68, 184)  # about RGB (230, 120, 20): the page's fake camera
ALICE_RGB = (230, 120, 20)
BOB_BGR = (220, 60, 20)  # Bob's test pattern, RGB (20, 60, 220)
SCREEN_RGB = (30, 200, 40)


def close_to(got: Any, want: tuple[int, int, int], tolerance: int = 40) -> bool:
    return len(got) == 3 and all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


class Bob:
    """The Python participant: publishes a test pattern and a tone, receives camera, audio
    and one screen slot, counts what it decodes per kind (all from Alice here)."""

    def __init__(self) -> None:
        rx = SFrameContext(MEDIA_SUITE, replay_window=1024)
        rx.add_key(ALICE_INDEX << 16, ALICE_KEY)
        tx = SFrameContext(MEDIA_SUITE)
        tx.add_key(BOB_INDEX << 16, BOB_KEY)
        self.session = SfuSession(
            send_ctx=tx,
            send_kid=BOB_INDEX << 16,
            recv_ctx=rx,
            video=TestPatternTrack("Bob", colour=BOB_BGR),
            audio=ToneTrack("Bob"),
            video_slots=2,
            audio_slots=2,
            screen_slots=1,
        )
        self.frames: collections.Counter[str] = collections.Counter()
        self.kids: set[int] = set()
        self.colour: dict[str, tuple[int, int, int]] = {}

    async def join(self, node: SfuNode) -> None:
        offer = await self.session.create_offer()
        answer = await node.join(CONF, "bob", offer, sender_index=BOB_INDEX)
        await self.session.set_answer(answer)
        self.session.start_receiving(self.on_frame)

    def on_frame(self, receiver: DecryptingReceiver, kid: int, frame: Any) -> None:
        kind = "screen" if receiver.screen else receiver.kind
        self.frames[kind] += 1
        self.kids.add(kid)
        if kind != "audio" and self.frames[kind] % 5 == 0:
            b, g, r = dominant_colour(frame.to_ndarray(format="bgr24"))
            self.colour[kind] = (r, g, b)


class SfuPageServer:
    """The test page under the web app's CSP, ``POST /offer`` → the node's answer for Alice;
    the node and Bob live on this server's loop, on its own thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.node: SfuNode | None = None
        self.bob: Bob | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _offer(self, request: web.Request) -> web.Response:
        assert self.node is not None
        sdp = await request.text()
        self.offers.append(sdp)
        try:
            answer = await self.node.join(CONF, "alice", sdp, sender_index=ALICE_INDEX)
        except Exception as exc:
            return web.Response(status=400, text=f"{type(exc).__name__}: {exc}")
        return web.Response(text=answer)

    async def _start(self) -> None:
        @web.middleware
        async def csp(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            response.headers["Content-Security-Policy"] = CSP
            return response

        self.offers: list[str] = []
        self.node = SfuNode()
        app = web.Application(middlewares=[csp])
        app.router.add_post("/offer", self._offer)
        app.router.add_static("/", self.directory)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/index.html"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> SfuPageServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the page server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.bob is not None:
                await self.bob.session.close()
            if self.node is not None:
                await self.node.close()
            if self._runner is not None:
                await self._runner.cleanup()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SfuPageServer]:
    """The page server and node; ICE on 127.0.0.1 (Chromium: --allow-loopback-in-peer-connection)
    unless the test asks for other host addresses (Firefox gathers no loopback candidates)."""
    out = tmp_path_factory.mktemp("call-sfu-page")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    subprocess.run(
        ["node", "test/browser/build_call_media.mjs", str(out)], cwd=WEB, check=True, timeout=60
    )
    every = getattr(request, "param", None) == "every-interface"
    aiortc_adapter.restrict_ice_host_addresses(None if every else ["127.0.0.1"])
    try:
        with SfuPageServer(out) as srv:
            yield srv
    finally:
        aiortc_adapter.restrict_ice_host_addresses(None)


SETUP = {
    "me": ALICE,
    "myIndex": ALICE_INDEX,
    "myKey": ALICE_KEY.hex(),
    "peers": [{"member": BOB, "index": BOB_INDEX, "key": BOB_KEY.hex(), "label": "Bob"}],
    "offerUrl": "/offer",
}


def sfu_call(ev: Callable[[str], Any], server: SfuPageServer, *, firefox: bool) -> None:
    """The page (driven by ``ev``, JavaScript expressions) and Bob on the node; see the module."""
    bob = server.bob = Bob()
    server.call(bob.join(server.node))  # type: ignore[arg-type]
    started = ev(f"window.callTest.sfuStart({json.dumps(SETUP)})")
    assert started["state"] == "connected", started
    offer = server.offers[-1]
    assert offer.count("a=content:slides") == 3, "the published screen and 2 screen slots"
    assert offer.count("m=video") == 6 + 2 + 2 and offer.count("m=audio") == 6 + 1

    # The page shows Bob's camera and audio, found through the node's slots.
    assert ev(f"window.callTest.sfuWaitTrack('{BOB}', 'camera')")
    assert ev(f"window.callTest.sfuWaitTrack('{BOB}', 'audio')")
    seen = ev(f"window.callTest.sfuSeen('{BOB}', 2500)")
    assert close_to(seen["camera"]["colour"], BOB_BGR[::-1]), seen
    if not firefox:  # headless Firefox has no audio output: its AudioContext never runs
        assert seen["audio"]["peak"] > 0.01, seen

    # Bob decodes the page's camera, microphone and shared screen under Alice's key id.
    ev("window.callTest.sfuScreen(true)")

    def bob_has_all() -> bool:
        return all(
            bob.frames[k] >= 20 and (k == "audio" or k in bob.colour)
            for k in ("video", "audio", "screen")
        )

    end = time.monotonic() + 30
    while time.monotonic() < end and not bob_has_all():
        time.sleep(0.2)
    assert bob.frames["video"] >= 20 and bob.frames["audio"] >= 20, bob.frames
    assert bob.frames["screen"] >= 20, bob.frames
    assert bob.kids == {ALICE_INDEX << 16}
    if not firefox:  # Firefox's fake camera is its own moving picture, not the Y4M
        assert close_to(bob.colour["video"], ALICE_RGB), bob.colour
    # (the canvas is full-range RGB; the decoder's conversion stretches it a little)
    assert close_to(bob.colour["screen"], SCREEN_RGB, 50), bob.colour
    assert bob.session.stats()["decrypt_failures"] == 0

    # SfuReconnect: a new connection to the node (it replaces the old one); the worker's
    # counter goes on under the same key, so Bob's replay window accepts what follows.
    before = dict(bob.frames)
    again = ev("window.callTest.sfuReconnect()")
    assert again["state"] == "connected" and again["connects"] == 2, again
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(bob.frames[k] >= before[k] + 20 for k in before):
        time.sleep(0.2)
    assert all(bob.frames[k] >= before[k] + 20 for k in before), (before, bob.frames)
    assert bob.session.stats()["decrypt_failures"] == 0

    counters = ev("window.callTest.sfuClose()")
    tracks = counters["tracks"]
    assert counters["sendKid"] == ALICE_INDEX << 16
    for name in ("camera", "audio", "screen"):
        assert tracks[name]["encrypted"] > 0, name
    received = {k: v for k, v in tracks.items() if k.startswith("slot-")}
    assert sum(v["decrypted"] for v in received.values()) > 50
    assert sum(v["failures"] for v in received.values()) == 0, received
    audio_slots = [v for k, v in received.items() if k.startswith("slot-audio")]
    assert sum(v["decrypted"] for v in audio_slots) > 20, "Bob's audio decrypted"


def test_chromium_publishes_to_the_real_sfu_and_decodes_a_python_participant(
    chromium: Any, server: SfuPageServer, tmp_path: Path
) -> None:
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    args = [*chromium_args(y4m), "--allow-loopback-in-peer-connection"]
    browser = chromium.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        page = WebPage(browser.new_page(), "call-sfu")
        page.page.goto(server.url)
        page.page.wait_for_selector("html[data-call-ready]", state="attached")
        sfu_call(page.page.evaluate, server, firefox=False)
        assert [e for e in page.problems() if "favicon" not in e] == []
    finally:
        browser.close()


@pytest.mark.parametrize("server", ["every-interface"], indirect=True)
def test_firefox_publishes_to_the_real_sfu_and_decodes_a_python_participant(
    firefox: Any, server: SfuPageServer
) -> None:
    page: FirefoxPage = firefox()
    page.goto(server.url)
    page.wait("html[data-call-ready]")
    sfu_call(lambda expression: page.evaluate(expression, timeout=60.0), server, firefox=True)
    assert [e for e in page.problems() if "favicon" not in e] == []
