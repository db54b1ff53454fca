"""The web app against a malicious participant, in Chromium on a real server (issue 9 red team).

Mallory joins from Alice's link (the web client's core in Node), names herself "Alice" with a
zero-width space, and floods the room with thousands of messages that carry HTML and script.
Bob's page must stay responsive, show the text as text (no script runs), and label Mallory
with her fingerprint so she does not pass for Alice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from browser_support import JOIN_NAME, JOIN_SUBMIT, MESSAGE, SPACE_VIEW
from conftest import SalonServer

from tests.test_web_chat import ChatNode

pytestmark = pytest.mark.timeout(300)

# The flood goes as fast as the server accepts it (its rate limits are raised for the test).
SERVER_CONFIG = {
    "limits": {
        "messages_per_second_per_member": 100000.0,
        "message_burst_per_member": 100000,
        "requests_per_second": 100000.0,
        "request_burst": 100000,
    }
}

FLOOD = 3000
SCRIPT = '<img src=x onerror="window.__pwned=1"><a href="javascript:window.__pwned=2">x</a>'

LONG_TASKS = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def test_flood_and_impersonation(web_server: SalonServer, module_user: Any, new_page: Any) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Harbour", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")

    bob = new_page()
    page = bob.page
    page.add_init_script(LONG_TASKS)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME)
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    page.click("nav.sidebar a:has-text('general')", timeout=30_000)
    page.wait_for_selector("textarea", timeout=30_000)

    mallory = ChatNode()
    try:
        mallory.ok("join", link=made["link"], name="Ali\u200bce")
        mallory.ok("wait_room", name="general")
        alice.run("read", space, "general")  # every CLI command seals room keys to newcomers
        alice.run("send", space, "general", "the real Alice is here")
        mallory.ok("send", room="general", text="I am Alice, send me the keys")
        page.wait_for_selector(f"{MESSAGE}:has-text('send me the keys')", timeout=30_000)

        # Mallory does not pass for Alice: her name carries her fingerprint, Alice's too.
        authors = page.locator(".message-author").all_inner_texts()
        assert any(a.startswith("Alice (") for a in authors), authors
        assert "Alice" not in authors and "Ali\u200bce" not in authors, authors
        bob.screenshot("redteam-names")

        # The flood, while Bob's page is open on the room.
        mallory.ok("flood", room="general", count=FLOOD, text=SCRIPT)
        start = time.monotonic()
        page.wait_for_selector(f"{MESSAGE}:has-text('{FLOOD - 1}')", timeout=120_000)
        shown_after = time.monotonic() - start
        # The page still answers: a click on the composer and typing work at once.
        t0 = time.monotonic()
        page.fill("textarea", "still here")
        typing = time.monotonic() - t0
        longest = max(page.evaluate("window.__long"), default=0)
        bob.screenshot("redteam-flood")
        print(f"flood of {FLOOD}: shown after {shown_after:.1f} s, longest task {longest:.0f} ms")
        # A reload: the whole backlog at once.
        page.reload()
        start = time.monotonic()
        page.wait_for_selector(f"{MESSAGE}:has-text('{FLOOD - 1}')", timeout=120_000)
        backlog = time.monotonic() - start
        t0 = time.monotonic()
        page.fill("textarea", "still here")
        typing_after = time.monotonic() - t0
        longest_after = max(page.evaluate("window.__long"), default=0)
        print(f"reload: backlog shown after {backlog:.1f} s, longest task {longest_after:.0f} ms")
        assert page.evaluate("window.__pwned") is None  # the markup stayed text
        assert SCRIPT in page.locator(MESSAGE).last.inner_text()
        froze = max(longest, longest_after)
        assert froze < 1000, f"the page froze for {froze:.0f} ms"
        assert max(typing, typing_after) < 1.0
        assert bob.problems() == []

        # The invite secret went nowhere: no request or WebSocket URL, no storage, not the DOM.
        secret = made["link"].split("#", 1)[1]
        assert urls and not [u for u in urls if secret in u or "#" in u], urls
        assert page.evaluate("document.cookie") == ""
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert secret not in page.content()
        assert "#" not in page.url
    finally:
        mallory.close()


def test_removed_while_the_page_was_closed(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    """Kicked while his page was closed, Bob's browser can only hear the server's word: the
    page says the server turns him away and that it could not confirm it; his keys stay."""
    alice = module_user("alice2")
    made = alice.json("space", "create", "Quay", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    bob = new_page()
    page = bob.page
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME)
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    space_url = page.url
    page.goto("about:blank")  # the app is closed
    alice.run("kick", space, "Bob")
    page.goto(space_url)
    page.wait_for_selector("text=You can't get into Quay anymore", timeout=30_000)
    assert "could not" in page.inner_text("main")
    bob.screenshot("redteam-removed-unconfirmed")
