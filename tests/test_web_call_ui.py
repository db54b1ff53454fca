"""The call screens of the web app in Chromium (UX.md screen 8), on a real server.

The pre-join screen with the real (fake) camera and microphone: the preview plays, the
pickers list the devices, "join with my microphone off" / "camera off" are there, one Join
button; it keeps the look promises (44 px, names, no jargon, no sideways scroll) on a phone
and a desktop, light and dark. Each device failure has its own plain message (the browser's
own refusals, raised in the page by an init script: permission denied, device busy, no
device). Screenshots go to test-artifacts/screens/ (call-prejoin-*, call-denied-*).
"""

from __future__ import annotations

from typing import Any

import pytest
import test_web_look as look
from browser_support import JOIN_NAME, JOIN_SUBMIT, SPACE_VIEW, screenshot_path
from conftest import SalonServer

pytestmark = pytest.mark.timeout(240)

PREJOIN = "[data-testid=call-prejoin]"
JOIN_CALL = "[data-testid=call-join]"

# The browser refusing the camera (permission denied) and finding the microphone busy.
REFUSE = """
navigator.mediaDevices.getUserMedia = async (constraints) => {
  if (constraints.video) throw new DOMException("Permission denied", "NotAllowedError");
  throw new DOMException("Could not start audio source", "NotReadableError");
};
"""
# A computer with no camera and no microphone at all.
NOTHING = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("Requested device not found", "NotFoundError");
};
navigator.mediaDevices.enumerateDevices = async () => [];
"""

PLAYING = """() => {
  const v = document.querySelector("[data-testid=call-prejoin] video");
  return v !== null && !v.paused && v.readyState >= 2 && v.videoWidth > 0;
}"""


def shoot(page: Any, name: str, width: int, height: int, theme: str) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=theme)
    page.wait_for_timeout(300)  # let the colour transitions of the theme switch finish
    label = f"{theme}{'-phone' if width < 500 else ''}"
    page.screenshot(path=str(screenshot_path(f"{name}-chromium-{label}")), full_page=True)


def test_prejoin_preview_pickers_and_device_failures(
    web_server: SalonServer, module_user: Any, new_page: Any
) -> None:
    alice = module_user("alice")
    made = alice.json("space", "create", "Book club", "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "Thursday call", "--kind", "conference")

    web = new_page()
    page = web.page
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME)
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=30_000)
    page.click("nav.sidebar a:has-text('Thursday call')", timeout=30_000)
    page.wait_for_selector(PREJOIN)

    # The preview plays the (fake) camera; the pickers list the browser's devices.
    page.wait_for_function(PLAYING, timeout=15_000)
    assert page.locator("select").nth(0).locator("option").count() >= 1
    assert page.locator("select").nth(1).locator("option").count() >= 1
    assert page.is_enabled(JOIN_CALL)
    assert page.locator("[data-testid=join-muted]").count() == 1
    assert page.locator("[data-testid=join-camera-off]").count() == 1
    assert page.locator("[role=alert]").count() == 0
    assert "End-to-end encrypted" in page.inner_text(PREJOIN)
    # Camera off: the preview gives way to the avatar and says so.
    page.check("[data-testid=join-camera-off]")
    page.wait_for_selector("text=Your camera will be off")
    page.uncheck("[data-testid=join-camera-off]")
    page.wait_for_function(PLAYING, timeout=15_000)

    problems = look.audit(page, "call pre-join")
    for width, height, theme in [(1280, 800, "light"), (1280, 800, "dark"), (390, 844, "light"), (390, 844, "dark")]:
        shoot(page, "call-prejoin", width, height, theme)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="light")

    # Camera refused, microphone busy: each says so, with what to do; Join still works.
    page.add_init_script(REFUSE)
    page.reload()
    page.wait_for_selector("[data-testid=camera-problem]", timeout=30_000)
    camera = page.inner_text("[data-testid=camera-problem]")
    microphone = page.inner_text("[data-testid=microphone-problem]")
    assert "Permission to use your camera was denied" in camera and "try again" in camera
    assert "microphone is busy" in microphone
    assert page.is_checked("[data-testid=join-muted]") and page.is_checked("[data-testid=join-camera-off]")
    assert page.is_enabled(JOIN_CALL)
    assert page.locator("button:has-text('Try again')").count() == 1
    problems += look.audit(page, "call pre-join, devices refused")
    shoot(page, "call-denied", 1280, 800, "light")
    shoot(page, "call-denied", 390, 844, "dark")

    # No device at all.
    web2 = new_page(theme="dark", phone=True)
    page2 = web2.page
    page2.add_init_script(NOTHING)
    page2.goto(made["link"])
    page2.wait_for_selector(JOIN_NAME)
    page2.fill(JOIN_NAME, "Carol")
    page2.click(JOIN_SUBMIT)
    page2.wait_for_selector(SPACE_VIEW, timeout=30_000)
    page2.click("nav.sidebar a:has-text('Thursday call')", timeout=30_000)
    page2.wait_for_selector("[data-testid=camera-problem]", timeout=30_000)
    assert "No camera was found" in page2.inner_text("[data-testid=camera-problem]")
    assert "No microphone was found" in page2.inner_text("[data-testid=microphone-problem]")
    assert page2.locator("select >> nth=0").is_disabled()
    web2.screenshot("call-nodevice")

    assert problems == []
    assert web.problems() == [] and web2.problems() == []
