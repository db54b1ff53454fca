"""Several ``salon serve`` instances on one PostgreSQL database serve any space (issue 11).

Two real servers, A and B, share one database; Alice's CLI talks to A and Bob's to B (his
invite link names B: the link's address is only where to reach the space). What one
instance commits reaches the other's connections through PostgreSQL's LISTEN/NOTIFY
(:mod:`spaces.events`): a message sent through A is printed at once by a ``read --follow``
on B and the other way round; joins, kicks and rekeys made through one instance are known
to the other; stories posted through one are read through the other; a moderated call whose
participants are connected to different instances works (the calls' ordered log).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls
from chat_support import Follower, jpeg_with_gps
from conftest import SalonServer, SalonUser
from postgres_support import PostgresServer, pg_query

pytestmark = pytest.mark.timeout(240)
CONFIG = {"limits": {"join_attempts_per_minute_per_address": 1000}}


@dataclass
class Pair:
    a: SalonServer
    b: SalonServer
    url: str


@pytest.fixture(scope="module")
def pair(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    url = postgres.create_database()
    a = SalonServer(tmp_path_factory.mktemp("a"), CONFIG, url)
    b = SalonServer(tmp_path_factory.mktemp("b"), CONFIG, url)
    a.start()
    try:
        b.start()
        yield Pair(a, b, url)
    finally:
        b.stop()
        a.stop()


def on(link: str, server: SalonServer, other: SalonServer) -> str:
    """The invite link, through ``server`` instead of ``other``."""
    assert link.startswith(other.url + "/"), link
    return server.url + link[len(other.url) :]


def names(person: SalonUser, space: str) -> set[str]:
    return {row["display_name"] for row in person.json("members", space)}


def test_chat_follow_both_ways_and_a_story(pair: Pair, user: Any, tmp_path: Path) -> None:
    alice, bob = user("alice"), user("bob")
    made = alice.json("space", "create", "Two doors", "--server", pair.a.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    bob.json("join", on(made["link"], pair.b, pair.a), "--as", "Bob")  # through B
    assert names(alice, space) == {"Alice", "Bob"}  # A knows of a join made through B
    assert names(bob, space) == {"Alice", "Bob"}

    bob_follows = Follower(bob, space, "general")  # on B
    alice_follows = Follower(alice, space, "general")  # on A
    try:
        assert alice.json("send", space, "general", "hello from A")["seq"] == 1
        assert [m["text"] for m in bob_follows.wait_for(1, timeout=10)] == ["hello from A"]
        assert bob.json("send", space, "general", "hello from B")["seq"] == 2
        seen = alice_follows.wait_for(2, timeout=10)
        assert [(m["seq"], m["sender"], m["text"]) for m in seen] == [
            (1, "Alice", "hello from A"),
            (2, "Bob", "hello from B"),
        ]
        # A burst through both at once: sequences stay gap-free, every follower gets all.
        for i in range(5):
            alice.run("send", space, "general", f"a{i}")
            bob.run("send", space, "general", f"b{i}")
        for follower in (alice_follows, bob_follows):
            got = follower.wait_for(12, timeout=15)
            assert [m["seq"] for m in got] == list(range(1, 13))
    finally:
        alice_follows.stop()
        bob_follows.stop()

    # A story posted through A is listed and fetched through B.
    alice.run("room", "create", space, "news", "--kind", "channel")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(640, 480))
    posted = alice.json("story", "post", space, "news", str(photo), "--caption", "Pier")
    listed = bob.json("story", "list", space, "news")
    assert [(r["story_id"], r["caption"]) for r in listed] == [(posted["story_id"], "Pier")]
    got = bob.json("story", "get", space, posted["story_id"], "--out", str(tmp_path / "g.jpg"))
    assert got["caption"] == "Pier" and got["bytes"] == (tmp_path / "g.jpg").stat().st_size


def test_kick_and_rekey_across_instances(pair: Pair, user: Any) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    made = alice.json("space", "create", "Kick", "--server", pair.a.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    bob.json("join", on(made["link"], pair.b, pair.a), "--as", "Bob")
    carol.json("join", on(made["link"], pair.b, pair.a), "--as", "Carol")
    carol_follows = Follower(carol, space, "general")  # Carol is connected to B
    try:
        alice.run("send", space, "general", "before")
        carol_follows.wait_for(1, timeout=10)
        alice.run("kick", space, "Carol")  # through A: B ends Carol's session
        carol_follows.proc.wait(timeout=15)
        assert carol_follows.proc.returncode != 0
    finally:
        carol_follows.stop()
    assert "no longer a member" in carol.fail("members", space)
    # B serves the new epoch: Bob reads the names (with the new key) and posts at it.
    assert names(bob, space) == {"Alice", "Bob"}
    bob.run("send", space, "general", "after the rekey")
    rows = alice.json("read", space, "general")
    assert [(r["sender"], r["text"]) for r in rows] == [
        ("Alice", "before"),
        ("Bob", "after the rekey"),
    ]
    # The link was re-sealed through A; it admits Dave through B.
    dave = user("dave")
    dave.json("join", on(made["link"], pair.b, pair.a), "--as", "Dave")
    assert names(alice, space) == {"Alice", "Bob", "Dave"}


async def test_moderated_call_across_instances(pair: Pair, user: Any, tmp_path: Path) -> None:
    """Alice (host) calls through A, Bob and Carol through B: a lobby admission, a mute and a
    kick made through A reach B's participants; media flows between A's and B's members."""
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    made = await alice.ajson("space", "create", "Calls", "--server", pair.a.url, "--as", "Alice")
    space = made["space_id"]
    for person, name in ((bob, "Bob"), (carol, "Carol")):
        await person.arun("join", on(made["link"], pair.b, pair.a), "--as", name)
    await alice.arun("room", "create", space, "hall", "--kind", "conference", "--lobby")
    async with calls() as running:
        a = await CallProcess.start(alice, space, "hall", tmp_path / "a.json", 40)
        running.append(a)
        await a.wait_for("topology mesh")
        b = await CallProcess.start(bob, space, "hall", tmp_path / "b.json", 40)
        running.append(b)
        await b.wait_for("waiting in the lobby until a host admits you")
        await a.wait_for(r"Bob \(\w+\) is waiting in the lobby")
        await alice.arun("mod", space, "hall", "admit", "Bob")
        await b.wait_for(r"verification code .* \(2 in the call")
        await a.wait_for(r"verification code .* \(2 in the call")
        c = await CallProcess.start(carol, space, "hall", tmp_path / "c.json", 40)
        running.append(c)
        await a.wait_for(r"Carol \(\w+\) is waiting in the lobby")
        await alice.arun("mod", space, "hall", "admit", "Carol")
        for call in (a, b, c):
            await call.wait_for(r"verification code .* \(3 in the call")
        await b.wait_for("first video from Alice")
        await a.wait_for("first video from Bob")
        await alice.arun("mod", space, "hall", "mute", "Bob")
        await b.wait_for("muted you: your audio is no longer sent")
        await c.wait_for(r"Alice \(\w+\) muted Bob")
        await alice.arun("mod", space, "hall", "kick", "Carol")
        kicked = await c.finish()
        await b.wait_for(r"verification code .* \(2 in the call")
        host, guest = await a.stop(), await b.stop()
    assert kicked.returncode == 5 and "removed you from the call" in kicked.stderr
    assert kicked.stats["ended_reason"] == "removed"
    assert host.peer("Bob")["video_frames_decoded"] > 10
    assert guest.peer("Alice")["video_frames_decoded"] > 10
    assert guest.stats["self"]["admitted"] is True


