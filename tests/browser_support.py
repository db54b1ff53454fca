"""The web app in real browsers: the built bundle, a server serving it, Chromium and Firefox.

Fixtures (registered by conftest.py)
------------------------------------
``web_dist`` (session)
    The web app built once per test run (pytest-xdist workers share it) by the real build
    (``web/scripts/build.mjs``, after ``npm ci`` if ``web/node_modules`` is missing) into a
    temporary directory: a ``Path`` holding ``index.html``, ``manifest.json`` and ``assets/``.
``web_server`` (module)
    A real ``salon serve`` (:class:`conftest.SalonServer`) serving ``web_dist``; a module's
    ``SERVER_CONFIG`` is merged in as for ``server``. ``web_server.url`` is the app's origin.
``chromium`` (module)
    A Playwright (sync API) ``Browser``: Debian's ``/usr/bin/chromium``, headless, fake camera
    and microphone (never ``playwright install``); with a module's ``FAKE_CAMERA_YUV`` the
    fake camera is a picture of that one colour. Module scope, not session: while the sync
    API is open an event loop runs, and async tests elsewhere could not start theirs.
``new_page`` (function)
    ``new_page(theme="light"|"dark", phone=False) -> WebPage``: a page in a fresh browser
    context (its own storage, so its own IndexedDB) with the light/dark colour scheme and a
    desktop (1280×800) or phone (390×844, touch) viewport. Every context closes at teardown.
``firefox`` (function)
    ``firefox(theme="light", phone=False) -> FirefoxPage``: Debian's ``/usr/bin/firefox-esr``
    driven over WebDriver BiDi by ``web/scripts/firefox_driver.mjs`` (puppeteer-core).

Helpers: :class:`WebPage` (``.page`` is the Playwright ``Page``; ``.problems()`` lists console
errors, page errors, CSP violations and failed requests; ``.screenshot(name)``),
:class:`FirefoxPage` (``goto``, ``wait``, ``fill``, ``click``, ``upload``, ``press``,
``evaluate``, ``url``, ``screenshot``, ``problems``), :func:`screenshot_path`
(``test-artifacts/screens/NAME.png``), and the selectors the UI promises
(:data:`SPACE_VIEW`, :data:`MESSAGE`, :data:`JOIN_NAME`, :data:`JOIN_SUBMIT`).

Browser tests are plain ``def`` tests (Playwright's sync API refuses to run inside an event
loop), in modules without async tests; they drive the CLI with ``SalonUser.run``/``.json``.
A Firefox flow, as proven against the app: ``ff = firefox(); ff.goto(link);
ff.fill(JOIN_NAME, "Bob"); ff.click(JOIN_SUBMIT); ff.wait(SPACE_VIEW);
ff.wait(MESSAGE, text="hi")`` (puppeteer selectors also take ``::-p-text(...)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # conftest imports this module: import it back only when needed
    from conftest import SalonServer

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
ARTIFACTS = ROOT / "test-artifacts"
SCREENS = ARTIFACTS / "screens"
CHROMIUM = os.environ.get("SALON_CHROMIUM", "/usr/bin/chromium")
FIREFOX = os.environ.get("SALON_FIREFOX", "/usr/bin/firefox-esr")
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# The stable hooks the UI (web/src/ui) promises the tests and the benchmark.
SPACE_VIEW = "[data-testid=space-view]"
MESSAGE = "[data-testid=message]"
JOIN_NAME = "[data-testid=join-name]"
JOIN_SUBMIT = "[data-testid=join-submit]"
SELFCHECK = "html[data-salon-selfcheck]"  # set by web/src/selfcheck.ts once crypto ran

# Before any page script: record CSP violations (both browsers fire this event).
WATCH_CSP = """
window.__salonCspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__salonCspViolations.push(event.effectiveDirective + " " + event.blockedURI);
});
"""


def screenshot_path(name: str) -> Path:
    """Where a screenshot called ``name`` goes (test-artifacts/screens/NAME.png)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    return SCREENS / f"{name}.png"


