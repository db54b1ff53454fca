"""sfu/node.py with real aiortc peers on loopback: E2EE media through the SFU, moderation, fuzz.

Every client is a ``client.call.e2ee_media.SfuSession`` publishing a test pattern and a tone,
SFrame-encrypted under its own key; the node forwards what it cannot read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aioice.ice
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import until

from client.call.e2ee_media import MEDIA_SUITE, DecryptingReceiver, SfuSession
from client.call.media import (
    TestPatternTrack,
    ToneTrack,
    colour_distance,
    dominant_colour,
    name_colour,
)
from client.call.sframe import SFrameContext
from rtc import aiortc_adapter
from sfu import rtp
from sfu.errors import InvalidOffer, NotFound, OfferTooLarge, SfuError
from sfu.node import ActiveSpeaker, NodeEvent, ParticipantLeft, SfuConfig, SfuNode

CONF = "conf-1"
CAST = ["Alice", "Bob", "Carol", "Dave"]
KEYS = {name: bytes([i + 1]) * 16 for i, name in enumerate(CAST)}
KIDS = {name: (i + 1) << 16 for i, name in enumerate(CAST)}
OWNER = {kid: name for name, kid in KIDS.items()}
SAME_COLOUR = 40.0


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


async def settled(count: Callable[[], object], quiet: float = 0.5, timeout: float = 15) -> None:
    """Wait until ``count()`` stops changing for ``quiet`` seconds: what was in flight has
    landed (under load that takes longer than any fixed pause)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = count(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            return
    raise AssertionError(f"still changing after {timeout} s: {last}")


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    await until(condition, what, timeout)


class Client:
    """One participant: an SfuSession plus what it decoded, per sender."""

    def __init__(
        self, name: str, *, publish: bool = True, keys: dict[str, bytes] | None = None
    ) -> None:
        self.name = name
        rx = SFrameContext(MEDIA_SUITE)
        for other, key in (keys if keys is not None else KEYS).items():
            if other != name:
                rx.add_key(KIDS[other], key)
        tx = SFrameContext(MEDIA_SUITE)
        if publish:
            tx.add_key(KIDS[name], KEYS[name])
        self.session = SfuSession(
            send_ctx=tx if publish else None,
            send_kid=KIDS[name] if publish else None,
            recv_ctx=rx,
            video=TestPatternTrack(name) if publish else None,  # 320x240 @ 15 fps
            audio=ToneTrack(name) if publish else None,
            video_slots=4,
            audio_slots=4,
        )
        self.video: collections.Counter[str] = collections.Counter()
        self.audio: collections.Counter[str] = collections.Counter()
        self.colour: dict[str, tuple[int, int, int]] = {}

    async def join(self, node: SfuNode) -> None:
        answer = await node.join(CONF, self.name, await self.session.create_offer())
        await self.session.set_answer(answer)
        self.session.start_receiving(self.on_frame)

    def on_frame(self, receiver: DecryptingReceiver, kid: int, frame: Any) -> None:
        sender = OWNER[kid]
        if receiver.kind == "video":
            self.video[sender] += 1
            if self.video[sender] % 5 == 0:  # sample: colour checks cost CPU
                self.colour[sender] = dominant_colour(frame.to_ndarray(format="bgr24"))
        else:
            self.audio[sender] += 1

    def stats(self) -> dict[str, Any]:
        return self.session.stats()

    def failures(self) -> int:
        return int(self.stats()["decrypt_failures"])


@pytest.fixture
async def node() -> AsyncIterator[tuple[SfuNode, list[NodeEvent]]]:
    events: list[NodeEvent] = []
    sfu = SfuNode(on_event=events.append)
    yield sfu, events
    await sfu.close()


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.session.close() for c in clients))


