"""What the server enforces in a call, driven through the protocol by in-process clients.

The clients here are the real SDK (keystore, verified space sessions) talking to a real
in-process server; they send conference requests directly, so the test can also send what
an honest ``salon call`` never would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import nacl.pwhash
import numpy as np
import pytest

from client.call.client import CallClient, CallOptions, sign_action
from client.call.stats import PeerStats
from client.call.view import PlainDisplay
from client.core.errors import ServerError
from client.core.keystore import Keystore
from client.core.rooms import create_room
from client.core.space import SpaceSession, create_space, join_space, open_space
from protocol.conference_rules import SeatFlags
from protocol.conference_wire import (
    ActInCall,
    CallAction,
    CallEnded,
    CallInfo,
    CallJoined,
    CallSignal,
    CallUpdate,
    GetCall,
    JoinCall,
    SendCallSignal,
)
from protocol.errors import ErrorCode
from protocol.wire import Done
from spaces.storage.interfaces import StoredRecord
from spaces.storage.sqlite.conference import SqliteConferenceStore
from spaces.storage.sqlite.store import SqliteStore

pytestmark = pytest.mark.timeout(60)


def keystore(home: Path) -> Keystore:
    return Keystore(
        home,
        passphrase=lambda _creating: "pw",
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )


async def next_event(
    session: SpaceSession, kind: type, match: Any = lambda event: True, timeout: float = 5.0
) -> Any:
    """The next pushed event of ``kind`` for which ``match`` holds (others are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        event = await asyncio.wait_for(session.conn.events.get(), max(remaining, 0.01))
        if isinstance(event, kind) and match(event):
            return event


async def request(session: SpaceSession, message: Any, reply: type) -> Any:
    return await session.conn.request(message, reply)


@contextlib.asynccontextmanager
async def lobby_call(app_server: Any, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    srv = await app_server()
    stores = {name: keystore(tmp_path / name) for name in ("alice", "bob", "carol")}
    alice_m, link = await create_space(stores["alice"], srv.url, "Town", "Alice", 10, 3600)
    members = {"alice": alice_m}
    for name in ("bob", "carol"):
        members[name] = await join_space(stores[name], str(link), name.capitalize())
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            name: await stack.enter_async_context(open_space(stores[name], members[name]))
            for name in members
        }
        await sessions["alice"].sync()
        room = await create_room(sessions["alice"], "hall", "conference", lobby=True)
        for session in sessions.values():
            await session.sync()
        yield {"room": room.room_id, **sessions}


async def join(session: SpaceSession, room: str) -> CallJoined:
    info = await request(session, GetCall(session.conn.next_id(), room), CallInfo)
    action = sign_action(session, room, info.state.call_id, "join", session.member_key)
    return await request(session, JoinCall(session.conn.next_id(), room, action), CallJoined)


def signal(session: SpaceSession, room: str, call_id: str, to: bytes, box: bytes) -> Any:
    return SendCallSignal(session.conn.next_id(), room, call_id, to, box)


async def test_server_enforces_lobby_signatures_and_removal(
    app_server: Any, tmp_path: Path
) -> None:
    async with lobby_call(app_server, tmp_path) as call:
        room, alice, bob, carol = call["room"], call["alice"], call["bob"], call["carol"]
        hosted = await join(alice, room)
        assert hosted.status == "joined"
        call_id = hosted.state.call_id
        waiting = await join(bob, room)
        assert waiting.status == "lobby"
        # A lobby member sees only its own seat, and no signal flows to or from it.
        assert [p.member for p in waiting.state.participants] == [bob.member_key]
        for sender, to in ((bob, alice.member_key), (alice, bob.member_key)):
            with pytest.raises(ServerError) as refused:
                await request(sender, signal(sender, room, call_id, to, b"box"), Done)
            assert refused.value.code == ErrorCode.FORBIDDEN
        knock = await next_event(alice, CallUpdate, lambda e: len(e.state.participants) == 2)
        assert [p.status for p in knock.state.participants] == ["joined", "lobby"]

        # Joins must be the session member's own, freshly signed, for this call.
        bobs_join = sign_action(bob, room, call_id, "join", bob.member_key)
        with pytest.raises(ServerError, match="signed by the session's member"):
            await request(carol, JoinCall(carol.conn.next_id(), room, bobs_join), CallJoined)
        old = sign_action(carol, room, "an-old-call", "join", carol.member_key)
        with pytest.raises(ServerError) as stale:
            await request(carol, JoinCall(carol.conn.next_id(), room, old), CallJoined)
        assert stale.value.code == ErrorCode.STALE_CALL
        # A participant cannot admit anyone.
        bob_join = waiting.state.participants[0].join.nonce
        admit = sign_action(carol, room, call_id, "admit", bob.member_key, bob_join)
        with pytest.raises(ServerError, match="not a host"):
            await request(carol, ActInCall(carol.conn.next_id(), room, admit), Done)

        # An admission names the join it admits: one for another join is refused.
        elsewhere = sign_action(alice, room, call_id, "admit", bob.member_key, bytes(16))
        with pytest.raises(ServerError) as other_join:
            await request(alice, ActInCall(alice.conn.next_id(), room, elsewhere), Done)
        assert other_join.value.code == ErrorCode.STALE_CALL
        admit = sign_action(alice, room, call_id, "admit", bob.member_key, bob_join)
        await request(alice, ActInCall(alice.conn.next_id(), room, admit), Done)
        admitted = await next_event(bob, CallUpdate, lambda e: e.action == admit)
        assert admitted.action == admit
        assert {p.member for p in admitted.state.participants} == {
            alice.member_key,
            bob.member_key,
        }
        # Now signals flow, opaque to the server, and name their true sender.
        await request(alice, signal(alice, room, call_id, bob.member_key, b"sealed"), Done)
        relayed = await next_event(bob, CallSignal)
        assert (relayed.sender, relayed.box) == (alice.member_key, b"sealed")
        with pytest.raises(ServerError) as large:
            await request(alice, signal(alice, room, call_id, bob.member_key, bytes(70_000)), Done)
        assert large.value.code == ErrorCode.TOO_LARGE

        kick = sign_action(alice, room, call_id, "kick", bob.member_key, bob_join)
        await request(alice, ActInCall(alice.conn.next_id(), room, kick), Done)
        ended = await next_event(bob, CallEnded)
        assert (ended.reason, ended.action) == ("removed", kick)
        with pytest.raises(ServerError):
            await request(bob, signal(bob, room, call_id, alice.member_key, b"x"), Done)
        # The same signed kick cannot be replayed.
        with pytest.raises(ServerError, match="already used"):
            await request(alice, ActInCall(alice.conn.next_id(), room, kick), Done)

        # Closing the connection leaves the call; the last one out starts a new call id.
        await alice.conn.close()
        await asyncio.sleep(0.2)
        fresh = await request(carol, GetCall(carol.conn.next_id(), room), CallInfo)
        assert fresh.state.participants == [] and fresh.state.call_id != call_id


async def test_bans_outlive_the_server(tmp_path: Path) -> None:
    path = tmp_path / "salon.db"
    store = SqliteStore(path)
    await store.open()
    await store.append("space1", [StoredRecord(0, b"h" * 32, b"record")], create=True)
    bans = SqliteConferenceStore(path)
    await bans.open()
    ban = CallAction(
        "space1", "room1", "c", b"a" * 32, "ban", b"t" * 32, 1, b"n" * 16, 3, b"h" * 32, sig=b"s"
    )
    await bans.put_ban("space1", "room1", ban)
    await bans.close()
    await store.close()
    again = SqliteConferenceStore(path)
    await again.open()
    try:
        assert await again.bans("space1", "room1") == {b"t" * 32: ban}
        await again.delete_ban("space1", "room1", b"t" * 32)
        assert await again.bans("space1", "room1") == {}
    finally:
        await again.close()


def tone(level: float) -> av.AudioFrame:
    samples = (np.ones((1, 960)) * level * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 48000
    return frame


def test_sink_drops_muted_and_non_speaking_senders() -> None:
    """Whatever the topology delivers, a muted sender's audio is never played and a
    listener's media is never shown (the peers' half of mute and stage)."""
    me, bob = b"m" * 32, b"b" * 32
    session: Any = SimpleNamespace(member_key=me)
    room: Any = SimpleNamespace(room_id="room1", name="hall")
    client = CallClient(session, room, CallOptions(), PlainDisplay())
    client.stats.peers[bob] = PeerStats(bob, "Bob", "f" * 16)
    client.admitted[bob] = b"n" * 16

    def flags(muted: bool, speaker: bool) -> SeatFlags:
        return SeatFlags(True, False, muted, None, False, speaker)

    client.flags[bob] = flags(muted=False, speaker=True)
    client.on_audio(bob, tone(0.5))
    client.flags[bob] = flags(muted=True, speaker=True)
    client.on_audio(bob, tone(0.5))
    client.flags[bob] = flags(muted=False, speaker=False)
    client.on_audio(bob, tone(0.5))
    picture = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="bgr24")
    client.on_video(bob, picture)
    stats = client.stats.peers[bob]
    assert (stats.audio_frames_decoded, stats.audio_frames_dropped) == (1, 2)
    assert (stats.video_frames_decoded, stats.video_frames_dropped) == (0, 1)
    assert -7 < stats.audio_level_dbfs < -5  # the one frame played: half scale
    # Someone no longer admitted (a verified kick the server hides): nothing of theirs plays.
    del client.admitted[bob]
    client.flags[bob] = flags(muted=False, speaker=True)
    client.on_audio(bob, tone(0.5))
    assert (stats.audio_frames_decoded, stats.audio_frames_dropped) == (1, 3)
