"""Restarts are invisible (issue 11): SIGKILL one of two instances mid-call and mid-burst.

Two real ``salon serve`` instances, A and B, on one real PostgreSQL behind one address (a
round-robin TCP proxy that skips a dead backend, tests/support/rr_proxy.py). A mesh call of
three real ``salon call`` CLIs — Alice and Dave through A, Bob through B — while Bob sends a
burst of messages (one ``salon send`` after another, through whichever instance the proxy
picks) and Carol follows the room (``read --follow``, through A). Then A is SIGKILLed:

- Alice reconnects through B and takes her seat back (same join, same keys): nobody sees
  her leave, and media between her and Bob keeps flowing (their status lines' frame counts
  rise across the kill). Dave is killed with A (a client that never comes back): once A
  has been silent for ``seat_grace_seconds``, B frees his seat through the call's log and
  the others see the call at two.
- No acknowledged message is lost or duplicated: Carol's follower (reconnected through B)
  and a later ``read`` show every acknowledged sequence exactly once, with its text.
- A, restarted (a new instance with no replica), applies a host's mute to the call rebuilt
  from the log; then B is stopped as an operator restarts it (SIGTERM): Alice and Bob take
  their seats over through A, nobody sees a leave.
- A message with a lifetime sent before the kill is gone from ``read`` and from the table on
  time afterwards.

The resume times (kill → back in the call) are printed (``make bench-scale`` reuses
``support.instance_loss``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls
from chat_support import Follower
from conftest import SalonServer
from postgres_support import PostgresServer, pg_query
from support import until, until_sync
from support.instance_loss import cluster, resume_times

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
GRACE = 5.0
CONFIG = {
    "limits": {"join_attempts_per_minute_per_address": 1000},
    "conference": {"seat_grace_seconds": GRACE},
}
STATUS = re.compile(r"(\w+) \([^)]*?(\d+) video / (\d+) audio frames\)")


def video_frames(call: CallProcess, name: str, after: int = 0) -> int:
    """The newest status line's video frame count for ``name`` (lines from ``after`` on)."""
    for line in reversed(call.lines[after:]):
        if line.startswith("status:"):
            for who, video, _audio in STATUS.findall(line):
                if who == name:
                    return int(video)
    return -1


class Burst:
    """``salon send`` after ``salon send`` in a thread; what was acknowledged, by seq."""

    def __init__(self, person: Any, space: str, room: str) -> None:
        self.person, self.space, self.room = person, space, room
        self.acked: dict[int, str] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            text = f"burst {n}"
            result = self.person.run("send", self.space, self.room, text, "--json", check=False)
            if result.returncode == 0:
                self.acked[int(json.loads(result.stdout)["seq"])] = text
            else:
                self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