async def test_four_clients_e2ee_through_sfu_mute_kick_and_a_keyless_listener(
    node: tuple[SfuNode, list[NodeEvent]],
) -> None:
    sfu, events = node
    clients = [Client(name) for name in CAST]
    eve = Client("Eve", publish=False, keys={name: bytes(16) for name in CAST})  # wrong keys
    try:
        for c in [*clients, eve]:
            await c.join(sfu)

        def everyone_decodes_everyone(video: int, audio: int) -> bool:
            return all(
                c.video[o] >= video and c.audio[o] >= audio and o in c.colour
                for c in clients
                for o in CAST
                if o != c.name
            )

        await wait_for(lambda: everyone_decodes_everyone(10, 25), "all video and audio")
        for c in clients:
            for other in CAST:
                if other != c.name:
                    distance = colour_distance(c.colour[other], name_colour(other))
                    assert distance < SAME_COLOUR, (c.name, other, c.colour[other])
            assert c.failures() == 0, c.stats()
        # Eve holds no right key: she only counts failures, decodes nothing, asks nothing.
        await wait_for(lambda: eve.failures() > 50, "Eve's decrypt failures")
        assert not eve.video and not eve.audio
        assert all(r["keyframe_requests"] == 0 for r in eve.stats()["receivers"])
        assert sfu.active_speaker(CONF) in CAST
        assert any(isinstance(e, ActiveSpeaker) for e in events)

        # Mute Bob at the SFU: nobody hears him any more; everyone else still flows.
        alice, bob, carol, dave = clients
        sfu.set_muted(CONF, "Bob", True)
        assert sfu.is_muted(CONF, "Bob")
        await settled(lambda: {c.name: c.audio["Bob"] for c in (alice, carol, dave)})
        heard = {c.name: c.audio["Bob"] for c in (alice, carol, dave)}
        seen = alice.video["Bob"]
        carol_heard = alice.audio["Carol"]
        await asyncio.sleep(1.0)
        assert {c.name: c.audio["Bob"] for c in (alice, carol, dave)} == heard
        assert alice.video["Bob"] > seen + 5  # his video still flows
        assert alice.audio["Carol"] > carol_heard + 25
        forwarder = sfu.stats()["conferences"][CONF]["forwarder"]
        assert forwarder["participants"]["Bob"]["dropped_muted"] >= 40
        sfu.set_muted(CONF, "Bob", False)
        await wait_for(lambda: alice.audio["Bob"] > heard["Alice"] + 10, "Bob heard again")

        # Kick Dave: his connection drops, he is gone from the node, media stops both ways.
        await sfu.kick(CONF, "Dave")
        assert "Dave" not in sfu.participants(CONF)
        assert ParticipantLeft(CONF, "Dave", "kicked") in events
        await wait_for(
            lambda: dave.session.pc.connectionState in ("closed", "failed"), "Dave dropped", 10
        )
        await settled(lambda: alice.video["Dave"])
        got = alice.video["Dave"]
        await asyncio.sleep(0.7)
        assert alice.video["Dave"] == got
        with pytest.raises(NotFound):
            await sfu.kick(CONF, "Dave")
        assert all(c.failures() == 0 for c in (alice, bob, carol))
    finally:
        await close_all([*clients, eve])


def fuzz_packets(ssrcs: list[int], rng: random.Random) -> Iterator[bytes]:
    """Hostile RTP: odd versions, CSRC/extension/padding lengths, SSRCs, PTs, payloads.

    Sequence numbers increase per SSRC so SRTP replay protection lets most of it through
    to the SFU's own parser (libsrtp already refuses some of the worst headers).
    """
    seqs = {ssrc: rng.randrange(0, 0x10000) for ssrc in ssrcs}
    for n in range(600):
        ssrc = rng.choice(ssrcs)
        seqs[ssrc] = (seqs[ssrc] + 1) & 0xFFFF
        if n % 2:
            b0 = rng.choice([0x80, 0x90, 0xA0, 0xB0]) | rng.randrange(0, 16)
            b1 = rng.randrange(0, 256)
            head = bytes((b0, b1)) + seqs[ssrc].to_bytes(2, "big") + rng.randbytes(4)
            yield head + ssrc.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 80))
        else:  # a well-formed header on a garbage VP8/Opus payload
            yield rtp.build_rtp(
                rng.random() < 0.5,
                rng.choice([96, 97, 111, 0]),
                seqs[ssrc],
                rng.randrange(0, 1 << 32),
                ssrc,
                rng.randbytes(rng.randrange(0, 40)),
            )


def fuzz_rtcp(rng: random.Random) -> Iterator[bytes]:
    for _ in range(200):
        pt = rng.choice([200, 201, 202, 203, 204, 205, 206, 207])
        body = rng.randbytes(rng.randrange(4, 60))
        length = rng.randrange(0, 20)
        yield bytes((0x80 | rng.randrange(0, 32), pt)) + length.to_bytes(2, "big") + body


