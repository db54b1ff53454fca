"""Bob, in Debian's firefox-esr, joins from the invite link alone and chats with Alice (CLI).

The issue's minimum for Firefox: join (the space's name and Alice as inviter first) + chat both
ways + each sees the other among the members, with a real server, the real CLI (``salon read
--follow`` running) and the real browser (puppeteer-core over WebDriver BiDi).
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest
from browser_support import JOIN_NAME, JOIN_SUBMIT, MESSAGE, SPACE_VIEW, FirefoxPage
from conftest import SALON, SalonServer

pytestmark = pytest.mark.timeout(240)

# The UI's data-testid hooks, or (until web/src/ui carries them all) the same elements found by
# their markup: a CSS selector list matches either.
NAME_FIELD = f"{JOIN_NAME}, form.join input[autocomplete=nickname]"
JOIN_BUTTON = f"{JOIN_SUBMIT}, form.join button[type=submit]"
SPACE = f"{SPACE_VIEW}, nav.sidebar"
MESSAGES = f"{MESSAGE}, li"


class Follow:
    """``salon read SPACE ROOM --follow`` running; the lines it printed so far."""

    def __init__(self, user: Any, space: str, room: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(SALON), "read", space, room, "--follow", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=user.env(),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"salon read --follow never printed {text!r}: {self.lines}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_bob_joins_in_firefox_and_chats_with_the_cli(
    web_server: SalonServer, module_user: Any, firefox: Any
):
    alice = module_user("alice")
    made = alice.json("space", "create", "Fox Club", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")

    bob: FirefoxPage = firefox()
    bob.goto(made["link"])
    bob.wait("h1", text="Fox Club")
    bob.wait("form.join", text="Invited by Alice")
    assert "#" not in bob.url()
    bob.screenshot("join")
    bob.fill(NAME_FIELD, "Bob")
    bob.click(JOIN_BUTTON)
    bob.wait(SPACE, timeout=30)
    bob.click("a ::-p-text(general)")
    bob.wait("textarea")

    follow = Follow(alice, space, "general")
    try:
        alice.run("send", space, "general", "hello Bob, from the terminal")
        bob.wait(MESSAGES, text="hello Bob, from the terminal")
        bob.fill("textarea", "hello Alice, from Firefox")
        bob.press("Enter")
        line = follow.wait_for("hello Alice, from Firefox")
        assert "Bob" in line
    finally:
        follow.stop()
    members = alice.run("members", space).stdout
    assert "Bob" in members
    bob.screenshot("chat")
    bob.click("a[href$='/members']")  # and Bob sees Alice, the owner, beside himself
    bob.wait(".member", text="Alice")
    rows = bob.evaluate("[...document.querySelectorAll('.member')].map((li) => li.innerText)")
    assert any("Alice" in row and "Owner" in row for row in rows), rows
    assert any("Bob" in row and "(you)" in row for row in rows), rows
    bob.screenshot("members")
    assert bob.problems() == []
