"""What every screen of the web app promises a person (UX.md), checked in the page itself.

On a phone (390 px) and a desktop, light and dark: no sideways scrolling, every control at
least 44 px in both directions (a radio counts by its label), every control named for a screen
reader, and none of the words the app must not say (epoch, rekey, roster, SFU, SFrame) in the
text on screen. Bob (browser) joins Alice's (CLI) space with a 40-character name beside her;
the audit runs on the home, join, space, chat (with the timer menu open), channel, members
(with the member menu), invite and settings screens.
"""

from __future__ import annotations

from typing import Any

import pytest
from browser_support import JOIN_NAME, JOIN_SUBMIT, MESSAGE, SPACE_VIEW
from conftest import SalonServer

pytestmark = pytest.mark.timeout(240)

LONG = "Maximilian Alexander Featherstonehaugh-W"  # 40 characters

AUDIT = r"""() => {
  const out = [];
  const wide = document.scrollingElement.scrollWidth;
  if (wide > innerWidth + 1) out.push(`scrolls sideways: ${wide} > ${innerWidth}`);
  const top = document.querySelector("dialog[open]") ?? document;
  const controls = "a[href], button, input, select, textarea, [tabindex]";
  for (const el of top.querySelectorAll(controls)) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (el.matches("input[type=file], .visually-hidden, .messages, [tabindex='-1']")) continue;
    const said = (el.getAttribute("aria-label") ?? el.textContent ?? "").trim();
    const name = `${el.tagName.toLowerCase()}.${el.className} '${said.slice(0, 30)}'`;
    const label = el.closest("label")?.getBoundingClientRect() ?? r;
    const box = el.matches("input[type=radio], input[type=checkbox]") ? label : r;
    const [w, h] = [Math.round(box.width), Math.round(box.height)];
    if (h < 44 || w < 44) out.push(`small: ${name} ${w}x${h}`);
    if (r.right > innerWidth + 1) out.push(`past the right edge: ${name}`);
    const named = said || el.labels?.length || el.getAttribute("title")
      || el.getAttribute("aria-labelledby");
    if (el.matches("button, a, input, select, textarea") && !named) out.push(`no name: ${name}`);
  }
  const jargon = document.body.innerText.match(/\b(epochs?|rekey\w*|rosters?|SFUs?|SFrame)\b/i);
  if (jargon) out.push(`says "${jargon[0]}"`);
  return out;
}"""

VIEWS = [(390, 844, "light"), (390, 844, "dark"), (1280, 800, "dark")]


def audit(page: Any, screen: str) -> list[str]:
    found: list[str] = []
    for width, height, theme in VIEWS:
        page.set_viewport_size({"width": width, "height": height})
        page.emulate_media(color_scheme=theme)
        found += [f"{screen} at {width} px ({theme}): {p}" for p in page.evaluate(AUDIT)]
    page.set_viewport_size({"width": 1280, "height": 800})
    return found


def test_every_screen_keeps_the_promises(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Garden", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    alice.run("room", "create", space, "news", "--kind", "channel")
    module_user("max").run("join", made["link"], "--as", LONG)

    web = new_page()
    page = web.page
    problems: list[str] = []
    page.goto(web_server.url + "/")
    page.wait_for_selector("text=No spaces yet")
    problems += audit(page, "home")
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME)
    problems += audit(page, "join")
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    alice.run("role", space, "Bob", "moderator")
    alice.run("rooms", space)
    alice.run("send", space, "general", "https://example.org/" + "x" * 300)
    problems += audit(page, "space")

    page.click("nav.sidebar a:has-text('general')")
    page.wait_for_selector(f"{MESSAGE}:has-text('example.org')", timeout=30_000)
    page.fill("textarea", "hello from the page")
    page.keyboard.press("Enter")  # Enter sends
    page.wait_for_selector(f"{MESSAGE}:has-text('hello from the page')", timeout=30_000)
    page.click(".timer-button")
    page.wait_for_selector(".timer-menu")
    problems += audit(page, "chat, timer menu open")
    page.keyboard.press("Escape")  # Esc closes
    page.wait_for_selector(".timer-menu", state="detached")

    page.click("nav.sidebar a:has-text('news')")
    page.wait_for_selector("text=Post a story", timeout=30_000)
    problems += audit(page, "channel")
    page.click("a[href$='/members']")
    page.wait_for_selector(f"button[aria-label='Manage {LONG}']", timeout=30_000)
    problems += audit(page, "members")
    page.click(f"button[aria-label='Manage {LONG}']")
    page.wait_for_selector("dialog")
    problems += audit(page, "member menu")
    page.keyboard.press("Escape")
    page.click("a[href$='/invite']")
    page.wait_for_selector("button:has-text('Create link')")
    problems += audit(page, "invite")
    page.click("button:has-text('Create link')")
    page.wait_for_selector("svg.qr", timeout=30_000)
    problems += audit(page, "invite link")
    page.click("a[href$='/settings']")
    page.wait_for_selector("text=Passphrase for this browser")
    problems += audit(page, "settings")

    assert problems == []
    assert web.problems() == []
