"""Moderation that the SFU node enforces, with the server in the test's event loop.

Alice (the host) is a real ``salon call`` process. Bob is a participant whose client
*ignores* being muted — it keeps sending audio — so only the server's SFU stands between
his microphone and the others. Carol knocks and waits in the lobby: she may not connect
her media to the SFU and receives no media keys.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
import support
from call_helpers import CallProcess, amake_town, calls

from client.call.client import CallClient, CallOptions, sign_action
from client.call.view import PlainDisplay
from client.core.errors import ServerError
from client.core.rooms import resolve_room
from client.core.space import open_space
from protocol.conference_wire import (
    CallInfo,
    CallJoined,
    CallSignal,
    GetCall,
    JoinCall,
    SfuAnswer,
    SfuOffer,
)
from protocol.errors import ErrorCode
from rtc import aiortc_adapter
from spaces.sfu_registry import REGISTRY, LocalNode

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


class IgnoresMutes(CallClient):
    """A modified client: whatever the hosts decide, it sends audio and video."""

    def _apply_own_flags(self) -> None:
        super()._apply_own_flags()
        if self.topology is not None:
            self.topology.set_sending(video=True, audio=True)


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    await support.until(condition, what, timeout, interval=0.1)


async def test_sfu_enforces_mute_and_kick_and_keeps_the_lobby_dark(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    await town["Alice"].arun(
        "room", "create", town.space, "hall", "--kind", "conference", "--topology", "sfu", "--lobby"
    )
    local = srv.app[REGISTRY].handle("local")
    assert isinstance(local, LocalNode)
    node = local.node

    def forwarded(pid: str) -> dict[str, Any]:
        ((_, seen),) = node.stats()["conferences"].items()
        return dict(seen["forwarder"]["participants"][pid])

    async with calls() as running, open_space(*keystore_of(town["Bob"])) as bob_session:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 60)
        running.append(alice)
        await alice.wait_for("topology sfu")
        hall = resolve_room(bob_session, "hall", ("conference",))
        bob_out = io.StringIO()
        bob = IgnoresMutes(
            bob_session, hall, CallOptions("test", "test", 60), PlainDisplay(bob_out)
        )
        bob_call = asyncio.create_task(bob.run())
        await alice.wait_for(r"Bob \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Bob")
        await alice.wait_for("first video from Bob")
        ((conference, _),) = node.stats()["conferences"].items()
        assert sorted(node.participants(conference)) == ["1", "2"]  # Alice, Bob

        # Carol knocks: in the lobby she may not reach the SFU, and no keys reach her.
        async with open_space(*keystore_of(town["Carol"])) as carol:
            conn = carol.conn
            info = await conn.request(GetCall(conn.next_id(), hall.room_id), CallInfo)
            knock = sign_action(carol, hall.room_id, info.state.call_id, "join", carol.member_key)
            joined = await conn.request(JoinCall(conn.next_id(), hall.room_id, knock), CallJoined)
            assert joined.status == "lobby"
            offer = SfuOffer(conn.next_id(), hall.room_id, info.state.call_id, "v=0\r\n")
            with pytest.raises(ServerError) as refused:
                await conn.request(offer, SfuAnswer)
            assert refused.value.code == ErrorCode.FORBIDDEN and "lobby" in str(refused.value)
            codes = []
            for _ in range(6):  # each offer costs the node a connection: a few, no more
                again = SfuOffer(conn.next_id(), hall.room_id, info.state.call_id, "v=0\r\n")
                with pytest.raises(ServerError) as refused:
                    await conn.request(again, SfuAnswer)
                codes.append(refused.value.code)
            assert codes[-1] == "rate_limited" and codes[0] == "forbidden"

            # Mute Bob: his client keeps sending, the SFU drops it; his video still flows.
            assert forwarded("2")["dropped_muted"] == 0
            await town["Alice"].arun("mod", town.space, "hall", "mute", "Bob")
            await until(lambda: "muted you" in bob_out.getvalue(), "Bob's client hearing it")
            await until(lambda: node.is_muted(conference, "2"), "the node muting Bob")
            await asyncio.sleep(3)
            dropped = forwarded("2")["dropped_muted"]
            assert dropped >= 100, dropped  # ~50 audio packets a second, all dropped
            assert bob.topology is not None and bob.topology.stats()["frames_sent"]["audio"] > 0
            await town["Alice"].arun("mod", town.space, "hall", "unmute", "Bob")
            await until(lambda: not node.is_muted(conference, "2"), "the node unmuting Bob")
            await asyncio.sleep(1)
            resumed = forwarded("2")["dropped_muted"]
            await asyncio.sleep(1)
            assert forwarded("2")["dropped_muted"] == resumed  # forwarded again
            events = [e for e in drain(conn.events) if isinstance(e, CallSignal)]
            assert events == []  # nothing relayed to the lobby: no media keys

        # Kick Bob: the node drops his connection at once, his call ends.
        await town["Alice"].arun("mod", town.space, "hall", "kick", "Bob")
        outcome = await asyncio.wait_for(bob_call, 20)
        assert outcome.reason == "removed"
        await until(lambda: node.participants(conference) == ["1"], "the node dropping Bob")
        await asyncio.sleep(0.5)
        host = await alice.stop()

    seen = host.peer("Bob")
    assert seen["muted"] is False and seen["decrypt_failures"] == 0
    assert seen["audio_frames_decoded"] > 100  # before the mute and after the unmute
    # What Alice's client would have dropped had it arrived: next to nothing, because the
    # SFU did not forward Bob's audio while he was muted (the ~150 packets it dropped).
    assert seen["audio_frames_dropped"] < 15, seen


def keystore_of(person: Any) -> tuple[Any, Any]:
    keystore = person.keystore()
    return keystore, keystore.load().memberships[0]


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