def test_listener_lost_reconnects_and_resyncs(pair: Pair, user: Any) -> None:
    """The LISTEN connections are killed (as a database failover or a network cut would):
    each instance reconnects with back-off, re-syncs from the store, and delivery across
    instances goes on; nothing acknowledged is missed by the follower on B."""
    alice, bob = user("alice"), user("bob")
    made = alice.json("space", "create", "Cut", "--server", pair.a.url, "--as", "Alice")
    space = made["space_id"]
    alice.run("room", "create", space, "general", "--kind", "chat")
    bob.json("join", on(made["link"], pair.b, pair.a), "--as", "Bob")
    bob_follows = Follower(bob, space, "general")  # on B
    try:
        alice.run("send", space, "general", "before the cut")
        bob_follows.wait_for(1, timeout=10)
        killed = pg_query(
            pair.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN %salon_events%'",
        )
        assert len(killed) == 2  # one listener per instance
        for n in range(2, 6):
            assert alice.json("send", space, "general", f"after the cut {n}")["seq"] == n
        seen = bob_follows.wait_for(5, timeout=20)
        assert [m["seq"] for m in seen] == [1, 2, 3, 4, 5]
    finally:
        bob_follows.stop()
    for server in (pair.a, pair.b):
        assert "event listener back; re-syncing from the store" in server.log_text()