async def test_call_and_chat_survive_sigkill_of_an_instance(
    postgres: PostgresServer, user: Any, tmp_path: Path
) -> None:
    with cluster(SalonServer, postgres.create_database(), tmp_path, CONFIG) as two:
        proxy = two.proxy
        alice, bob, carol, dave = (user(n) for n in ("alice", "bob", "carol", "dave"))
        made = await alice.ajson("space", "create", "Survive", "--server", two.url, "--as", "Alice")
        space = made["space_id"]
        for person, name in ((bob, "Bob"), (carol, "Carol"), (dave, "Dave")):
            await person.arun("join", made["link"], "--as", name)
        await alice.arun("room", "create", space, "hall", "--kind", "conference")
        await alice.arun("room", "create", space, "general", "--kind", "chat")

        async def start_on(index: int, person: Any, name: str) -> CallProcess:
            made = len(proxy.connections)
            proxy.send_next_to(index)
            call = await CallProcess.start(person, space, "hall", tmp_path / f"{name}.json", 120)
            await until(lambda: len(proxy.connections) > made, f"{name} connected", 30)
            assert proxy.connections[made] == index, "another connection took the turn"
            return call

        async with calls() as running:
            a = await start_on(0, alice, "alice")  # through A
            running.append(a)
            await a.wait_for("topology mesh")
            b = await start_on(1, bob, "bob")  # through B
            running.append(b)
            d = await start_on(0, dave, "dave")  # through A, and killed with it
            running.append(d)
            for call in (a, b, d):
                await call.wait_for(r"verification code .* \(3 in the call", 60)
            await a.wait_for("first video from Bob", 60)
            await b.wait_for("first video from Alice", 60)

            made = len(proxy.connections)
            proxy.send_next_to(0)
            follower = Follower(carol, space, "general")  # through A
            burst: Burst | None = None
            try:
                until_sync(lambda: len(proxy.connections) > made, "the follower connected", 30)
                assert proxy.connections[made] == 0
                first = await bob.ajson("send", space, "general", "before the burst")
                follower.wait_for(first["seq"], timeout=30)
                burst = Burst(bob, space, "general")
                until_sync(lambda: len(burst.acked) >= 3, "three sends acknowledged", 60)
                await until(lambda: video_frames(b, "Alice") > 0, "a status line at Bob's", 30)

                # -- SIGKILL A, mid-call and mid-burst ------------------------------------
                bob_lines, alice_lines = len(b.lines), len(a.lines)
                bob_saw = video_frames(b, "Alice")
                fleeting = await bob.ajson("send", space, "general", "gone soon", "--ttl", "20s")
                assert _stored(two.database_url, space, fleeting["seq"])
                expires = _epoch(fleeting["expires_at"])
                killed_at = two.kill_a()
                deleted = asyncio.create_task(
                    _deleted_at(two.database_url, space, fleeting["seq"], expires + 15)
                )
                await d.kill()  # Dave's client dies with A: his seat must be freed
                resumed = await resume_times([a], killed_at, 30)
                print(f"\nresume times after SIGKILL (kill -> back in the call): {resumed}")

                # Media kept flowing: frame counts on both sides rise after the kill.
                await until(
                    lambda: video_frames(b, "Alice", bob_lines) > bob_saw,
                    "Bob's count of Alice's video frames rising after the kill",
                    30,
                )
                alice_after = video_frames(a, "Bob", alice_lines)
                await until(
                    lambda: video_frames(a, "Bob", alice_lines) > max(alice_after, 0),
                    "Alice's count of Bob's video frames rising after her reconnection",
                    30,
                )
                assert not any("left the call" in line for line in b.lines[bob_lines:]), (
                    "Bob saw Alice leave"
                )
                # Dave's seat (held through dead A) is freed after the grace; Alice's is
                # not (she took it over).
                for call in (a, b):
                    await call.wait_for(r"verification code .* \(2 in the call", 30 + GRACE)

                # A comes back as a new instance with no replica of the call: the host's
                # mute through it is applied to the call rebuilt from the log.
                two.a.start(port=two.a.port)
                made = len(proxy.connections)
                proxy.send_next_to(0)
                await alice.arun("mod", space, "hall", "mute", "Bob")
                assert proxy.connections[made] == 0, "the mute did not go through A"
                await b.wait_for("muted you: your audio is no longer sent", 30)

                # B is restarted as an operator does (SIGTERM): it does not leave its
                # members' seats, and Alice and Bob take them over through A.
                since = [len(a.lines), len(b.lines)]
                stopped_at = two.stop_b()
                restarted = await resume_times([a, b], stopped_at, 30, since)
                print(f"resume times after SIGTERM of the other instance: {restarted}")
                two.b.start(port=two.b.port)
                assert not any("left the call" in line for line in a.lines[since[0] :])
                for call, start in zip((a, b), since, strict=True):
                    alone = [line for line in call.lines[start:] if "(1 in the call" in line]
                    assert not alone, f"{call.user.name} saw the other leave: {alone}"

                n_after = len(burst.acked)
                until_sync(lambda: len(burst.acked) >= n_after + 3, "sends after the kill", 60)
            finally:
                if burst is not None:
                    burst.stop()
            try:
                acked = dict(burst.acked)
                newest = max(acked)
                seen = follower.wait_for(newest, timeout=60)
            finally:
                follower.stop()
            followed = [m["seq"] for m in seen]
            assert len(followed) == len(set(followed)), f"duplicates: {followed}"
            by_seq = {m["seq"]: m["text"] for m in seen}
            for seq, text in acked.items():
                assert by_seq.get(seq) == text, f"acked #{seq} {text!r} not followed"
            assert by_seq.get(fleeting["seq"]) == "gone soon"
            rows = await bob.ajson("read", space, "general")
            read = [r["seq"] for r in rows]
            assert len(read) == len(set(read)), f"duplicates: {read}"
            texts = {r["seq"]: r["text"] for r in rows}
            for seq, text in acked.items():
                assert texts.get(seq) == text, f"acked #{seq} {text!r} lost"
            print(f"burst: {len(acked)} acknowledged, {burst.failed} refused around the kill")

            # The message with a lifetime is gone on time, from the table (B's sweeper,
            # every expiry_sweep_seconds = 5) and from reads.
            gone_at = await deleted
            assert expires - 1.0 <= gone_at <= expires + 5.0 + 3.0, (gone_at, expires)
            rows = await bob.ajson("read", space, "general")
            assert all(r["seq"] != fleeting["seq"] for r in rows)
            host, guest = await a.stop(), await b.stop()

        # The call is over: its ending input holds a snapshot of the idle call, which
        # supersedes (the next prune deletes) everything before it.
        def compacted() -> bool:
            rows = pg_query(
                two.database_url,
                "SELECT seq, base IS NOT NULL, state FROM call_inputs WHERE space_id = ?"
                " AND state ORDER BY seq",
                space,
            )
            return bool(rows) and rows[-1][1]

        until_sync(compacted, "the ended call's log compacted", 15)
        # Alice reconnected twice (A killed, then B restarted), Bob once (B restarted).
        assert len(host.stats["server_reconnects"]) == 2
        assert len(guest.stats["server_reconnects"]) == 1
        assert host.peer("Bob")["video_frames_decoded"] > 30
        assert guest.peer("Alice")["video_frames_decoded"] > 30


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _stored(url: str, space: str, seq: int) -> bool:
    sql = "SELECT 1 FROM messages WHERE space_id = ? AND seq = ?"
    return bool(pg_query(url, sql, space, seq))


async def _deleted_at(url: str, space: str, seq: int, deadline: float) -> float:
    """The wall-clock time the message's row was first seen gone (polled every 0.2 s)."""
    while _stored(url, space, seq):
        assert time.time() < deadline, f"message #{seq} still stored after its expiry"
        await asyncio.sleep(0.2)
    return time.time()
