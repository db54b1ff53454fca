"""Acknowledged means durable, and following survives the server (DESIGN §1.6).

- The server is SIGKILLed in the middle of a burst of concurrent sends: after a restart every
  acknowledged message is there with the sequence it was acknowledged with, sequences have
  no gap, no client message id appears twice, and retrying the unacknowledged sends with
  their ids stores each exactly once.
- ``salon read --follow`` keeps printing across a clean restart and a SIGKILL of the server:
  every message exactly once, in order, from the sequence given with ``--since``.
- The per-member rate limit answers ``rate_limited``.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from chat_support import Follower
from conftest import SalonServer, SalonUser

from client.core.chat import fetch_after, read_messages, send_message
from client.core.errors import ClientError, ServerError
from client.core.rooms import resolve_room
from client.core.space import open_space
from protocol.errors import ErrorCode

STORAGE_ENGINES = ("sqlite", "postgresql")  # the server fixtures run on each (conftest.py)
FAST = {
    "limits": {
        "messages_per_second_per_member": 100_000.0,
        "message_burst_per_member": 100_000,
        "requests_per_second": 100_000.0,
        "request_burst": 100_000,
    }
}


def setup_space(server: SalonServer, user: Any) -> tuple[SalonUser, SalonUser, str]:
    alice, bob = user("alice"), user("bob")
    created = alice.json("space", "create", "Burst", "--server", server.url, "--as", "Alice")
    bob.json("join", created["link"], "--as", "Bob")
    alice.run("room", "create", created["space_id"], "general", "--kind", "chat")
    return alice, bob, created["space_id"]


def membership_of(person: SalonUser, space_id: str) -> Any:
    keystore = person.keystore()
    (m,) = [m for m in keystore.load().memberships if m.space_id == space_id]
    return keystore, m


async def test_sigkill_during_a_burst_loses_no_acknowledged_message(make_server, user):
    server = make_server(FAST)
    alice, _, space_id = setup_space(server, user)
    keystore, m = membership_of(alice, space_id)
    acked: dict[bytes, int] = {}  # client id -> seq the server acknowledged
    attempted: dict[bytes, str] = {}  # client id -> text, for every send begun
    enough = asyncio.Event()

    async def sender(worker: int) -> None:
        async with open_space(keystore, m) as session:
            room = resolve_room(session, "general")
            for i in range(100_000):
                client_id = secrets.token_bytes(16)
                attempted[client_id] = f"worker {worker} message {i}"
                try:
                    sent = await send_message(session, room, attempted[client_id], 0, client_id)
                except ClientError:
                    return  # the server died under us
                acked[client_id] = sent.seq
                if len(acked) >= 400:
                    enough.set()

    workers = [asyncio.create_task(sender(w)) for w in range(6)]
    await asyncio.wait_for(enough.wait(), 60)
    assert server.proc is not None
    server.proc.kill()  # SIGKILL: no shutdown, no flush, mid-transaction for all we know
    server.proc.wait()
    await asyncio.wait_for(asyncio.gather(*workers), 30)
    unacked = [cid for cid in attempted if cid not in acked]
    assert unacked, "the kill should have caught sends in flight"

    server.start(port=server.port)
    async with open_space(keystore, m) as session:
        room = resolve_room(session, "general")
        stored = await fetch_after(session, room.room_id, 0)
        seqs = [msg.seq for msg in stored]
        assert seqs == list(range(1, len(stored) + 1)), "sequences have a gap"
        by_id = {msg.client_id: msg.seq for msg in stored}
        assert len(by_id) == len(stored), "a client id was stored twice"
        for client_id, seq in acked.items():
            assert by_id.get(client_id) == seq, "an acknowledged message was lost or moved"
        assert set(by_id) <= set(attempted)

        # Retrying every unacknowledged send: the ones that made it answer with their
        # first sequence, the others are stored now; still no gap and no duplicate.
        for client_id in unacked:
            sent = await send_message(session, room, attempted[client_id], 0, client_id)
            assert sent.duplicate == (client_id in by_id)
            if sent.duplicate:
                assert sent.seq == by_id[client_id]
        shown, stats = await read_messages(session, room)
        assert not stats.rejected and stats.unreadable == 0
        assert [r.seq for r in shown] == list(range(1, len(attempted) + 1))
        assert sorted(r.text for r in shown) == sorted(attempted.values())


def test_follow_survives_restart_and_sigkill(make_server, user):
    """Also: --since with --follow starts after that sequence."""
    server = make_server()
    alice, bob, space_id = setup_space(server, user)
    alice.run("send", space_id, "general", "before --since")
    alice.run("send", space_id, "general", "one")
    follower = Follower(bob, space_id, "general", "--since", "1")
    try:
        follower.wait_for(2)
        alice.run("send", space_id, "general", "two")
        follower.wait_for(3)

        server.stop()  # a clean shutdown: the follower hears "shutdown" and reconnects
        server.start(port=server.port)
        alice.run("send", space_id, "general", "three")  # maybe before it is back: backlog
        alice.run("send", space_id, "general", "four")
        follower.wait_for(5)

        assert server.proc is not None
        server.proc.kill()  # and a crash
        server.proc.wait()
        server.start(port=server.port)
        for text in ("five", "six", "seven"):
            alice.run("send", space_id, "general", text)
        follower.wait_for(8)
    finally:
        seen = follower.stop()
    assert [(m["seq"], m["text"]) for m in seen] == list(
        enumerate(["one", "two", "three", "four", "five", "six", "seven"], start=2)
    )
    assert "reconnecting" in follower.stderr


async def test_rate_limit_per_member(make_server, user):
    server = make_server(
        # One message back per 50 s: the CLI's send at the end (a fresh process, slow on a busy
        # machine) still finds the bucket empty.
        {"limits": {"messages_per_second_per_member": 0.02, "message_burst_per_member": 5}}
    )
    alice, _, space_id = setup_space(server, user)
    keystore, m = membership_of(alice, space_id)
    async with open_space(keystore, m) as session:
        room = resolve_room(session, "general")
        for i in range(5):
            await send_message(session, room, f"ok {i}")
        with pytest.raises(ServerError) as caught:
            await send_message(session, room, "one too many")
        assert caught.value.code == ErrorCode.RATE_LIMITED
    assert "too fast" in alice.fail("send", space_id, "general", "still too many")
