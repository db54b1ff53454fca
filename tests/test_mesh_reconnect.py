"""A mesh pair whose connection is killed comes back by itself (no network namespace needed).

Two real :class:`~client.call.mesh.MeshTopology` objects with real aiortc on loopback, joined
by an in-memory signaller (the seam the call client fills with sealed, signed signals) and
a counting sink. Killing one side's peer connection is a forced ICE/DTLS failure:

- closed on the offerer: it sees ``failed`` and offers a fresh connection under attempt 2;
- closed on the answerer: its DTLS close reaches the offerer, which offers again;
- silenced (``rtc.aiortc_adapter.blackhole``: every datagram dropped, nothing closed) on the
  answerer: the offerer only sees silence (aiortc has no ``disconnected``), counts it as a
  drop after a few seconds and offers again; the answerer takes the higher attempt.

Either way video frames flow again and both sides count one reconnect.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import pytest
from aiortc import VideoStreamTrack
from support.poll import until

from client.call.keys import CallKeys
from client.call.mesh import MeshTopology
from client.call.signalling import SignalKind
from client.call.topology import LinkState, Peer, TopologyContext
from rtc.aiortc_adapter import blackhole

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90), pytest.mark.usefixtures("loopback_ice")]

ANN, BEN = b"\x01" * 32, b"\x02" * 32  # Ann's key is the smaller: Ann offers


class Sink:
    def __init__(self) -> None:
        self.video = 0
        self.links: list[tuple[LinkState, str]] = []
        self.reconnected: list[float] = []

    def on_video(self, member: bytes, frame: av.VideoFrame) -> None:
        self.video += 1

    def on_audio(self, member: bytes, frame: av.AudioFrame) -> None:
        pass

    def on_link(self, member: bytes, state: LinkState, detail: str = "") -> None:
        self.links.append((state, detail))

    def on_decrypt_failure(self, member: bytes) -> None:
        pass

    def on_screen(self, member: bytes, frame: av.VideoFrame) -> None:
        pass

    def on_screen_decrypt_failure(self, member: bytes) -> None:
        pass

    def on_send_key(self, epoch: int) -> None:
        pass

    def on_reconnected(self, member: bytes | None, outage: float) -> None:
        self.reconnected.append(outage)

    def on_retransmission(self, member: bytes, *, nacked: int = 0, resent: int = 0) -> None:
        pass


class Wire:
    """Delivers each side's signals to the other (in order, off the sender's stack)."""

    def __init__(self) -> None:
        self.ends: dict[bytes, tuple[MeshTopology, Peer]] = {}
        self.sent: list[tuple[SignalKind, int]] = []
        self.dead = False  # the network is gone: signals are lost too
        self._tasks: set[asyncio.Task[Any]] = set()

    def signaller_for(self, me: bytes) -> Any:
        wire = self

        class Signaller:
            async def send(
                self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int
            ) -> None:
                wire.sent.append((kind, attempt))
                if wire.dead:
                    return
                topology, sender = wire.ends[peer.member]
                task = asyncio.create_task(topology.on_signal(sender, kind, payload, attempt))
                wire._tasks.add(task)
                task.add_done_callback(wire._tasks.discard)

        return Signaller()


async def pair(video: bool = True) -> tuple[MeshTopology, MeshTopology, Sink, Sink, Wire]:
    wire = Wire()
    sinks = {ANN: Sink(), BEN: Sink()}
    tops = {}
    for me in (ANN, BEN):
        ctx = TopologyContext(
            me=me, keys=CallKeys(me), sink=sinks[me], signaller=wire.signaller_for(me),
            video=VideoStreamTrack() if video else None, audio=None,
        )  # fmt: skip
        tops[me] = MeshTopology(ctx)
    ann_sees_ben = Peer(BEN, 2, b"link", True, "Ben")
    ben_sees_ann = Peer(ANN, 1, b"link", False, "Ann")
    wire.ends = {ANN: (tops[ANN], ann_sees_ben), BEN: (tops[BEN], ben_sees_ann)}
    for top in tops.values():
        top.set_sending(video=video, audio=False)
    await tops[ANN].set_peers({BEN: ann_sees_ben})
    await tops[BEN].set_peers({ANN: ben_sees_ann})
    return tops[ANN], tops[BEN], sinks[ANN], sinks[BEN], wire


async def flowing(sinks: tuple[Sink, Sink], more: int = 15, timeout: float = 30) -> None:
    start = [s.video for s in sinks]
    await until(
        lambda: all(s.video >= n + more for s, n in zip(sinks, start, strict=True)),
        f"{more} more video frames each way",
        timeout,
    )


@pytest.mark.parametrize(
    "killed", ["offerer-closed", "answerer-closed", "answerer-silenced", "offerer-silenced"]
)
async def test_a_killed_pair_reconnects_under_a_higher_attempt(killed: str) -> None:
    ann, ben, ann_sink, ben_sink, wire = await pair()
    try:
        await flowing((ann_sink, ben_sink))
        victim = ann if killed.startswith("offerer") else ben
        link = victim._links[BEN if victim is ann else ANN]
        assert link.pc is not None
        started = time.monotonic()
        if killed.endswith("silenced"):
            blackhole(link.pc)  # the network is gone: silence both ways, nothing closed
        else:
            await link.pc.close()  # the pair's ICE and DTLS transports are gone
        await until(lambda: ann_sink.reconnected and ben_sink.reconnected, "reconnected", 40)
        took = time.monotonic() - started
        await flowing((ann_sink, ben_sink))
        assert ("offer", 2) in wire.sent and ("answer", 2) in wire.sent
        assert ann.link_state(BEN) == "connected" and ben.link_state(ANN) == "connected"
        assert ann._links[BEN].policy.reconnects == 1 and ben._links[ANN].policy.reconnects == 1
        print(f"\nkilled on the {killed}: reconnected after {took:.1f} s")
    finally:
        await asyncio.gather(ann.close(), ben.close())


async def test_a_pair_that_sends_no_media_is_not_taken_for_a_dropped_one() -> None:
    """Nobody sends (cameras and microphones off): RTCP alone keeps the link alive."""
    ann, ben, ann_sink, ben_sink, wire = await pair(video=False)
    try:
        await until(
            lambda: ann.link_state(BEN) == "connected" and ben.link_state(ANN) == "connected",
            "connected",
            30,
        )
        connected_at = time.monotonic()
        # Longer than the silence (2.5 s) plus the grace (4 s) a dropped link gets.
        await until(lambda: time.monotonic() - connected_at > 9, "9 s connected", 15, 0.5)
        assert ann_sink.video == ben_sink.video == 0
        assert wire.sent == [("offer", 1), ("answer", 1)]
        assert not ann_sink.reconnected and not ben_sink.reconnected
    finally:
        await asyncio.gather(ann.close(), ben.close())


async def test_a_pair_that_stays_down_is_given_up_with_a_note() -> None:
    """The network never comes back: after 30 s of trying the pair says so, once."""
    ann, ben, ann_sink, ben_sink, wire = await pair()
    try:
        await flowing((ann_sink, ben_sink))
        gone = time.monotonic()
        wire.dead = True  # the signals cannot get through either
        for top in (ann, ben):
            link = next(iter(top._links.values()))
            assert link.pc is not None
            blackhole(link.pc)
        await until(
            lambda: any("gave up" in d for s, d in ann_sink.links if s == "failed"),
            "Ann giving up",
            45,
            0.2,
        )
        took = time.monotonic() - gone
        assert 30 <= took <= 40, took
        assert ann.link_state(BEN) == "failed"
        assert ("offer", 3) in wire.sent  # it kept trying meanwhile
        assert not ann_sink.reconnected
        # The answerer too (it cannot retry, but it says when it stops waiting).
        await until(
            lambda: any("gave up" in d for s, d in ben_sink.links if s == "failed"), "Ben", 10
        )
    finally:
        await asyncio.gather(ann.close(), ben.close())
