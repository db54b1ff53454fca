"""The web client's rooms, chat and stories against the real server and CLI (issue 9).

``web/scripts/run_ts.mjs chat_e2e`` runs the TypeScript modules (rooms.ts, chat.ts, stories.ts over
space.ts and session.ts) under Node's global WebSocket, one JSON command per stdin line; the
other people are real ``salon`` CLI processes against one real ``salon serve``. Both
directions of every flow: the web client reads what the CLI sends and posts, the CLI reads
and opens what the web client sends and posts, and the web client's key duty delivers room
keys to a newcomer while no CLI user runs anything.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from chat_support import Follower, jpeg_with_gps, metadata_markers
from support import until_sync

from tests.conftest import SalonServer, SalonUser
from tests.test_web_core import WEB, NodeClient

pytestmark = pytest.mark.timeout(300)


class ChatNode(NodeClient):
    """The same line protocol as the core test's client, running scripts/chat_e2e.ts."""

    def __init__(self) -> None:  # NodeClient's reader, ask/ok/error and close are reused
        import queue

        self.proc = subprocess.Popen(
            ["node", "scripts/run_ts.mjs", "chat_e2e"],
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()


@pytest.fixture
def web() -> Iterator[ChatNode]:
    if not (WEB / "node_modules").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-500:]
    client = ChatNode()
    yield client
    client.close()


def clean_jpeg(width: int, height: int, quality: int = 85) -> bytes:
    """A JPEG as images.ts would hand it over: pixels only (made here with OpenCV)."""
    x = np.linspace(0, 255, width, dtype=np.uint8)
    ramp, flat = np.tile(x, (height, 1)), np.full((height, width), 90, np.uint8)
    pixels = np.dstack([ramp, flat, ramp[:, ::-1]])
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(encoded.tobytes())


def read(person: SalonUser, space: str, room: str) -> list[dict[str, Any]]:
    rows = person.json("read", space, room)
    assert isinstance(rows, list)
    return rows


def texts(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["sender"], r["text"]) for r in rows]


