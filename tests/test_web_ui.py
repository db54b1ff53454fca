"""The web app's screens in Chromium beside a real CLI user on a real server (issue 9).

Bob, in the browser, joins from Alice's link; Alice (CLI) makes him a moderator and posts a
story. Bob makes an invite link (with its QR code) for Carol, sees Alice's story, and removes
Carol with the confirmation; Carol's page (a phone, dark) says she was removed. On the way:
the phone's sidebar-first layout, the back button, a reload keeping the screen, and the plain
messages of a used-up, revoked and damaged link. Screenshots go to test-artifacts/screens/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_support import JOIN_NAME, JOIN_SUBMIT, MESSAGE, SPACE_VIEW, WebPage
from conftest import SalonServer

pytestmark = pytest.mark.timeout(240)

SPACE = "Riverside"


def photo(path: Path) -> Path:
    import cv2

    image = np.zeros((600, 800, 3), np.uint8)
    image[:, :, 1] = np.linspace(60, 200, 800, dtype=np.uint8)[None, :]
    cv2.circle(image, (560, 200), 90, (240, 240, 250), -1)
    cv2.imwrite(str(path), image)
    return path


def join(web: WebPage, link: str, name: str) -> str:
    page = web.page
    page.goto(link)
    page.wait_for_selector(JOIN_NAME)
    assert "#" not in page.url  # the secret left the address bar before anything rendered
    page.fill(JOIN_NAME, name)
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    return str(page.url)


def test_moderator_screens_and_removal(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", SPACE, "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    alice.run("room", "create", space, "news", "--kind", "channel")

    bob = new_page()
    page = bob.page
    base = join(bob, made["link"], "Bob")
    assert re.search(r"/space/[^/]+$", base)
    bob.screenshot("ui-space")

    alice.run("role", space, "Bob", "moderator")
    picture = str(photo(tmp_path / "p.jpg"))
    alice.run("story", "post", space, "news", picture, "--caption", "Market day")

    # Invite: a link with its QR code, listed with its uses left.
    page.click("a[href$='/invite']", timeout=30_000)
    page.select_option("select >> nth=0", "5")
    page.click("button:has-text('Create link')")
    page.wait_for_selector("svg.qr", timeout=30_000)
    link = page.input_value("#invite-link")
    assert link.startswith(f"{web_server.url}/join/") and "#" in link
    bob.screenshot("ui-invite")
    page.click("button:has-text('Done')")
    page.wait_for_selector("text=5 of 5 uses left")

    # Channel: Alice's story in the row (unseen ring), the viewer, Esc closes it.
    page.click("nav.sidebar a:has-text('news')")
    page.wait_for_selector(".story-unseen img", timeout=30_000)
    assert "left" in page.inner_text(".stories")  # author and time left under each thumbnail
    bob.screenshot("ui-channel")
    page.click(".story-unseen")
    page.wait_for_selector(".viewer-stage img:not(.viewer-blur)", timeout=30_000)
    assert "Market day" in page.inner_text(".viewer")
    bob.screenshot("ui-story")
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")

    # Carol, on a phone in dark mode, joins with Bob's link: the sidebar is her first screen.
    carol = new_page(theme="dark", phone=True)
    cpage = carol.page
    carol_base = join(carol, link, "Carol")
    assert cpage.is_visible("nav.sidebar") and not cpage.is_visible(".space-main")
    cpage.click("nav.sidebar a:has-text('general')")
    cpage.wait_for_selector("textarea")
    assert not cpage.is_visible("nav.sidebar")  # the room is full-screen, with a back arrow
    cpage.reload()
    cpage.wait_for_selector("textarea", timeout=30_000)  # a reload keeps the screen
    cpage.go_back()
    cpage.wait_for_selector("nav.sidebar", timeout=30_000)
    assert cpage.url == carol_base
    cpage.go_forward()
    cpage.wait_for_selector("textarea", timeout=30_000)
    alice.run("rooms", space)  # the CLI shares the room key with the newcomers
    alice.run("send", space, "general", "Welcome, Carol")
    cpage.wait_for_selector(f"{MESSAGE}:has-text('Welcome, Carol')", timeout=30_000)
    alice.run("send", space, "general", "The door code is 4471", "--ttl", "1h")
    cpage.wait_for_selector(f"{MESSAGE}:has-text('door code') .countdown", timeout=30_000)
    assert "disappears in 1 h" in cpage.inner_text(f"{MESSAGE}:has-text('door code')")
    carol.screenshot("ui-chat")

    # Bob lets Carol post in the channel: her page shows its composer.
    page.click("a[href$='/members']")
    page.wait_for_selector("button[aria-label='Manage Carol']", timeout=30_000)
    page.click("button.fingerprint >> nth=0")  # what a fingerprint is for; Esc closes
    page.wait_for_selector("dialog:has-text('in person')")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog", state="detached")
    page.click("button[aria-label='Manage Carol']")
    page.click("dialog button:has-text('Let post in news')")
    page.wait_for_selector("text=Member · posts in news", timeout=30_000)
    cpage.go_back()
    cpage.click("nav.sidebar a:has-text('news')")
    cpage.wait_for_selector("text=Post a story", timeout=30_000)
    assert cpage.is_visible("textarea")

    # Bob removes Carol: the menu, a confirmation that says what happens.
    page.click("button[aria-label='Manage Carol']")
    page.click("dialog button:has-text('Remove from the space')")
    assert "will not be able to read anything new" in page.inner_text("dialog")
    bob.screenshot("ui-remove")
    page.click("dialog button:has-text('Remove')")
    page.wait_for_selector("button[aria-label='Manage Carol']", state="detached", timeout=30_000)
    cpage.wait_for_selector("text=You are no longer in", timeout=30_000)
    carol.screenshot("ui-removed")
    assert "Carol" not in alice.run("members", space).stdout

    assert bob.problems() == []
    assert carol.problems() == []


def test_link_errors_in_plain_words(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    alice = module_user("alice2")
    made = alice.json("space", "create", "Errors", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    once = alice.json("invite", "create", space, "--uses", "1", "--expires", "1d")["link"]
    revoked = alice.json("invite", "create", space, "--uses", "1", "--expires", "1d")
    alice.run("invite", "revoke", space, revoked["invite_id"])

    dave = new_page()
    join(dave, once, "Dave")

    cases = {
        "used-up": (once, "used as many times"),
        "revoked": (revoked["link"], "revoked"),
        "damaged": (once[:-6] + "AAAAAA", "damaged"),
        "incomplete": (once.split("#")[0], "incomplete"),
    }
    for name, (link, words) in cases.items():
        web = new_page(phone=name == "used-up")
        web.page.goto(link)
        web.page.wait_for_selector("text=This invitation can't be used", timeout=30_000)
        assert words in web.page.inner_text("main"), name
        assert "#" not in web.page.url
        web.screenshot(f"ui-link-{name}")
