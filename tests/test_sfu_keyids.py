"""Issue 8, points 4 and 5: on the SFU nobody speaks as someone else or silences them, and
a media key id never names two keys.

Every receiver holds every sender's SFrame key, so Mallory *can* encrypt frames under Bob's
key id (and with a huge counter, to push Bob's genuine frames out of every receiver's
replay window). The SFU drops frames whose key id is not the publisher's and names each
forwarded packet's publisher in its CSRC; receivers keep keys per publisher and check the
key id against the slot's publisher. Key ids never wrap: a sender out of epochs ends its
call instead of reusing an id.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from call_helpers import CallProcess, Town, calls, make_town
from support import until

from client.call.e2ee_media import (
    MEDIA_SUITE,
    DecryptingReceiver,
    EncryptedVideoSender,
    SfuSession,
    WrongSourceError,
)
from client.call.keys import CallKeys, MediaKeyMessage, SenderKey
from client.call.media import (
    TestPatternTrack,
    ToneTrack,
    colour_distance,
    dominant_colour,
    name_colour,
)
from client.call.sframe import SFrameContext, protect_frame
from client.call.sfu_topology import MediaKeyRing
from protocol.media_keys import MAX_EPOCH, KeyIdExhausted, kid_index, media_kid
from rtc.aiortc_adapter import EncodedFrame, MarkerJitterBuffer
from sfu import rtp
from sfu.forwarder import DownTrackSpec, Forwarder, ForwarderConfig, UpTrackSpec
from sfu.node import SfuConfig, SfuNode

VP8, OPUS = 96, 111
BOB_KEY, MALLORY_KEY = bytes([2]) * 16, bytes([3]) * 16
ALICE, BOB, MALLORY = 1, 2, 3  # sender indexes (seats)
BOB_KID, MALLORY_KID = media_kid(BOB, 0), media_kid(MALLORY, 0)
HUGE_CTR = 2**40
SAME_COLOUR = 40.0


# -- the SFU: reading the key id below the frame layer ------------------------------------------


def vp8_packet(frame: bytes, *, start: bool = True, seq: int = 1, ssrc: int = 0x1000) -> bytes:
    descriptor = b"\x10" if start else b"\x00"
    return rtp.build_rtp(True, VP8, seq, seq * 3000, ssrc, descriptor + frame)


def protected(kid: int, key: bytes, codec: str, frame: bytes, ctr: int = 0) -> bytes:
    ctx = SFrameContext(MEDIA_SUITE)
    ctx.add_key(kid, key, next_ctr=ctr)
    return protect_frame(ctx, kid, codec, frame)


def test_sframe_kid_is_read_after_the_clear_codec_bytes() -> None:
    keyframe = protected(BOB_KID, BOB_KEY, "vp8", b"\x10\x02\x00\x9d\x01\x2a" + bytes(40))
    delta = protected(MALLORY_KID, MALLORY_KEY, "vp8", b"\x11\x02\x00" + bytes(40), 2**33)
    for frame, kid in ((keyframe, BOB_KID), (delta, MALLORY_KID)):
        data = vp8_packet(frame)
        hdr = rtp.parse_rtp(data)
        assert hdr is not None and rtp.sframe_kid(data, hdr, True) == kid
    middle = vp8_packet(b"\xff" * 30, start=False)
    hdr = rtp.parse_rtp(middle)
    assert hdr is not None and rtp.sframe_kid(middle, hdr, True) == rtp.NOT_FRAME_START
    truncated = vp8_packet(keyframe[:10])
    hdr = rtp.parse_rtp(truncated)
    assert hdr is not None and rtp.sframe_kid(truncated, hdr, True) == rtp.SFRAME_MALFORMED
    opus = protected(BOB_KID, BOB_KEY, "opus", b"\x78" + bytes(60))
    data = rtp.build_rtp(True, OPUS, 1, 960, 0x2000, opus)
    hdr = rtp.parse_rtp(data)
    assert hdr is not None and rtp.sframe_kid(data, hdr, False) == BOB_KID
    # The publisher's index in the one CSRC, as aiortc parses it on the receiving side.
    out = rtp.build_rtp(True, OPUS, 1, 960, 0x2000, opus, csrc=BOB)
    assert RtpPacket.parse(out).csrc == [BOB] and RtpPacket.parse(out).payload == opus


def harness(config: ForwarderConfig | None = None) -> tuple[Forwarder, dict[str, list[bytes]]]:
    fwd = Forwarder(config or ForwarderConfig(stale_after=None), clock=lambda: 1000.0)
    got: dict[str, list[bytes]] = {"alice": [], "bob": [], "mallory": []}
    for n, (pid, index) in enumerate((("alice", ALICE), ("bob", BOB), ("mallory", MALLORY))):
        ups = [
            UpTrackSpec("video", 0x1000 + n, frozenset({VP8})),
            UpTrackSpec("audio", 0x2000 + n, frozenset({OPUS})),
        ]
        downs = [DownTrackSpec("video", 0x9000 + n * 16 + i, 100, 90000) for i in range(2)] + [
            DownTrackSpec("audio", 0xA000 + n * 16 + i, 111, 48000) for i in range(2)
        ]
        fwd.add_participant(pid, ups, downs, sender_index=index)
        fwd.set_sink(pid, lambda packet, out=got[pid]: out.append(packet) is None)
    return fwd, got


def test_the_forwarder_drops_frames_under_another_publishers_key_id() -> None:
    fwd, got = harness()
    bob_video, mallory_video = 0x1001, 0x1002
    honest = protected(BOB_KID, BOB_KEY, "vp8", b"\x10\x02\x00\x9d\x01\x2a" + bytes(40))
    fwd.on_rtp("bob", vp8_packet(honest, seq=1, ssrc=bob_video))
    assert len(got["alice"]) == 1
    hdr = rtp.parse_rtp(got["alice"][0])
    assert hdr is not None and got["alice"][0][12:16] == BOB.to_bytes(4, "big")  # CSRC
    # Mallory publishes under Bob's key id, with a huge counter: her frame start and the
    # rest of that frame (no SFrame header in it) are dropped; her own frames still flow.
    forged = protected(BOB_KID, BOB_KEY, "vp8", b"\x10\x02\x00\x9d\x01\x2a" + bytes(40), HUGE_CTR)
    fwd.on_rtp("mallory", vp8_packet(forged, seq=1, ssrc=mallory_video))
    fwd.on_rtp("mallory", vp8_packet(b"\x01" * 50, start=False, seq=2, ssrc=mallory_video))
    opus = protected(BOB_KID, BOB_KEY, "opus", b"\x78" + bytes(20), HUGE_CTR + 1)
    fwd.on_rtp("mallory", rtp.build_rtp(True, OPUS, 1, 960, 0x2002, opus))
    assert len(got["alice"]) == 1 and not got["bob"]
    stats: Any = fwd.stats()["participants"]
    assert stats["mallory"]["dropped_kid"] == 3 and stats["bob"]["dropped_kid"] == 0
    own = protected(MALLORY_KID, MALLORY_KEY, "vp8", b"\x10\x02\x00\x9d\x01\x2a" + bytes(40))
    fwd.on_rtp("mallory", vp8_packet(own, seq=3, ssrc=mallory_video))
    fwd.on_rtp("mallory", vp8_packet(b"\x01" * 50, start=False, seq=4, ssrc=mallory_video))
    assert len(got["alice"]) == 3 and len(got["bob"]) == 2
    assert all(p[12:16] == MALLORY.to_bytes(4, "big") for p in got["bob"])
    # Garbage where the SFrame header should be is dropped too.
    fwd.on_rtp("mallory", vp8_packet(b"\x10\x02\x00", seq=5, ssrc=mallory_video))
    assert fwd.stats()["participants"]["mallory"]["dropped_kid"] == 4  # type: ignore[index]


# -- receivers: keys per publisher, key id checked against the slot's publisher -----------------


def test_the_jitter_buffer_keeps_the_publisher_a_frames_packets_name() -> None:
    def packet(seq: int, start: bool, marker: bool, csrc: int | None) -> RtpPacket:
        data = (b"\x10" if start else b"\x00") + b"xx"
        p = RtpPacket.parse(rtp.build_rtp(marker, VP8, seq, 3000, 0x99, data, csrc=csrc))
        p._data = data[1:]  # type: ignore[attr-defined]
        return p

    buf = MarkerJitterBuffer("video")
    buf.add(packet(1, True, False, BOB))
    _, frame = buf.add(packet(2, False, True, BOB))
    assert frame is not None and getattr(frame, "source", None) == BOB
    buf = MarkerJitterBuffer("video")
    buf.add(packet(1, True, False, BOB))
    _, frame = buf.add(packet(2, False, True, MALLORY))  # a frame spliced from two sources
    assert frame is not None and getattr(frame, "source", 0) is None


class Feed(MediaStreamTrack):
    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue()

    async def recv(self) -> Any:
        item = await self.queue.get()
        if item is None:
            raise MediaStreamError
        return item


def ring_for_alice() -> MediaKeyRing:
    ring = MediaKeyRing(b"a" * 32, SFrameContext(MEDIA_SUITE), time.monotonic)
    for member, index in ((b"a" * 32, ALICE), (b"b" * 32, BOB), (b"m" * 32, MALLORY)):
        ring.set_index(member, index)
    assert ring.install(b"b" * 32, SenderKey(0, BOB_KEY * 2))
    assert ring.install(b"m" * 32, SenderKey(0, MALLORY_KEY * 2))
    return ring


async def test_a_forged_frame_on_the_wrong_slot_never_plays_nor_blocks_the_sender() -> None:
    """Even if the SFU forwarded Mallory's forgeries (it does not), a receiver refuses a
    frame under Bob's key id on the slot carrying Mallory, before touching Bob's state."""
    ring = ring_for_alice()
    feed = Feed()
    receiver = DecryptingReceiver(feed, ring.context_for, kid_source=kid_index)
    bob_tx, mallory_tx = SFrameContext(MEDIA_SUITE), SFrameContext(MEDIA_SUITE)
    bob_tx.add_key(BOB_KID, BOB_KEY * 2)
    mallory_tx.add_key(BOB_KID, BOB_KEY * 2, next_ctr=HUGE_CTR)  # she holds Bob's key
    source = TestPatternTrack("Bob")
    bob = EncryptedVideoSender(source, bob_tx, BOB_KID)
    mallory = EncryptedVideoSender(TestPatternTrack("Mallory"), mallory_tx, BOB_KID)
    try:
        for _ in range(3):
            forged = await mallory.recv()
            feed.queue.put_nowait(EncodedFrame(forged.data, forged.pts, "vp8", MALLORY))
        for _ in range(3):
            genuine = await bob.recv()
            feed.queue.put_nowait(EncodedFrame(genuine.data, genuine.pts, "vp8", BOB))
        # A frame without a single source, or naming nobody we know, is refused as well.
        feed.queue.put_nowait(EncodedFrame(genuine.data, genuine.pts, "vp8", None))
        feed.queue.put_nowait(EncodedFrame(genuine.data, genuine.pts, "vp8", 9))
        decoded = [await asyncio.wait_for(receiver.recv_with_kid(), 10) for _ in range(3)]
    finally:
        for track in (bob, mallory, source):
            track.stop()
    assert [kid for kid, _ in decoded] == [BOB_KID] * 3
    for _, frame in decoded:
        colour = dominant_colour(frame.to_ndarray(format="bgr24"))
        assert colour_distance(colour, name_colour("Bob")) < SAME_COLOUR
    feed.queue.put_nowait(None)
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(receiver.recv_with_kid(), 10)
    assert receiver.stats.failures_by_reason == {"WrongSourceError": 5}
    # Keys are per publisher: Bob's key id is not in Mallory's context at all.
    mallory_ctx = ring.context_for(MALLORY)
    assert mallory_ctx is not None and BOB_KID not in mallory_ctx
    assert ring.context_for(ALICE) is None and ring.context_for(None) is None
    ring.set_index(b"c" * 32, 7)  # a sender whose first key is on its way: frames wait
    waiting = ring.context_for(7)
    assert waiting is not None and waiting.kids() == [] and ring.may_arrive(media_kid(7, 0))
    assert issubclass(WrongSourceError, Exception)


# -- real SFU, real aiortc peers ---------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("loopback_ice")


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    await until(condition, what, timeout)


class Viewer:
    """A receive-only participant that records the colour of every video frame it shows,
    by the sender its key id names."""

    def __init__(self, name: str, recv: Any, kid_source: Callable[[int], int] | None) -> None:
        self.name = name
        self.session = SfuSession(recv_ctx=recv, kid_source=kid_source)
        self.video: collections.Counter[int] = collections.Counter()
        self.colours: dict[int, list[tuple[int, int, int]]] = collections.defaultdict(list)

    def on_frame(self, receiver: DecryptingReceiver, kid: int, frame: Any) -> None:
        if receiver.kind != "video":
            return
        self.video[kid] += 1
        if self.video[kid] % 3 == 0:  # sample: colour checks cost CPU
            self.colours[kid].append(dominant_colour(frame.to_ndarray(format="bgr24")))

    def failures(self, reason: str) -> int:
        return sum(
            r["failures_by_reason"].get(reason, 0) for r in self.session.stats()["receivers"]
        )


def publisher(name: str, kid: int, key: bytes, next_ctr: int = 0) -> SfuSession:
    tx = SFrameContext(MEDIA_SUITE)
    tx.add_key(kid, key, next_ctr=next_ctr)
    return SfuSession(
        recv_ctx=SFrameContext(MEDIA_SUITE),
        send_ctx=tx,
        send_kid=kid,
        video=TestPatternTrack(name),
        audio=ToneTrack(name),
        video_slots=1,
        audio_slots=1,
    )


async def run_forgery(check_key_ids: bool) -> tuple[dict[str, Any], Viewer, Viewer]:
    """Bob publishes; Mallory publishes under Bob's key id with a huge counter. Alice
    receives as the call client does (keys per publisher, key id checked); Olga receives
    as clients did before issue 8 (one context holding everyone's keys)."""
    sfu = SfuNode(SfuConfig(forwarder=ForwarderConfig(check_key_ids=check_key_ids)))
    ring = ring_for_alice()
    shared = SFrameContext(MEDIA_SUITE, replay_window=1024)
    shared.add_key(BOB_KID, BOB_KEY * 2)
    shared.add_key(MALLORY_KID, MALLORY_KEY * 2)
    alice = Viewer("Alice", ring.context_for, kid_index)
    olga = Viewer("Olga", shared, None)
    bob = publisher("Bob", BOB_KID, BOB_KEY * 2)
    mallory = publisher("Mallory", BOB_KID, BOB_KEY * 2, next_ctr=HUGE_CTR)
    sessions = [alice.session, olga.session, bob, mallory]
    try:
        for viewer, index in ((alice, ALICE), (olga, 4)):
            sdp = await viewer.session.create_offer()
            answer = await sfu.join("c", viewer.name, sdp, sender_index=index)
            await viewer.session.set_answer(answer)
            viewer.session.start_receiving(viewer.on_frame)
        for session, name, index in ((bob, "Bob", BOB), (mallory, "Mallory", MALLORY)):
            answer = await sfu.join("c", name, await session.create_offer(), sender_index=index)
            await session.set_answer(answer)
            session.start_receiving(None)
        fwd = sfu.forwarder("c")
        assert fwd is not None

        def mallory_sent(n: int) -> bool:
            stats: Any = fwd.stats()["participants"]
            return "Mallory" in stats and stats["Mallory"]["packets_in"] >= n

        await wait_for(lambda: alice.video[BOB_KID] >= 5 and mallory_sent(100), "media flowing")
        before = alice.video[BOB_KID]
        await wait_for(lambda: alice.video[BOB_KID] >= before + 20, "Bob keeps decoding")
        stats: Any = fwd.stats()["participants"]
        return stats, alice, olga
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await sfu.close()


def only_bobs_picture(viewer: Viewer) -> bool:
    colours = viewer.colours[BOB_KID]
    return bool(colours) and all(
        colour_distance(c, name_colour("Bob")) < SAME_COLOUR for c in colours
    )


async def test_the_sfu_drops_a_publishers_frames_under_another_key_id() -> None:
    stats, alice, olga = await run_forgery(check_key_ids=True)
    # Dropped at the SFU (counted); Bob's own frames pass, and he is never pushed out.
    assert stats["Mallory"]["dropped_kid"] >= 100, stats["Mallory"]
    assert stats["Bob"]["dropped_kid"] <= 2, stats["Bob"]
    for viewer in (alice, olga):
        assert only_bobs_picture(viewer)
        assert viewer.failures("ReplayError") == 0 and viewer.failures("WrongSourceError") == 0


async def test_receivers_refuse_forgeries_an_sfu_lets_through() -> None:
    """With the SFU's check off (a broken node), the forgeries reach the receivers: the
    pre-issue-8 receiver shows Mallory's picture as Bob's and then loses Bob's genuine
    frames to the replay window; the call client's receiver shows only Bob, always."""
    stats, alice, olga = await run_forgery(check_key_ids=False)
    assert stats["Mallory"]["dropped_kid"] == 0
    assert only_bobs_picture(alice)
    assert alice.failures("WrongSourceError") > 20 and alice.failures("ReplayError") == 0
    # The attack is real against a receiver that trusts the key id alone: it shows
    # Mallory's picture as Bob's, and Bob's genuine frames fall out of its replay window.
    fooled = [c for c in olga.colours[BOB_KID] if colour_distance(c, name_colour("Mallory")) < 40]
    assert fooled and olga.failures("ReplayError") > 20


# -- point 5: key ids never wrap -------------------------------------------------------------


def test_a_sender_out_of_epochs_stops_instead_of_reusing_a_key_id() -> None:
    """With an injected limit of 3 epochs, every membership change gets a fresh key id;
    the change that would need a fourth leaves the key (and the id) alone and asks the call
    to end; no key id names two keys, and a removed member's key is never sent with again."""
    me, bob = b"m" * 32, b"b" * 32
    keys = CallKeys(me, max_epoch=2)
    ring = MediaKeyRing(me, SFrameContext(MEDIA_SUITE), time.monotonic)
    ring.set_index(me, 5)
    named: dict[int, bytes] = {}
    seen_keys = []
    for version in range(1, 6):
        ring.install(me, keys.own)
        assert named.setdefault(ring.send_kid or 0, keys.own.key) == keys.own.key
        seen_keys.append(keys.own.key)
        keys.membership(version, [], [bytes([version]) * 32])  # someone removed: rekey
        if keys.exhausted:
            break
    assert keys.exhausted and keys.own.epoch == 2 and len(named) == 3
    assert len(set(seen_keys)) == 3
    assert set(named) == {media_kid(5, e) for e in range(3)}
    # Nothing names an epoch past the limit: not the ring, not media_kid, not a peer's key.
    with pytest.raises(KeyIdExhausted):
        ring.install(me, SenderKey(MAX_EPOCH + 1, bytes(32)))
    with pytest.raises(KeyIdExhausted):
        media_kid(5, MAX_EPOCH + 1)
    ring.set_index(bob, 6)
    assert not ring.install(bob, SenderKey(MAX_EPOCH + 1, bytes(32)))
    receiver = CallKeys(b"x" * 32, max_epoch=2)
    assert not receiver.receive(bob, MediaKeyMessage(3, bytes(32), 0))
    assert receiver.receive(bob, MediaKeyMessage(2, bytes(32), 0))


def test_the_full_16_bit_epoch_range_is_usable_and_then_ends() -> None:
    keys = CallKeys(b"m" * 32, lambda: bytes(32))
    keys.own = SenderKey(MAX_EPOCH - 1, bytes(32))
    keys.membership(1, [b"j" * 32], [])
    assert keys.own.epoch == MAX_EPOCH and not keys.exhausted
    assert media_kid(1, keys.own.epoch) == (1 << 16) | 0xFFFF
    keys.membership(2, [b"k" * 32], [])
    assert keys.exhausted and keys.own.epoch == MAX_EPOCH


# -- point 5 end to end: real server, real ``salon call`` processes on the SFU ---------------


@pytest.fixture(scope="module")
def town(server: Any, module_user: Any) -> Town:
    return make_town(server.url, module_user, ("Bob", "Carol"))


@pytest.mark.timeout(150)
async def test_a_call_out_of_key_ids_ends_for_that_sender_and_no_id_is_reused(
    town: Town, tmp_path: Path
) -> None:
    """Alice's limit is injected at epoch 1: Bob's join moves her to epoch 1, Carol's join
    would need epoch 2, so her call ends (she stops sending and leaves) and the others go
    on with fresh keys. Bob's key log shows no key id that ever named two keys."""
    town["Alice"].run(
        "room", "create", town.space, "aisle", "--kind", "conference", "--topology", "sfu"
    )
    debug = {name: tmp_path / f"{name}-media" for name in ("Alice", "Bob", "Carol")}
    async with calls() as running:

        async def start(name: str, env: dict[str, str]) -> CallProcess:
            env = {**env, "SALON_MEDIA_DEBUG_DIR": str(debug[name])}
            call = await CallProcess.start(
                town[name], town.space, "aisle", tmp_path / f"{name}.json", 40, env=env
            )
            running.append(call)
            return call

        alice = await start("Alice", {"SALON_CALL_MAX_EPOCH": "1"})
        await alice.wait_for("joined call")
        bob = await start("Bob", {})
        for call in (alice, bob):
            await call.wait_for(r"verification code .* \(2 in the call", 40)
        await bob.wait_for("first video from Alice", 40)
        carol = await start("Carol", {})
        alice_result = await alice.finish(40)
        assert alice_result.returncode == 1, alice_result.stderr
        assert alice_result.stats["ended_reason"] == "key-ids-exhausted"
        said = "\n".join([*alice_result.stdout, alice_result.stderr])
        assert "changed keys too often" in said, said
        for call in (bob, carol):
            await call.wait_for(r"verification code .* \(2 in the call", 40)
        await bob.wait_for(r"Alice \(\w+\) left", 20)
        await bob.stop()
        await carol.stop()
    # Every key anyone logged: one key per (member, epoch), i.e. per key id.
    named: dict[tuple[str, int], str] = {}
    for name in ("Alice", "Bob", "Carol"):
        for line in (debug[name] / "keys.jsonl").read_text().splitlines():
            entry = json.loads(line)
            slot = (entry["member"], entry["epoch"])
            assert named.setdefault(slot, entry["key"]) == entry["key"], (name, slot)
    # Alice never made a key past her last epoch, nor sent under one.
    own = [json.loads(line) for line in (debug["Alice"] / "keys.jsonl").read_text().splitlines()]
    assert max(entry["epoch"] for entry in own if entry["mine"]) == 1
    sent = (debug["Alice"] / "frames.jsonl").read_text().splitlines()
    assert sent and max(json.loads(line)["kid"] & 0xFFFF for line in sent) <= 1
