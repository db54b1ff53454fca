"""Red team of the SFU node's RTCP intake (issue 13's feedback path) with real aiortc peers on
loopback: a participant flooding RTCP compounds crafted to be expensive to parse (300 empty
packets in 1.2 kB: ~0.3 ms each in aiortc's parser, with no limit in front of it) gets at
most a bounded number parsed per second; its real feedback still counts afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aioice.ice
import pytest
from support import until
from test_sfu_feedback import CONF, session

from rtc import aiortc_adapter
from sfu.node import RTCP_BURST, RTCP_PER_SECOND, SfuNode, rtcp_cost

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


@pytest.fixture
async def node() -> AsyncIterator[SfuNode]:
    sfu = SfuNode()
    yield sfu
    await sfu.close()


async def test_an_rtcp_flood_is_cut_before_parsing_and_feedback_goes_on(node: SfuNode) -> None:
    alice, bob = session("Alice"), session("Bob")
    try:
        for name, s in (("Alice", alice), ("Bob", bob)):
            await s.set_answer(await node.join(CONF, name, await s.create_offer()))
            s.start_receiving(lambda receiver, kid, frame: None)

        def peer(pid: str) -> dict[str, int]:
            participants = node.stats()["conferences"][CONF]["participants"]
            return participants[pid]  # type: ignore[no-any-return]

        await until(lambda: peer("Bob")["rembs_received"] > 0, "Bob's REMB at the node", 30)
        dtls = bob.pc.getTransceivers()[0].receiver.transport
        sink = aiortc_adapter.RtpSink(dtls, 1 << 30)
        compound = bytes((0x80, 202, 0, 0)) * 300  # 300 empty SDES packets
        flood = 3000
        loop = asyncio.get_running_loop()
        start = loop.time()
        received = peer("Bob")["rtcp_received"]
        for i in range(flood):
            assert sink.send_rtcp(compound)
            if i % 5 == 0:
                await asyncio.sleep(0)  # let the node read its socket
        await until(lambda: peer("Bob")["rtcp_dropped"] > 0, "the flood cut at the node", 30)
        await asyncio.sleep(0.2)  # what is still in the socket
        elapsed = loop.time() - start
        # Of what reached the node, at most the burst and the rate over the flood were taken
        # (the loopback socket drops some of the flood on its own), ~13 tokens a compound.
        arrived = peer("Bob")["rtcp_received"] - received
        taken = arrived - peer("Bob")["rtcp_dropped"]
        allowed = (RTCP_BURST + RTCP_PER_SECOND * elapsed) / rtcp_cost(compound)
        assert arrived > allowed + 100, (arrived, allowed)
        assert taken <= allowed + 20, (arrived, taken, elapsed)
        # Bob's real feedback goes on once the bucket refills; Alice was never limited.
        rembs = peer("Bob")["rembs_received"]
        await until(lambda: peer("Bob")["rembs_received"] > rembs, "Bob's REMB again", 30)
        assert peer("Alice")["rtcp_dropped"] == 0
    finally:
        await alice.close()
        await bob.close()
