"""The browser's SFrame media worker (web/src/media/) in real browsers (issue 10).

A test page (web/test/browser/media_page.ts, bundled with esbuild) served under the web app's
strict CSP makes two participants in one page, each with its own SFrame worker, joined by two
RTCPeerConnections: fake camera (a Y4M of a known colour) and microphone, VP8 + Opus, sender
transforms encrypt, receiver transforms decrypt. Checked: the receiver decodes the camera's
colour and hears audio with zero decrypt failures; a receiver with the wrong key decodes
nothing and counts failures; frames under a foreign key id are dropped. Chromium through
Playwright, Firefox ESR through puppeteer-core (WebDriver BiDi): the harness of
tests/browser_support.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser_support import CHROMIUM, CHROMIUM_ARGS, FirefoxPage, WebPage

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "connect-src 'self'; style-src 'self'"
)
# The camera's colour, BT.601 limited range: Y, Cb, Cr for about RGB (230, 120, 20).
YUV = (138, 68, 184)
RGB = (230, 120, 20)
SENDER = 1

GOOD = {"senderIndex": SENDER, "publisher": SENDER, "wrongKey": False, "wantDecoded": 30}
WRONG_KEY = {"senderIndex": SENDER, "publisher": SENDER, "wrongKey": True, "wantDecoded": 0}
FOREIGN = {"senderIndex": 3, "publisher": SENDER, "wrongKey": False, "wantDecoded": 0}


def scenario(base: dict[str, Any], timeout_ms: int = 30000) -> dict[str, Any]:
    return {"wantDropped": 20, "timeoutMs": timeout_ms, **base}


def build_media(out: Path) -> Path:
    """Bundles the test page and the worker into ``out`` (npm ci first if need be)."""
    if shutil.which("node") is None:
        pytest.fail("node is needed to bundle the web client's media worker")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=200)
    subprocess.run(
        ["node", "test/browser/build_media.mjs", str(out)], cwd=WEB, check=True, timeout=60
    )
    return out


def write_y4m(path: Path, yuv: tuple[int, int, int], width: int = 640, height: int = 480) -> Path:
    """A few frames of one colour, 4:2:0 (Chromium loops the file as its fake camera)."""
    y, u, v = yuv
    quarter = width * height // 4
    frame = bytes([y]) * (width * height) + bytes([u]) * quarter + bytes([v]) * quarter
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(6):
            f.write(b"FRAME\n" + frame)
    return path


class PageServer:
    """A static server for ``directory`` with the web app's CSP on every response, on its own
    thread and loop (the browser tests are plain ``def`` tests: Playwright's sync API and the
    Firefox driver block)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _start(self) -> None:
        @web.middleware
        async def csp(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            response.headers["Content-Security-Policy"] = CSP
            return response

        app = web.Application(middlewares=[csp])
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

    def __enter__(self) -> PageServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the page server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with PageServer(build_media(tmp_path_factory.mktemp("media-page"))) as server:
        yield server.url


def chromium_args(y4m: Path | None) -> list[str]:
    args = [
        *CHROMIUM_ARGS,
        "--autoplay-policy=no-user-gesture-required",
    ]
    if y4m is not None:
        args.append(f"--use-file-for-fake-video-capture={y4m}")
    return args


def run_chromium(
    browser_type: Any, url: str, scenarios: list[dict[str, Any]], y4m: Path | None
) -> dict[str, Any]:
    """A Chromium of its own (the fake camera plays ``y4m``), the scenarios run in one page."""
    browser = browser_type.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(y4m))
    try:
        page = WebPage(browser.new_page(), "media")
        page.page.goto(url)
        page.page.wait_for_selector("html[data-media-ready]", state="attached")
        results = [page.page.evaluate("s => window.mediaTest.loopback(s)", s) for s in scenarios]
        return {"browser": browser.version, "errors": page.problems(), "results": results}
    finally:
        browser.close()


def check_good(out: dict[str, Any], *, colour: bool, webaudio: bool = True) -> None:
    assert out["problem"] is None
    sent, got = out["sender"]["tracks"], out["receiver"]["tracks"]
    assert out["sender"]["sendKid"] == SENDER << 16
    assert out["receiver"]["receiveKids"] == [SENDER << 16]
    for kind in ("video", "audio"):
        assert sent[kind]["encrypted"] > 0, kind
        assert sent[kind]["lastKid"] == SENDER << 16
        assert got[kind]["decrypted"] > 0, kind
        assert got[kind]["lastKid"] == SENDER << 16
        bad = ("failures", "droppedForeignKid", "droppedNoKey", "droppedReplay", "droppedMalformed")
        why = (kind, got[kind]["lastDrop"])
        assert {k: got[kind][k] for k in bad} == dict.fromkeys(bad, 0), why
        assert sent[kind]["droppedOther"] == 0
    assert out["framesDecoded"] >= 30
    if webaudio:
        assert out["audioPeak"] > 0.01, "the receiver hears the microphone (WebAudio analyser)"
    else:  # headless Firefox has no audio output: its AudioContext never runs
        assert out["statsAudioLevel"] > 0.01, "the decoded audio is not silence (getStats)"
    assert len(out["colour"]) == 3
    if colour:
        assert all(abs(a - b) <= 30 for a, b in zip(out["colour"], RGB, strict=True)), out
        assert out["spread"] <= 40, "one solid colour, not decoded garbage"
    else:
        assert sum(out["colour"]) > 30, "not a black picture"


def check_wrong_key(out: dict[str, Any]) -> None:
    got = out["receiver"]["tracks"]
    assert out["framesDecoded"] == 0, "nothing decodes under the wrong key"
    assert got["video"]["failures"] >= 20
    assert got["audio"]["failures"] > 0
    assert got["video"]["decrypted"] == got["audio"]["decrypted"] == 0


def check_foreign(out: dict[str, Any]) -> None:
    got = out["receiver"]["tracks"]
    # the receiver holds the sender's real key (index 3), but its transform is bound to index 1
    assert sorted(out["receiver"]["receiveKids"]) == [SENDER << 16, 3 << 16]
    assert out["framesDecoded"] == 0
    assert got["video"]["droppedForeignKid"] >= 20
    assert got["audio"]["droppedForeignKid"] > 0
    assert got["video"]["failures"] == got["audio"]["failures"] == 0, "refused before any key"
    assert got["video"]["decrypted"] == got["audio"]["decrypted"] == 0


def test_chromium_sframe_loopback(chromium: Any, page_url: str, tmp_path: Path) -> None:
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    scenarios = [scenario(GOOD), scenario(WRONG_KEY), scenario(FOREIGN)]
    run = run_chromium(chromium.browser_type, page_url, scenarios, y4m)
    assert [e for e in run["errors"] if "favicon" not in e] == []
    good, wrong, foreign = run["results"]
    check_good(good, colour=True)
    check_wrong_key(wrong)
    check_foreign(foreign)


def test_firefox_sframe_loopback(firefox: Any, page_url: str) -> None:
    page: FirefoxPage = firefox()
    page.goto(page_url)
    page.wait("html[data-media-ready]")
    results = [
        page.evaluate(f"window.mediaTest.loopback({json.dumps(s)})", timeout=70.0)
        for s in (scenario(GOOD, 45000), scenario(WRONG_KEY, 45000), scenario(FOREIGN, 45000))
    ]
    assert [e for e in page.problems() if "favicon" not in e] == []
    good, wrong, foreign = results
    check_good(good, colour=False, webaudio=False)
    check_wrong_key(wrong)
    check_foreign(foreign)