async def test_malformed_rtp_and_rtcp_from_one_client_hurts_nobody_else(
    node: tuple[SfuNode, list[NodeEvent]],
) -> None:
    sfu, _ = node
    clients = [Client(name) for name in CAST[:3]]
    try:
        for c in clients:
            await c.join(sfu)
        alice, bob, carol = clients
        await wait_for(lambda: alice.video["Bob"] >= 5 and bob.video["Alice"] >= 5, "media")
        # Carol turns hostile: garbage through her own (valid) SRTP session to the SFU.
        transceivers = carol.session.pc.getTransceivers()
        sink = aiortc_adapter.RtpSink(transceivers[0].sender.transport)
        carol.session.set_sending(video=False, audio=False)  # her own stream stops first
        ssrcs = [aiortc_adapter.sender_ssrc(t.sender) for t in transceivers[:2]]
        ssrcs += [0xBAD, 0xBAD2, 0xBAD3]
        rng = random.Random(7)
        for n, packet in enumerate(fuzz_packets(ssrcs, rng)):
            sink(packet)
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        for packet in fuzz_rtcp(rng):
            sink.send_rtcp(packet)
        before = (alice.video["Bob"], bob.video["Alice"], alice.audio["Bob"])
        await asyncio.sleep(1.5)
        after = (alice.video["Bob"], bob.video["Alice"], alice.audio["Bob"])
        assert after[0] > before[0] + 10 and after[1] > before[1] + 10
        assert after[2] > before[2] + 40
        stats = sfu.stats()["conferences"][CONF]["forwarder"]["participants"]["Carol"]
        assert stats["dropped_malformed"] + stats["dropped_unknown"] > 100
        assert set(sfu.participants(CONF)) == {"Alice", "Bob", "Carol"}
        # Garbage that reached receivers as media fails decryption there, cleanly.
        assert alice.failures() == bob.failures()  # both see the same forwarded garbage
        assert alice.session.pc.connectionState == "connected"
    finally:
        await close_all(clients)


OFFER_LIMITS = SfuConfig(max_offer_bytes=20_000, max_media_sections=6, max_candidates=4)


@pytest.fixture(scope="module")
def sample_offer() -> str:
    async def make() -> str:
        aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
        c = Client("Alice")
        offer = await c.session.create_offer()
        await c.session.close()
        return offer

    return asyncio.run(make())


async def test_offers_are_validated(sample_offer: str) -> None:
    sfu = SfuNode(OFFER_LIMITS)
    try:
        with pytest.raises(OfferTooLarge):
            await sfu.join(CONF, "x", sample_offer + "a=x\r\n" * 5000)
        with pytest.raises(OfferTooLarge):  # 2 published + 8 slots > 6 media sections
            await sfu.join(CONF, "x", sample_offer)
        with pytest.raises(InvalidOffer):
            await sfu.join(CONF, "x", "v=0\r\nnonsense")
        no_bundle = sample_offer.replace("a=group:BUNDLE", "a=group:LS")
        with pytest.raises(SfuError):
            await sfu.join(CONF, "x", no_bundle)
        assert sfu.participants(CONF) == []
    finally:
        await sfu.close()


async def test_candidates_repeated_in_bundled_sections_count_once(sample_offer: str) -> None:
    """aiortc (the CLI) writes its transport's candidates into every BUNDLEd section: one
    host address is one candidate, however many sections repeat it; a new one counts."""
    repeated = sample_offer.count("a=candidate:")
    assert repeated > 8, "the sample offer repeats its candidate in each bundled section"
    sfu = SfuNode(SfuConfig(max_candidates=1))
    try:
        answer = await sfu.join(CONF, "x", sample_offer)
        assert answer.startswith("v=0")
        line = next(x for x in sample_offer.split("\r\n") if x.startswith("a=candidate:"))
        second = line.replace(" 127.0.0.1 ", " 127.0.0.2 ")
        with pytest.raises(OfferTooLarge):
            await sfu.join(CONF, "y", sample_offer.replace(line, f"{line}\r\n{second}", 1))
    finally:
        await sfu.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_offer_parsing_fuzz(sample_offer: str, data: st.DataObject) -> None:
    lines = sample_offer.split("\r\n")
    ops = data.draw(
        st.lists(st.tuples(st.integers(0, len(lines) - 1), st.text(max_size=40)), max_size=6)
    )
    for index, text in ops:
        lines[index] = text if data.draw(st.booleans()) else lines[index][: len(text)]
    sfu = SfuNode(SfuConfig())
    with contextlib.suppress(SfuError):
        sfu._parse_offer("\r\n".join(lines))


async def test_rejoin_replaces_the_old_connection(node: tuple[SfuNode, list[NodeEvent]]) -> None:
    sfu, events = node
    first, second = Client("Alice"), Client("Alice")
    bob = Client("Bob")
    try:
        await first.join(sfu)
        await bob.join(sfu)
        sfu.set_muted(CONF, "Alice", True)
        await second.join(sfu)
        assert ParticipantLeft(CONF, "Alice", "replaced") in events
        assert sfu.is_muted(CONF, "Alice")  # moderation survives a reconnect
        await wait_for(lambda: bob.video["Alice"] >= 5, "video from the new connection")
        await asyncio.sleep(0.5)
        assert bob.audio["Alice"] == 0
        await sfu.leave(CONF, "Alice")
        assert ParticipantLeft(CONF, "Alice", "left") in events
        with pytest.raises(NotFound):
            sfu.set_muted(CONF, "Alice", True)
    finally:
        await close_all([first, second, bob])
