"""The web app's shell in real browsers, under the real server's CSP (issue 9).

Chromium (Playwright, /usr/bin/chromium) and Firefox ESR (puppeteer-core over WebDriver BiDi,
/usr/bin/firefox-esr): the page loads with no console error and no CSP violation; its crypto
runs (libsodium's WebAssembly under 'wasm-unsafe-eval', WebCrypto Ed25519 and X25519); a
WebSocket to the same origin opens under ``connect-src 'self'``; it shows the bundle hash it
was built with; nothing else (eval, a foreign origin) is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browser_support import SELFCHECK, FirefoxPage, WebPage
from conftest import SalonServer

pytestmark = pytest.mark.timeout(180)

# Each a JavaScript expression run in the page (a Promise is awaited).
OPEN_WEBSOCKET = """new Promise((resolve) => {
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onmessage = (event) => { resolve("message " + event.data.byteLength); ws.close(); };
  ws.onerror = () => resolve("error");
})"""
FOREIGN_FETCH = """fetch("http://127.0.0.2:9/").then(() => "allowed", () => "blocked")"""
BUNDLE_META = """document.querySelector('meta[name="salon-bundle"]')?.content ?? null"""
SELFCHECK_STATE = """[document.documentElement.dataset.salonSelfcheck,
  document.documentElement.dataset.salonSelfcheckError ?? null]"""


def bundle_of(web_dist: Path) -> str:
    return str(json.loads((web_dist / "manifest.json").read_text())["bundle"])


@pytest.mark.parametrize(("theme", "phone"), [("light", False), ("dark", False), ("light", True)])
def test_shell_under_csp_chromium(
    web_server: SalonServer, web_dist: Path, new_page: Any, theme: str, phone: bool
):
    web: WebPage = new_page(theme=theme, phone=phone)
    page = web.page
    page.goto(f"{web_server.url}/join/abcdefghijkl")
    page.wait_for_selector(SELFCHECK, state="attached")
    assert page.evaluate(SELFCHECK_STATE) == ["ok", None]
    assert page.evaluate(BUNDLE_META) == bundle_of(web_dist)
    assert page.evaluate(OPEN_WEBSOCKET).startswith("message ")  # the server's challenge
    web.screenshot("shell")
    assert web.problems() == []
    # The CSP holds: no request to another origin.
    assert page.evaluate(FOREIGN_FETCH) == "blocked"
    assert any("connect-src" in v for v in web.csp_violations())


def test_shell_under_csp_firefox(web_server: SalonServer, web_dist: Path, firefox: Any):
    page: FirefoxPage = firefox()
    assert page.version.startswith("firefox/")
    page.goto(f"{web_server.url}/join/abcdefghijkl")
    page.wait(SELFCHECK)
    assert page.evaluate(SELFCHECK_STATE) == ["ok", None]
    assert page.evaluate(BUNDLE_META) == bundle_of(web_dist)
    assert page.evaluate(OPEN_WEBSOCKET).startswith("message ")
    page.screenshot("shell")
    assert page.problems() == []
    assert page.evaluate(FOREIGN_FETCH) == "blocked"
    assert any("connect-src" in p for p in page.problems())


def test_shell_on_a_phone_in_dark_firefox(web_server: SalonServer, firefox: Any):
    page: FirefoxPage = firefox(theme="dark", phone=True)
    page.goto(f"{web_server.url}/")
    page.wait(SELFCHECK)
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") is True
    assert page.evaluate("innerWidth") == 390
    page.screenshot("shell")
    assert page.problems() == []


@pytest.fixture(scope="module")
def invite(web_server: SalonServer, module_user: Any) -> dict[str, str]:
    """Alice (CLI) made a space on the web server; its invite link (25 uses)."""
    alice = module_user("alice")
    made = alice.json("space", "create", "Shell Club", "--server", web_server.url, "--as", "Alice")
    return {"link": made["link"], "name": "Shell Club"}


def test_invite_link_previews_over_the_websocket_chromium(invite: dict[str, str], new_page: Any):
    # The app itself connects (connect-src 'self'), fetches the preview and shows the space's
    # name; the secret has left the address bar.
    web: WebPage = new_page()
    web.page.goto(invite["link"])
    web.page.wait_for_selector(f"h1:has-text('{invite['name']}')")
    assert "#" not in web.page.url and web.page.evaluate("location.hash") == ""
    web.screenshot("join-preview")
    assert web.problems() == []


def test_invite_link_previews_over_the_websocket_firefox(invite: dict[str, str], firefox: Any):
    page: FirefoxPage = firefox()
    page.goto(invite["link"])
    page.wait("h1", text=invite["name"])
    assert "#" not in page.url() and page.evaluate("location.hash") == ""
    page.screenshot("join-preview")
    assert page.problems() == []