def build_web(outdir: Path) -> Path:
    """The real build into ``outdir`` (npm ci first if web/node_modules is missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to build the web app")
    if not (WEB / "node_modules").is_dir():
        _check(["npm", "ci", "--no-audit", "--no-fund"], WEB)
    _check(["node", "scripts/build.mjs", "--outdir", str(outdir)], WEB)
    return outdir


def _check(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def web_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under pytest-xdist each worker is a session of its own, with its own base temp directory
    # inside the run's: the first worker to get here builds into the run's directory, the
    # others wait on the lock and use that build.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, built = root / "web-dist", root / "web-dist.built"
    with open(root / "web-dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(out, ignore_errors=True)
            build_web(out)
            built.touch()
    return out


@pytest.fixture(scope="module")
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, web_dist: Path
) -> Iterator[SalonServer]:
    config: dict[str, dict[str, Any]] = {
        section: dict(values)
        for section, values in (getattr(request.module, "SERVER_CONFIG", None) or {}).items()
    }
    config.setdefault("server", {})["web_dir"] = str(web_dist)
    from conftest import SalonServer

    srv = SalonServer(tmp_path_factory.mktemp("web-server"), config)
    srv.start()
    yield srv
    srv.stop()


# -- Chromium (Playwright) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_ARGS)
    # A module's FAKE_CAMERA_YUV: every page's fake camera shows that one colour (a Y4M).
    if (yuv := getattr(request.module, "FAKE_CAMERA_YUV", None)) is not None:
        from media_page_support import write_y4m

        y4m = write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", yuv, 320, 240)
        args.append(f"--use-file-for-fake-video-capture={y4m}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


class WebPage:
    """A Playwright page plus what went wrong on it (console errors, CSP violations, ...)."""

    def __init__(self, page: Any, label: str) -> None:
        self.page = page
        self.label = label
        self.messages: list[str] = []
        self.failed_requests: list[str] = []
        page.add_init_script(WATCH_CSP)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Any) -> None:
        # A navigation cancels what the page was loading (net::ERR_ABORTED): not a problem.
        if "ERR_ABORTED" not in str(request.failure):
            self.failed_requests.append(f"{request.url} {request.failure}")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.messages.append(f"{message.type}: {message.text}")

    def csp_violations(self) -> list[str]:
        try:
            return list(self.page.evaluate("window.__salonCspViolations ?? []"))
        except Exception:  # a page mid-navigation: nothing to read yet
            return []

    def problems(self) -> list[str]:
        """Console errors and warnings, page errors, CSP violations, failed requests."""
        return [
            *self.messages,
            *(f"csp: {v}" for v in self.csp_violations()),
            *(f"request failed: {r}" for r in self.failed_requests),
        ]

    def screenshot(self, name: str) -> Path:
        path = screenshot_path(f"{name}-chromium-{self.label}")
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[..., WebPage]]:
    contexts: list[Any] = []

    def make(theme: str = "light", phone: bool = False) -> WebPage:
        context = chromium.new_context(
            color_scheme=theme,
            viewport=PHONE if phone else DESKTOP,
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=2 if phone else 1,
        )
        contexts.append(context)
        return WebPage(context.new_page(), f"{theme}{'-phone' if phone else ''}")

    yield make
    for context in contexts:
        context.close()


# -- Firefox ESR (puppeteer-core over WebDriver BiDi) -----------------------------------------


class FirefoxError(AssertionError):
    pass


class FirefoxPage:
    """One headless firefox-esr page, driven by web/scripts/firefox_driver.mjs (JSON lines)."""

    def __init__(self, theme: str = "light", phone: bool = False) -> None:
        if not Path(FIREFOX).exists():
            pytest.fail(f"{FIREFOX} is missing (.ci/run installs it: apt-get install firefox-esr)")
        self.label = f"{theme}{'-phone' if phone else ''}"
        env = {**os.environ, "SALON_FIREFOX": FIREFOX, "SALON_FIREFOX_THEME": theme}
        self.proc = subprocess.Popen(
            ["node", "scripts/firefox_driver.mjs"],
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: node and the Firefox it started
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next = 0
        try:
            ready = self._line(60.0)
            if not json.loads(ready).get("ready"):
                raise FirefoxError(f"firefox driver did not start: {ready}")
            self.version = json.loads(ready).get("version", "")
            size = PHONE if phone else DESKTOP
            self.viewport(size["width"], size["height"])
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise FirefoxError(f"firefox driver silent for {timeout} s") from None
        if line is None:
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise FirefoxError(f"firefox driver exited: {stderr[-2000:]}")
        return line

    def command(self, op: str, timeout: float = 15.0, **args: Any) -> Any:
        self._next += 1
        assert self.proc.stdin is not None
        timeout_ms = int(timeout * 1000)
        self.proc.stdin.write(
            json.dumps({"id": self._next, "op": op, "timeout": timeout_ms, **args})
        )
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line(timeout + 15.0))
        if answer.get("id") != self._next:
            raise FirefoxError(f"firefox driver answered out of turn: {answer}")
        if not answer["ok"]:
            raise FirefoxError(f"firefox {op} {args}: {answer['error']}")
        return answer["value"]

    def goto(self, url: str, timeout: float = 15.0) -> None:
        self.command("goto", timeout, url=url)

    def wait(self, selector: str, text: str | None = None, timeout: float = 15.0) -> None:
        """Until ``selector`` matches (and, with ``text``, one match contains it)."""
        extra = {} if text is None else {"text": text}
        self.command("wait", timeout, selector=selector, **extra)

    def fill(self, selector: str, value: str) -> None:
        self.command("fill", selector=selector, value=value)

    def click(self, selector: str) -> None:
        self.command("click", selector=selector)

    def upload(self, selector: str, *paths: Path | str) -> None:
        """Put files into an ``<input type=file>`` (it may be hidden)."""
        self.command("upload", selector=selector, paths=[str(p) for p in paths])

    def press(self, key: str) -> None:
        """A key press on the focused element, like ``Enter``."""
        self.command("press", key=key)

    def evaluate(self, expression: str, timeout: float = 15.0) -> Any:
        """The value of a JavaScript expression in the page (a Promise is awaited)."""
        return self.command("evaluate", timeout, expression=expression)

    def viewport(self, width: int, height: int) -> None:
        self.command("viewport", width=width, height=height)

    def url(self) -> str:
        return str(self.command("url"))

    def problems(self) -> list[str]:
        """Console errors and warnings, page errors and CSP violations so far."""
        log = self.command("log")
        found = [
            f"{m['type']}: {m['text']}"
            for m in log["messages"]
            if m["type"] in ("error", "warn", "warning", "pageerror")
        ]
        return found + [f"csp: {v}" for v in log["csp"]]

    def screenshot(self, name: str) -> Path:
        path = screenshot_path(f"{name}-firefox-{self.label}")
        self.command("screenshot", path=str(path))
        return path

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("close", timeout=10.0)
                self.proc.wait(timeout=20)
                self.kill()  # whatever of Firefox outlived the driver
            except (FirefoxError, OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        """End the driver and the Firefox it started (their process group) at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def firefox() -> Iterator[Callable[..., FirefoxPage]]:
    pages: list[FirefoxPage] = []

    def make(theme: str = "light", phone: bool = False) -> FirefoxPage:
        page = FirefoxPage(theme, phone)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()
