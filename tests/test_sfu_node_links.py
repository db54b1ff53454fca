"""A standalone node's channels to several instances (sfu/standalone.py, issue 11): what one
instance's channel may make the node do to another instance's participants.

The node (a real :class:`~sfu.standalone.StandaloneNode` with its real :class:`SfuNode`)
gets requests as they come off two authenticated channels, A and B (the handshake and
frame MACs are :mod:`sfu.control`'s, tested in test_sfu_units.py); offers are real aiortc
offers. A channel may not let go, kick, mute, take over or set the view of the other's
participants; once a channel ends, its participants are orphans: kept for the grace (any
channel may then drop or mute them, none may take them over or set their view), then let go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aioice.ice
import msgspec
import pytest
from support import until

from client.call.e2ee_media import MEDIA_SUITE, SfuSession
from client.call.sframe import SFrameContext
from rtc import aiortc_adapter
from sfu import control
from sfu.standalone import StandaloneNode

SECRET = "n0de-secret-for-tests-0123456789abcdef"
CONF = "conference-1"
GRACE = 0.5


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


class Channel:
    """What the node sends back on one of its links."""

    def __init__(self, node: StandaloneNode, index: int) -> None:
        self.node = node
        self.link = node.links[index]
        self.sent: list[msgspec.Struct] = []
        self.link.send = self.sent.append
        self.link.registered = True
        self.next_id = 0

    async def ask(self, make: type, *args: object) -> msgspec.Struct:
        self.next_id += 1
        await self.node._serve(self.link, make(self.next_id, CONF, *args))
        reply = next(m for m in self.sent if getattr(m, "id", None) == self.next_id)
        return reply

    def events(self) -> list[msgspec.Struct]:
        return [m for m in self.sent if isinstance(m, control.NodeLeft | control.NodeSpeaker)]


@pytest.fixture
async def node() -> AsyncIterator[StandaloneNode]:
    standalone = StandaloneNode(
        ["http://127.0.0.1:1", "http://127.0.0.1:2"], SECRET, "n1", orphan_grace=GRACE
    )
    yield standalone
    await standalone.node.close()


async def offer() -> tuple[SfuSession, str]:
    session = SfuSession(recv_ctx=SFrameContext(MEDIA_SUITE), video_slots=1, audio_slots=1)
    return session, await session.create_offer()


def refused(reply: msgspec.Struct) -> bool:
    return isinstance(reply, control.NodeError) and reply.code == "not_found"


async def test_a_channel_acts_only_on_its_own_participants_and_on_orphans(
    node: StandaloneNode,
) -> None:
    a, b = Channel(node, 0), Channel(node, 1)
    sessions = []
    try:
        for channel, participant in ((a, "1"), (b, "2")):
            session, sdp = await offer()
            sessions.append(session)
            reply = await channel.ask(control.NodeJoin, participant, sdp, int(participant))
            assert isinstance(reply, control.NodeAnswer)
        assert sorted(node.node.participants(CONF)) == ["1", "2"]  # one conference for both

        # B cannot touch A's participant: not let go, kicked, muted or taken over.
        assert refused(await b.ask(control.NodeLeave, "1"))
        assert refused(await b.ask(control.NodeKick, "1"))
        assert refused(await b.ask(control.NodeMute, "1", "audio", True))
        session, sdp = await offer()
        sessions.append(session)
        assert refused(await b.ask(control.NodeJoin, "1", sdp, 1))
        assert sorted(node.node.participants(CONF)) == ["1", "2"]
        assert not node.node.is_muted(CONF, "1")
        assert isinstance(await a.ask(control.NodeMute, "1", "audio", True), control.NodeDone)
        slots = sessions[0].pc.getTransceivers()
        mid = next(t.mid for t in slots if t.direction == "recvonly" and t.kind == "video")
        assert refused(await b.ask(control.NodeView, "1", {mid: 180}))
        assert isinstance(await a.ask(control.NodeView, "1", {mid: 180}), control.NodeDone)
        bad = await a.ask(control.NodeView, "1", {"nope": 1})
        assert isinstance(bad, control.NodeError) and bad.code == "invalid_message"

        # A's channel ends: its participant is kept, as an orphan, for the grace.
        await node._link_ended(a.link)
        assert node.health()["orphans"] == 1
        assert sorted(node.node.participants(CONF)) == ["1", "2"]
        assert refused(await b.ask(control.NodeJoin, "1", sdp, 1))  # still not taken over
        assert isinstance(await b.ask(control.NodeMute, "1", "video", True), control.NodeDone)
        assert node.node.is_muted(CONF, "1", "video")
        assert refused(await b.ask(control.NodeView, "1", {mid: 0}))  # its owner's alone
        assert node.node.stats()["conferences"][CONF]["participants"]["1"]["view"] == {mid: 180}
        await until(lambda: node.node.participants(CONF) == ["2"], "the orphan let go", 5)
        assert node.health()["orphans"] == 0
        assert not a.events()  # nobody to tell: A's channel is gone

        # B's own participant leaving is told to B only.
        assert isinstance(await b.ask(control.NodeLeave, "2"), control.NodeDone)
        assert control.NodeLeft(CONF, "2", "left") in b.events()
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


async def test_an_orphan_dropped_by_a_surviving_channel(node: StandaloneNode) -> None:
    a, b = Channel(node, 0), Channel(node, 1)
    session, sdp = await offer()
    try:
        assert isinstance(await a.ask(control.NodeJoin, "7", sdp, 7), control.NodeAnswer)
        await node._link_ended(a.link)
        assert isinstance(await b.ask(control.NodeKick, "7"), control.NodeDone)
        assert node.node.participants(CONF) == [] and node.health()["orphans"] == 0
        assert control.NodeLeft(CONF, "7", "kicked") not in b.events()  # not B's to hear of
    finally:
        await session.close()
