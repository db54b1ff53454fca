"""Issue 9's browser end-to-end flow, step by step, in real Chromium beside real CLI users.

A real ``salon serve`` (web app built by the real build), real ``salon`` CLI processes, and
Bob in Chromium who only ever has the links he is sent:

1. Alice (CLI) creates a space and a link; Bob opens it, sees the space's name and Alice as
   inviter, joins; each sees the other among the members (page list / ``salon members``).
2. Chat both ways: a running ``salon read --follow`` prints Bob's page message; Alice's
   ``salon send`` appears on Bob's page.
3. Bob's message in a room whose messages live one minute vanishes from his page and from
   ``salon read`` (the expiry sweep runs every second here). The minute runs while steps 4-7
   go on; the check that it is gone comes after them, bounded to 75 s after sending.
4. Alice posts a story from the CLI; Bob sees it in the channel's stories row and opens it.
5. Bob posts a JPEG carrying an EXIF GPS block from the page (it shows in his row); Alice's
   ``salon story get`` file has no APP1/Exif segment, none of the GPS bytes, decodes, and is
   at most 1920 px long (its thumbnail at most 320 px, clean too).
6. Bob, made a moderator by Alice, makes an invite link in the page (uses, expiry, role; QR
   code) that CLI Carol joins with; revokes another link (a CLI join with it fails as
   revoked); creates a room from the page that the CLI lists and Carol (CLI) writes in.
7. Bob renames himself in the page; ``salon members`` shows the new name.
8. Alice kicks Bob; his page says he was removed; Alice's next message never shows on it,
   not even after a reload, and the server's tables show why: it is sealed under a newer
   key epoch than any key envelope ever addressed to Bob.
9. A used-up link shows its error in plain words.
10. Bob in a fresh browser joins two spaces from two links; home lists both; the two
    memberships share no identifier (Alice's CLI sees different fingerprints for him).

Each main screen is photographed on a desktop (light) and a phone (dark) into
test-artifacts/screens/e2e-*.png.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_support import (
    DESKTOP,
    JOIN_NAME,
    JOIN_SUBMIT,
    MESSAGE,
    PHONE,
    SPACE_VIEW,
    WebPage,
    screenshot_path,
)
from conftest import SalonServer
from support import until_sync
from test_web_firefox_chat import Follow

pytestmark = pytest.mark.timeout(300)

# Expired messages leave the server within a second (default: every 5 s).
SERVER_CONFIG = {"limits": {"expiry_sweep_seconds": 1.0}}

SPACE = "Town hall"
WAIT = 30_000  # ms, Playwright's waits
GPS_MARK = b"SALON-GPS 48.8584N 2.2945E"


# -- helpers -----------------------------------------------------------------------------------


def poll(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it returns something truthy (and return that)."""
    return until_sync(condition, what, timeout, interval=0.1)


def shots(web: WebPage, name: str) -> None:
    """``name`` on a desktop in light mode and on a phone (390 px) in dark mode. The switch of
    colour scheme starts the buttons' colour transitions: the pictures show where they end."""
    page = web.page
    for variant, size in (("desktop-light", DESKTOP), ("phone-dark", PHONE)):
        if variant == "phone-dark":
            page.emulate_media(color_scheme="dark")
        # A panel scrolls inside the page (full_page sees only the page): a viewport tall
        # enough for the panel's whole content shows all of it.
        page.set_viewport_size(size)
        height = page.evaluate(TALLEST)
        page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
        path = str(screenshot_path(f"e2e-{name}-{variant}"))
        page.screenshot(path=path, full_page=True, animations="disabled")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")


# The height the page would need for its scrolled panels to show whole (none: the viewport's).
TALLEST = """
Math.ceil(Math.max(window.innerHeight, ...[...document.querySelectorAll(".panel-scroll")]
  .map((el) => window.innerHeight + el.scrollHeight - el.clientHeight)))
"""


