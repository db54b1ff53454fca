"""The media test page (web/test/browser/media_page.ts) and its server, for
tests/test_web_media.py and bench/web_sframe.py: the bundle, a static server with the web app's
CSP on its own thread, a Y4M of one colour for Chromium's fake camera."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CHROMIUM = os.environ.get("SALON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "connect-src 'self'; style-src 'self'"
)


def build_media(out: Path) -> Path:
    """Bundles the test page and the worker into ``out`` (npm ci first if need be)."""
    if shutil.which("node") is None:
        raise RuntimeError("node is needed to bundle the web client's media worker")
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


def chromium_args(y4m: Path | None) -> list[str]:
    args = [
        *CHROMIUM_ARGS,
        "--autoplay-policy=no-user-gesture-required",
    ]
    if y4m is not None:
        args.append(f"--use-file-for-fake-video-capture={y4m}")
    return args
