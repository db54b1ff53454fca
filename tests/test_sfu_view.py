"""A subscriber's view of its SFU slots (``SfuView``, PROTOCOL.md §15.6): how big it shows each
receiving slot, so the node forwards a simulcast layer that fits each tile.

The wire and the bounds are pure (fast, unmarked). The end-to-end part runs the server in the
test's event loop, its real in-process node, a real ``salon call`` (Alice) and a real Python
call client (Bob): Bob's view reaches the node for Bob's participant only; malformed,
oversized, foreign or too frequent views are refused with a clear error and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import msgspec
import pytest
import support
from aiortc import sdp
from call_helpers import CallProcess, amake_town, calls

from client.call.client import CallClient, CallOptions, sign_action
from client.call.view import PlainDisplay
from client.core.errors import ServerError
from client.core.rooms import resolve_room
from client.core.space import open_space
from protocol import wire
from protocol.conference_wire import (
    MAX_VIEW_HEIGHT,
    MAX_VIEW_SLOTS,
    CallJoined,
    JoinCall,
    SfuView,
    SlotView,
    view_problem,
)
from protocol.errors import ErrorCode
from protocol.wire import Done
from rtc import aiortc_adapter
from sfu import control
from spaces.sfu_registry import REGISTRY, LocalNode

# -- the wire -------------------------------------------------------------------------------------


def test_a_view_is_a_tagged_map_with_its_slots_as_pairs() -> None:
    view = SfuView(7, "room0001", "call0001", [SlotView("3", 360), SlotView("4", 0)])
    frame = wire.encoder.encode(view)
    assert msgspec.msgpack.decode(frame) == {
        "type": "sfu_view",
        "id": 7,
        "room_id": "room0001",
        "call_id": "call0001",
        "slots": [["3", 360], ["4", 0]],
    }
    assert wire.client_decoder.decode(frame) == view


def test_the_bounds_of_a_view() -> None:
    assert view_problem([]) is None
    assert view_problem([SlotView("0", 0), SlotView("1", MAX_VIEW_HEIGHT)]) is None
    assert "0 to 4320 px" in (view_problem([SlotView("0", MAX_VIEW_HEIGHT + 1)]) or "")
    assert "0 to 4320 px" in (view_problem([SlotView("0", -1)]) or "")
    assert "twice" in (view_problem([SlotView("2", 1), SlotView("2", 2)]) or "")
    assert "mid" in (view_problem([SlotView("", 1)]) or "")
    assert "mid" in (view_problem([SlotView("x" * 33, 1)]) or "")
    many = [SlotView(str(i), 1) for i in range(MAX_VIEW_SLOTS + 1)]
    assert "at most 32 slots" in (view_problem(many) or "")


def test_the_node_request_carries_the_heights_by_mid() -> None:
    server = control.ChannelCodec(b"k" * 32, "server")
    node = control.ChannelCodec(b"k" * 32, "node")
    request = control.NodeView(3, "conf", "2", {"3": 180, "4": 0})
    assert node.open_request(server.seal(request)) == request


# -- through the server to the node ---------------------------------------------------------------


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_view_reaches_the_node_for_its_sender_only(
    app_server: Any, user: Any, tmp_path: Path, loopback_ice: None
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    await town["Alice"].arun(
        "room", "create", town.space, "hall", "--kind", "conference", "--topology", "sfu"
    )
    local = srv.app[REGISTRY].handle("local")
    assert isinstance(local, LocalNode)
    node = local.node

    def views() -> dict[str, Any]:
        ((_, seen),) = node.stats()["conferences"].items()
        return {pid: p["view"] for pid, p in seen["participants"].items()}

    async with calls() as running, open_space(*keystore_of(town["Bob"])) as bob_session:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 60)
        running.append(alice)
        await alice.wait_for("topology sfu")
        hall = resolve_room(bob_session, "hall", ("conference",))
        bob = CallClient(
            bob_session, hall, CallOptions("test", "test", 60), PlainDisplay(io.StringIO())
        )
        bob_call = asyncio.create_task(bob.run())
        await alice.wait_for("first video from Bob")
        assert views() == {"1": {}, "2": {}}  # Alice, Bob: no view yet (as big as available)
        topology: Any = bob.topology
        pc = topology.session.pc
        slots = [t.mid for t in pc.getTransceivers() if t.direction == "recvonly"]
        video = [
            t.mid for t in pc.getTransceivers() if t.direction == "recvonly" and t.kind == "video"
        ]
        audio = next(m for m in slots if m not in video)
        conn = bob_session.conn
        call_id = bob.call_id

        async def send(*pairs: tuple[str, int], call: str = "") -> Any:
            view = SfuView(
                conn.next_id(), hall.room_id, call or call_id, [SlotView(*p) for p in pairs]
            )
            return await conn.request(view, Done)

        async def refused(*pairs: tuple[str, int], call: str = "") -> ServerError:
            with pytest.raises(ServerError) as caught:
                await send(*pairs, call=call)
            return caught.value

        await send((video[0], 360), (video[1], 0))
        assert views() == {"1": {}, "2": {video[0]: 360, video[1]: 0}}

        # Refused, each in plain words, and nothing changes: not Bob's view, not Alice's.
        too_high = await refused((video[0], MAX_VIEW_HEIGHT + 1))
        assert too_high.code == ErrorCode.INVALID_MESSAGE and "0 to 4320 px" in str(too_high)
        negative = await refused((video[0], -5))
        assert negative.code == ErrorCode.INVALID_MESSAGE and "-5" in str(negative)
        twice = await refused((video[0], 1), (video[0], 2))
        assert twice.code == ErrorCode.INVALID_MESSAGE and "twice" in str(twice)
        many = await refused(*[(str(i), 1) for i in range(MAX_VIEW_SLOTS + 1)])
        assert many.code == ErrorCode.TOO_LARGE and "32 slots" in str(many)
        not_a_slot = await refused((video[0], 90), ("nope", 90))
        assert not_a_slot.code == ErrorCode.INVALID_MESSAGE and "'nope'" in str(not_a_slot)
        sound = await refused((audio, 90))
        assert sound.code == ErrorCode.INVALID_MESSAGE and "not one of your video slots" in str(
            sound
        )
        over = await refused((video[0], 90), call="call-that-is-over")
        assert over.code == ErrorCode.NOT_FOUND
        # Carol joins the call but connects no media: her view has nothing to go to.
        async with open_space(*keystore_of(town["Carol"])) as carol:
            join = sign_action(carol, hall.room_id, call_id, "join", carol.member_key)
            await carol.conn.request(JoinCall(carol.conn.next_id(), hall.room_id, join), CallJoined)
            early = SfuView(carol.conn.next_id(), hall.room_id, call_id, [SlotView(video[0], 90)])
            with pytest.raises(ServerError) as no_media:
                await carol.conn.request(early, Done)
            assert no_media.value.code == ErrorCode.NOT_FOUND
            assert "SfuOffer first" in str(no_media.value)
        assert views() == {"1": {}, "2": {video[0]: 360, video[1]: 0}}

        # A layout change: a new whole view replaces the old one.
        await send((video[1], 720))
        assert views() == {"1": {}, "2": {video[1]: 720}}

        # The forwarder follows: the slot carrying Alice's camera pauses while Bob shows it at
        # 0 px, and resumes when a view leaves it out (as big as there is).
        ((conference, _),) = node.stats()["conferences"].items()
        forwarder = node.forwarder(conference)
        assert forwarder is not None
        answer = sdp.SessionDescription.parse(pc.remoteDescription.sdp)
        ssrc_of = {m.rtp.muxId: m.ssrc[0].ssrc for m in answer.media if m.ssrc}
        routed = [mid for mid in video if forwarder.layers("2").get(ssrc_of[mid]) is not None]
        assert len(routed) == 1, forwarder.layers("2")
        await send((routed[0], 0))
        assert forwarder.layers("2")[ssrc_of[routed[0]]] is None
        await send()
        await support.until(
            lambda: forwarder.layers("2")[ssrc_of[routed[0]]] is not None,
            "Bob's slot forwarding Alice again",
            10,
        )

        # Sent on every change only: a flood is cut short, and Alice's call goes on.
        codes = []
        for height in range(20):
            try:
                await send((video[0], height))
            except ServerError as exc:
                codes.append(exc.code)
        assert codes and set(codes) == {ErrorCode.RATE_LIMITED}, codes
        assert views()["1"] == {}
        sent = forwarder.sent_to("1")
        await support.until(
            lambda: forwarder.sent_to("1") > sent + 50, "Alice still receiving Bob", 20
        )
        bob_call.cancel()
        with contextlib.suppress(BaseException):
            await bob_call
        await alice.stop()


def keystore_of(person: Any) -> tuple[Any, Any]:
    keystore = person.keystore()
    return keystore, keystore.load().memberships[0]