def photo_with_gps(path: Path, width: int = 2400, height: int = 1600) -> Path:
    """A JPEG (OpenCV) with a hand-built APP1 Exif segment holding a GPS IFD right after SOI."""
    import cv2

    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.linspace(40, 220, width, dtype=np.uint8)[None, :]
    image[:, :, 2] = np.linspace(200, 60, height, dtype=np.uint8)[:, None]
    cv2.circle(image, (width // 3, height // 2), height // 4, (250, 250, 250), -1)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg = encoded.tobytes()
    assert jpeg[:2] == b"\xff\xd8"
    path.write_bytes(jpeg[:2] + exif_app1() + jpeg[2:])
    return path


def exif_app1() -> bytes:
    """APP1 "Exif": a little-endian TIFF, IFD0 → GPS IFD (LatitudeRef N, Latitude 48°51'30.24",
    LongitudeRef E, Longitude 2°17'40.2", AreaInformation = GPS_MARK)."""

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")

    def rationals(*pairs: tuple[int, int]) -> bytes:
        return b"".join(struct.pack("<II", n, d) for n, d in pairs)

    ifd0_at = 8
    ifd0_size = 2 + 12 + 4
    gps_at = ifd0_at + ifd0_size
    gps_entries = 5
    data_at = gps_at + 2 + 12 * gps_entries + 4
    lat = rationals((48, 1), (51, 1), (3024, 100))
    lon = rationals((2, 1), (17, 1), (402, 10))
    lat_at, lon_at, mark_at = data_at, data_at + len(lat), data_at + len(lat) + len(lon)
    area = b"ASCII\0\0\0" + GPS_MARK
    tiff = b"II*\0" + struct.pack("<I", ifd0_at)
    tiff += struct.pack("<H", 1) + entry(0x8825, 4, 1, struct.pack("<I", gps_at)) + b"\0" * 4
    tiff += struct.pack("<H", gps_entries)
    tiff += entry(0x0001, 2, 2, b"N\0")
    tiff += entry(0x0002, 5, 3, struct.pack("<I", lat_at))
    tiff += entry(0x0003, 2, 2, b"E\0")
    tiff += entry(0x0004, 5, 3, struct.pack("<I", lon_at))
    tiff += entry(0x001C, 7, len(area), struct.pack("<I", mark_at))
    tiff += b"\0" * 4
    assert len(tiff) == data_at
    tiff += lat + lon + area
    body = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def app1_segments(jpeg: bytes) -> list[bytes]:
    """The APP1 segments of a JPEG (walks the markers up to the start of scan)."""
    found, at = [], 2
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF:
        marker = jpeg[at + 1]
        if marker == 0xDA:  # start of scan: no metadata after this
            break
        length = struct.unpack(">H", jpeg[at + 2 : at + 4])[0]
        if marker == 0xE1:
            found.append(jpeg[at + 4 : at + 2 + length])
        at += 2 + length
    return found


def plain_photo(path: Path) -> Path:
    import cv2

    image = np.zeros((600, 800, 3), np.uint8)
    image[:, :, 1] = np.linspace(60, 200, 800, dtype=np.uint8)[None, :]
    cv2.circle(image, (560, 200), 90, (240, 240, 250), -1)
    cv2.imwrite(str(path), image)
    return path


def join(web: WebPage, link: str, name: str, screens: str | None = None) -> str:
    """Open ``link``, check the secret left the address bar, join as ``name``."""
    page = web.page
    page.goto(link)
    page.wait_for_selector(JOIN_NAME, timeout=WAIT)
    assert "#" not in page.url
    if screens is not None:
        shots(web, screens)
    page.fill(JOIN_NAME, name)
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=WAIT)
    return str(page.url)


def member_names(user: Any, space: str) -> dict[str, dict[str, str]]:
    return {m["display_name"]: m for m in user.json("members", space)}


def read_texts(user: Any, space: str, room: str) -> list[str]:
    return [m["text"] for m in user.json("read", space, room)]


def stored(db_path: Path, query: str, *args: Any) -> list[Any]:
    """Rows of the server's SQLite file, read-only (committed WAL contents included)."""
    import sqlite3

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


# -- the flow ----------------------------------------------------------------------------------


def test_issue_flow_cli_and_chromium(
    web_server: SalonServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice, carol, dave = module_user("alice"), module_user("carol"), module_user("dave")
    made = alice.json("space", "create", SPACE, "--server", web_server.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")

    # 1. Bob opens Alice's link: the space's name and Alice as inviter, first; then he joins.
    bob = new_page()
    page = bob.page
    page.goto(made["link"])
    page.wait_for_selector(JOIN_NAME, timeout=WAIT)
    assert "#" not in page.url  # the secret left the address bar
    assert page.inner_text("h1") == SPACE
    assert "Invited by Alice" in page.inner_text("form.join")
    shots(bob, "join")
    page.fill(JOIN_NAME, "Bob")
    page.click(JOIN_SUBMIT)
    page.wait_for_selector(SPACE_VIEW, timeout=WAIT)
    base = page.url
    assert re.search(r"/space/[^/]+$", base)
    shots(bob, "space")
    page.click("a[href$='/members']")
    page.wait_for_selector(".member:has-text('Alice')", timeout=WAIT)
    assert "Owner" in page.inner_text(".member:has-text('Alice')")
    assert "(you)" in page.inner_text(".member:has-text('Bob')")
    assert poll(lambda: "Bob" in member_names(alice, space), "Bob in salon members")

    # 2. Chat both ways: the page ↔ a running `salon read --follow`.
    page.click("nav.sidebar a:has-text('general')")
    page.wait_for_selector("textarea", timeout=WAIT)
    follow = Follow(alice, space, "general")
    try:
        alice.run("send", space, "general", "Hello Bob, from the terminal")
        page.wait_for_selector(f"{MESSAGE}:has-text('Hello Bob, from the terminal')", timeout=WAIT)
        assert "Alice" in page.inner_text(f"{MESSAGE}:has-text('Hello Bob')")
        page.fill("textarea", "Hello Alice, from the browser")
        page.keyboard.press("Enter")
        line = follow.wait_for("Hello Alice, from the browser", timeout=30)
        assert "Bob" in line
    finally:
        follow.stop()
    page.wait_for_selector(f"{MESSAGE}:has-text('from the browser'):not(.message-pending)")
    shots(bob, "chat")

    # 3. A room whose messages live one minute (CLI --ttl 1m); Bob writes there from the page.
    alice.run("room", "create", space, "minute", "--kind", "chat", "--ttl", "1m")
    page.click("nav.sidebar a:has-text('minute')", timeout=WAIT)
    page.wait_for_selector("text=Messages in this room disappear after", timeout=WAIT)
    page.fill("textarea", "This vanishes in a minute")
    sent_at = time.monotonic()
    page.keyboard.press("Enter")
    vanishing = f"{MESSAGE}:has-text('This vanishes in a minute')"
    page.wait_for_selector(f"{vanishing} .countdown", timeout=WAIT)
    assert "disappears in" in page.inner_text(vanishing)
    poll(lambda: "This vanishes in a minute" in read_texts(alice, space, "minute"), "salon read")
    shots(bob, "chat-disappearing")
    # (The minute runs on while steps 4 to 7 happen; checked after step 7.)

    # 4. Alice posts a story from the CLI; Bob sees it in the channel's row and opens it.
    alice.run("room", "create", space, "news", "--kind", "channel")
    picture = str(plain_photo(tmp_path / "market.jpg"))
    alice.run("story", "post", space, "news", picture, "--caption", "Market day")
    page.click("nav.sidebar a:has-text('news')", timeout=WAIT)
    page.wait_for_selector(".story-unseen img", timeout=WAIT)
    thumb = page.get_attribute(".stories .story-thumb:has(.story-unseen)", "aria-label") or ""
    assert "Story by Alice: Market day" in thumb
    assert "Alice" in page.inner_text(".stories")
    shots(bob, "channel")
    page.click(".story-unseen")
    page.wait_for_selector(".viewer-stage img:not(.viewer-blur)", timeout=WAIT)
    assert "Market day" in page.inner_text(".viewer-caption")
    assert "Alice" in page.inner_text(".viewer-author")
    shots(bob, "story-viewer")
    page.keyboard.press("Escape")
    page.wait_for_selector(".viewer", state="detached")

    # 5. Bob (allowed to post in news) posts a JPEG with EXIF GPS from the page.
    alice.run("room", "grant", space, "news", "Bob")
    page.wait_for_selector("text=Post a story", timeout=WAIT)
    source = photo_with_gps(tmp_path / "gps.jpg")
    assert GPS_MARK in source.read_bytes() and app1_segments(source.read_bytes())
    page.click("button:has-text('Post a story')")
    page.set_input_files("dialog input[type=file]", str(source))
    page.wait_for_selector("dialog img.story-preview", timeout=WAIT)
    page.fill("dialog input:not([type=file])", "From the park")
    shots(bob, "story-post")
    page.click("dialog button[type=submit]")
    page.wait_for_selector("dialog", state="detached", timeout=WAIT)
    page.wait_for_selector(".story-thumb[aria-label^='Story by Bob: From the park']")
    stories = poll(
        lambda: [s for s in alice.json("story", "list", space, "news") if s["author"] == "Bob"],
        "Bob's story in salon story list",
    )
    assert stories[0]["caption"] == "From the park"
    got = alice.json(
        "story", "get", space, stories[0]["story_id"], "--out", str(tmp_path / "bob.jpg")
    )
    data = Path(got["out"]).read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert app1_segments(data) == []  # no Exif, no XMP
    assert b"Exif" not in data and GPS_MARK not in data and b"SALON-GPS" not in data
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert max(decoded.shape[:2]) <= 1920 and decoded.shape[1] > decoded.shape[0]
    thumb_file = alice.json(
        "story",
        "get",
        space,
        stories[0]["story_id"],
        "--thumbnail",
        "--out",
        str(tmp_path / "bob-thumb.jpg"),
    )["out"]
    thumb_data = Path(thumb_file).read_bytes()
    small = cv2.imdecode(np.frombuffer(thumb_data, np.uint8), cv2.IMREAD_COLOR)
    assert small is not None and max(small.shape[:2]) <= 320
    assert GPS_MARK not in thumb_data and app1_segments(thumb_data) == []

    # 6. Bob, a moderator now, makes links in the page: one for Carol, one he revokes; a room.
    alice.run("role", space, "Bob", "moderator")
    page.click("a[href$='/invite']", timeout=WAIT)
    page.select_option("select >> nth=0", "5")
    page.select_option("select >> nth=1", str(7 * 86_400))
    page.select_option("select >> nth=2", "member")
    page.click("button:has-text('Create link')")
    page.wait_for_selector("svg.qr", timeout=WAIT)
    carol_link = page.input_value("#invite-link")
    assert carol_link.startswith(f"{web_server.url}/join/") and "#" in carol_link
    shots(bob, "invite-qr")
    page.click("button:has-text('Done')")
    page.wait_for_selector("text=5 of 5 uses left", timeout=WAIT)
    made_id = carol_link.split("/join/")[1].split("#")[0]
    listed = {i["invite_id"]: i for i in alice.json("invite", "list", space)}[made_id]
    assert (listed["uses_left"], listed["role"]) == (5, "member")
    expires = datetime.fromisoformat(listed["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 7 * 86_400)) < 600  # a week, as picked
    joined = carol.json("join", carol_link, "--as", "Carol")
    assert joined["space_id"] == space
    page.wait_for_selector("text=4 of 5 uses left", timeout=WAIT)

    page.select_option("select >> nth=0", "1")
    page.click("button:has-text('Create link')")
    page.wait_for_selector("svg.qr", timeout=WAIT)
    revoked_link = page.input_value("#invite-link")
    page.click("button:has-text('Done')")
    page.wait_for_selector("text=1 of 1 use left", timeout=WAIT)
    shots(bob, "invite-list")
    page.click(".invite-item:has-text('1 of 1 use left') button:has-text('Revoke')")
    page.click("dialog button:has-text('Revoke')")
    page.wait_for_selector("text=1 of 1 use left", state="detached", timeout=WAIT)
    assert "revoked" in dave.fail("join", revoked_link, "--as", "Dave").lower()

    page.click("button:has-text('New room')")
    page.fill("dialog input:not([type=radio])", "garden")
    page.check("dialog input[value=chat]")
    page.click("dialog button[type=submit]")
    page.wait_for_selector("h1:has-text('garden')", timeout=WAIT)
    poll(lambda: "garden" in [r["name"] for r in alice.json("rooms", space)], "garden in rooms")
    poll(lambda: "garden" in [r["name"] for r in carol.json("rooms", space)], "Carol sees garden")
    carol.run("send", space, "garden", "Carol, in the new garden room")  # keys from the page
    page.wait_for_selector(f"{MESSAGE}:has-text('Carol, in the new garden room')", timeout=WAIT)
    assert "Carol, in the new garden room" in read_texts(alice, space, "garden")

    # 7. Bob renames himself in the page; the CLI's members list follows.
    page.click("a[href$='/settings']")
    page.fill("form.card input >> nth=0", "Bobby")
    page.click("button:has-text('Save')")
    page.wait_for_selector("text=Saved.", timeout=WAIT)
    shots(bob, "settings")
    members = poll(lambda: (m := member_names(alice, space)) and "Bobby" in m and m, "Bobby")
    assert "Bob" not in members and members["Bobby"]["role"] == "moderator"
    page.click("a[href$='/members']")
    page.wait_for_selector(".member:has-text('Carol')", timeout=WAIT)
    shots(bob, "members")

    # 3, continued: the one-minute message is gone from the page and from `salon read`.
    page.click("nav.sidebar a:has-text('minute')")
    page.wait_for_selector("textarea", timeout=WAIT)
    left = 75 - (time.monotonic() - sent_at)
    page.wait_for_selector(vanishing, state="detached", timeout=max(left, 1) * 1000)
    poll(
        lambda: "This vanishes in a minute" not in read_texts(alice, space, "minute"),
        "the one-minute message gone from salon read",
        timeout=max(75 - (time.monotonic() - sent_at), 1),
    )
    assert time.monotonic() - sent_at <= 75

    # 8. Alice removes Bob: his page says so, and her next message never shows on it.
    page.click("nav.sidebar a:has-text('general')")
    page.wait_for_selector(f"{MESSAGE}:has-text('Hello Bob')", timeout=WAIT)
    room_url = page.url
    alice.run("kick", space, "Bobby")
    page.wait_for_selector(f"text=You are no longer in {SPACE}", timeout=WAIT)
    assert "You were removed from this space" in page.inner_text("main")
    shots(bob, "removed")
    assert "Bobby" not in member_names(alice, space)
    alice.run("send", space, "general", "After Bob left: the new door code is 9931")
    assert "9931" in " ".join(read_texts(carol, space, "general"))  # Carol reads it
    page.goto(room_url)  # even asked for the room again, after a fresh start
    page.wait_for_selector(f"text=You are no longer in {SPACE}", timeout=WAIT)
    assert "9931" not in page.content()
    assert page.locator(MESSAGE).count() == 0
    page.click("a:has-text('Go to your spaces')")
    page.wait_for_selector(f".space-card:has-text('{SPACE}'):has-text('You were removed')")
    # ... and no key could open it on his side: it is sealed under a space-key epoch newer
    # than his messages', and no key envelope of that epoch or later was ever sealed to him.
    from protocol.records import fingerprint

    general = next(r["room_id"] for r in alice.json("rooms", space) if r["name"] == "general")
    epochs = stored(
        web_server.db_path,
        "SELECT epoch FROM messages WHERE space_id = ? AND room_id = ? ORDER BY seq",
        space,
        general,
    )
    assert epochs[-1][0] > epochs[0][0]
    bob_fp = members["Bobby"]["fingerprint"].replace(" ", "")
    to_bob = [
        (scope, epoch)
        for scope, epoch, recipient in stored(
            web_server.db_path,
            "SELECT scope, epoch, recipient FROM envelopes WHERE space_id = ?",
            space,
        )
        if fingerprint(bytes(recipient)) == bob_fp
    ]
    assert to_bob and all(epoch < epochs[-1][0] for _, epoch in to_bob), to_bob

    # 9. A used-up link says so in plain words.
    once = alice.json("invite", "create", space, "--uses", "1", "--expires", "1d")["link"]
    dave.run("join", once, "--as", "Dave")
    late = new_page()
    late.page.goto(once)
    late.page.wait_for_selector("text=This invitation can't be used", timeout=WAIT)
    assert "used as many times" in late.page.inner_text("main")
    assert "#" not in late.page.url
    shots(late, "link-used-up")

    # 10. Bob, in a fresh browser, joins two spaces; home lists both; nothing links them.
    other = alice.json("space", "create", "Book club", "--server", web_server.url, "--as", "Al")
    again = alice.json("invite", "create", space, "--uses", "1", "--expires", "1d")["link"]
    fresh = new_page()
    join(fresh, again, "Bob")
    join(fresh, other["link"], "Bob")
    fresh.page.goto(f"{web_server.url}/")
    fresh.page.wait_for_selector(f".space-card:has-text('{SPACE}')", timeout=WAIT)
    fresh.page.wait_for_selector(".space-card:has-text('Book club')", timeout=WAIT)
    names = fresh.page.locator(".space-card-name").all_inner_texts()
    assert names == ["Book club", SPACE]  # by name, whatever order the browser stored them in
    shots(fresh, "home-two-spaces")
    in_town = poll(lambda: member_names(alice, space).get("Bob"), "Bob back in Town hall")
    in_club = poll(lambda: member_names(alice, other["space_id"]).get("Bob"), "Bob in Book club")
    assert in_town["fingerprint"] != in_club["fingerprint"]
    assert in_town["fingerprint"] != members["Bobby"]["fingerprint"]  # a new identity, too

    for web in (bob, late, fresh):
        assert web.problems() == [], web.label