def test_web_chat_with_cli(
    server: SalonServer, user: Callable[..., SalonUser], web: ChatNode, tmp_path: Path
) -> None:
    alice, carol = user("alice"), user("carol")
    created = alice.json("space", "create", "Tea club", "--server", server.url, "--as", "Alice")
    space = created["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    alice.run("send", space, "general", "sent before Bob joined")

    # Bob joins from the link; the room list shows the CLI's room, with its name decrypted.
    web.ok("join", link=created["link"], name="Bob")
    general = web.ok("wait_room", name="general")
    assert (general["kind"], general["history"]) == ("chat", "since-join") and general["may_post"]

    # Alice (CLI) writes; Bob's page follows the room live.
    alice.run("send", space, "general", "Hello Bob")
    backlog = web.ok("follow", room="general")
    assert [i["text"] for i in backlog if i["kind"] == "shown"] == ["Hello Bob"]
    before = [i for i in backlog if i["kind"] != "shown"]  # said before he joined: unreadable
    assert [(i["kind"], i["seq"]) for i in before] == [("unreadable", 1)]
    assert "history is closed" in before[0]["reason"]
    assert before[0]["summary"] == "Sent before you joined, so it can't be read here."
    alice.run("send", space, "general", "Live from the terminal")
    live = web.ok("wait_text", room="general", text="Live from the terminal")
    assert (live["sender"], live["mine"], live["visible_until"]) == ("Alice", False, None)

    # Bob writes from the page: Alice's `read` and `read --follow` show it.
    follower = Follower(alice, space, "general")
    try:
        sent = web.ok("send", room="general", text="Hi Alice, from the web")
        assert sent["duplicate"] is False and sent["expires_at"] is None
        rows = follower.wait_for(sent["seq"])
        assert ("Bob", "Hi Alice, from the web") in texts(rows)
    finally:
        follower.stop()
    assert texts(read(alice, space, "general"))[-1] == ("Bob", "Hi Alice, from the web")

    # A one-minute message: both see it, with its end; it leaves both views (checked last).
    fleeting = web.ok("send", room="general", text="gone in a minute", ttl=60)
    assert fleeting["expires_at"] is not None
    row = read(alice, space, "general")[-1]
    assert row["text"] == "gone in a minute" and row["expires_at"] is not None
    mine = web.ok("wait_text", room="general", text="gone in a minute")
    assert mine["mine"] is True and mine["visible_until"] <= fleeting["expires_at"] + 0.001

    # Bob becomes a moderator and creates a channel: room record, commitments and envelopes
    # exactly as the CLI makes them, so Alice's CLI posts and reads there at once.
    alice.run("role", space, "Bob", "moderator")
    web.ok("wait_role", role="moderator")
    news = web.ok("create_room", kind="channel", name="news")
    assert (news["kind"], news["may_post"]) == ("channel", True)
    assert {r["name"]: r["kind"] for r in alice.json("rooms", space)}["news"] == "channel"
    web.ok("follow", room="news")
    alice.run("send", space, "news", "Owner's word")
    web.ok("wait_text", room="news", text="Owner's word")
    web.ok("send", room="news", text="Moderator's word")
    assert texts(read(alice, space, "news")) == [
        ("Alice", "Owner's word"),
        ("Bob", "Moderator's word"),
    ]

    # Stories both ways, in one encrypted format.
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(1200, 800))
    cli_story = alice.json("story", "post", space, "news", str(photo), "--caption", "From the CLI")
    listed = web.ok("list_stories", room="news")
    assert [(s["author"], s["caption"]) for s in listed["stories"]] == [("Alice", "From the CLI")]
    assert listed["skipped"] == []
    got = web.ok("view_story", story_id=cli_story["story_id"])
    image = bytes.fromhex(got["bytes"])
    pixels = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (800, 1200, 3) and metadata_markers(image) == []
    thumb_hex = web.ok("view_story", story_id=cli_story["story_id"], part="thumb")["bytes"]
    thumb = bytes.fromhex(thumb_hex)
    assert max(cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR).shape[:2]) == 320

    picture, small = clean_jpeg(960, 640), clean_jpeg(320, 213, 70)
    posted = web.ok(
        "post_story",
        room="news",
        image=picture.hex(),
        thumb=small.hex(),
        width=960,
        height=640,
        caption="From the page",
        ttl=3600,
    )
    out = tmp_path / "got.jpg"
    opened = alice.json("story", "get", space, posted["story_id"], "--out", str(out))
    assert opened["caption"] == "From the page" and out.read_bytes() == picture
    alice.run("story", "get", space, posted["story_id"], "--out", str(out), "--thumbnail")
    assert out.read_bytes() == small
    cli_list = alice.json("story", "list", space, "news")
    assert [(s["author"], s["caption"]) for s in cli_list] == [
        ("Bob", "From the page"),
        ("Alice", "From the CLI"),
    ]

    # Carol joins with the CLI. Nobody at a terminal runs anything: Bob's page seals the room
    # keys to her (key duty), so she reads what Bob sends after her join.
    carol_link = alice.json("invite", "create", space, "--uses", "1")["link"]
    carol.run("join", carol_link, "--as", "Carol")
    web.ok("send", room="general", text="Welcome Carol")

    def carol_reads() -> bool:
        done = carol.run("read", space, "general", "--json", check=False)
        return done.returncode == 0 and "Welcome Carol" in done.stdout

    until_sync(carol_reads, "Carol reads it", timeout=30)
    assert web.ok("duty_errors") == []

    # Channel rules: Carol may not post in news until Bob (moderator, web) grants her.
    assert "not allowed" in carol.fail("send", space, "news", "Carol was here")
    web.ok("set_publisher", room="news", member="Carol", on=True)
    carol.run("send", space, "news", "Carol, now a publisher")
    web.ok("wait_text", room="news", text="Carol, now a publisher")
    web.ok("set_publisher", room="news", member="Carol", on=False)
    assert "not allowed" in carol.fail("send", space, "news", "again")
    # Her post made while she could publish still verifies afterwards, on both sides.
    assert ("Carol", "Carol, now a publisher") in texts(read(alice, space, "news"))
    assert "Carol, now a publisher" in [i.get("text") for i in web.ok("history", room="news")]

    # Alice removes Carol (a new key epoch). Bob's page is the first to write in general, so
    # it makes the room's key for the new epoch (commitment and envelopes, the maker rule);
    # Alice's CLI reads with it and writes back.
    alice.run("kick", space, "Carol")
    web.ok("send", room="general", text="after Carol left")
    assert texts(read(alice, space, "general"))[-1] == ("Bob", "after Carol left")
    alice.run("send", space, "general", "Alice, in the new epoch")
    web.ok("wait_text", room="general", text="Alice, in the new epoch")
    assert "error" in carol.run("read", space, "general", check=False).stderr

    # The server restarts: a message sent from the page while it is down goes out once it is
    # back (same client id: once), and the follower resumes from its last seq.
    server.stop()
    offline: dict[str, Any] = {}
    sender = threading.Thread(
        target=lambda: offline.update(web.ok("send", room="general", text="sent while offline"))
    )
    sender.start()
    server.start(port=server.port)
    sender.join(timeout=60)
    assert offline.get("seq") is not None
    alice.run("send", space, "general", "after the restart")
    web.ok("wait_text", room="general", text="after the restart")
    web.ok("wait_text", room="general", text="sent while offline")
    said = [r["text"] for r in read(alice, space, "general")]
    assert said.count("sent while offline") == 1 and said[-1] == "after the restart"
    seqs = [i["seq"] for i in web.ok("items", room="general")]
    assert seqs == sorted(set(seqs))  # nothing twice, in order

    # The one-minute message leaves the page when its time comes, and the CLI's view.
    web.ok("wait_expired", room="general", seq=fleeting["seq"], timeout=120_000)
    assert time.time() >= fleeting["expires_at"] - 1
    until_sync(
        lambda: "gone in a minute" not in [r["text"] for r in read(alice, space, "general")],
        "the ephemeral message gone",
        timeout=15,
    )
    assert "gone in a minute" not in [i.get("text") for i in web.ok("history", room="general")]
