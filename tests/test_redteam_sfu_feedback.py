"""Red team of issue 13's bandwidth feedback and simulcast layers, played with bytes against the
real forwarder and RTCP parser (sans-I/O: what a hostile publisher or subscriber can put on the
wire after its own SRTP): work per packet stays bounded before any rate limit, malformed RTCP
never raises, and one participant's feedback or layers never move anyone else's."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

from sfu import rtp
from sfu.forwarder import DownTrackSpec, Forwarder, ForwarderConfig, NackRequest, UpTrackSpec

VP8, RTX = 96, 97
RID_ID, RRID_ID = 10, 11


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rid_ext(rid: str, *, junk: int = 0) -> bytes:
    """A one-byte extension block naming ``rid``, after ``junk`` one-byte elements of id 1."""
    body = bytes((0x10, 0x00)) * junk + bytes(((RID_ID << 4) | (len(rid) - 1),)) + rid.encode()
    body += b"\0" * (-len(body) % 4)
    return b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + body


def simulcast_spec() -> UpTrackSpec:
    return UpTrackSpec(
        "video",
        0,
        frozenset({VP8}),
        rtx_payload_type=RTX,
        rtx_apt=VP8,
        rids=("q", "h", "f"),
        rid_ext_id=RID_ID,
        repaired_rid_ext_id=RRID_ID,
    )


def best_of(rounds: int, run: Callable[[], None]) -> float:
    """The fastest of ``rounds`` timings: robust to a loaded machine (it only ever slows)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def test_a_publisher_cannot_make_each_unknown_ssrc_packet_scan_a_huge_extension_block() -> None:
    """A simulcast publisher that leaves one layer unbound (as a small camera does) has every
    packet on an unknown SSRC searched for a RID before any rate limit. A 1.4 kB block of
    one-byte elements must not cost a scan of every element: it cost ~50x a packet forwarded
    to a subscriber before (~150 us). (No rate limit or staleness here: a steady baseline.)"""
    fwd = Forwarder(ForwarderConfig(max_video_bps=10**12, stale_after=None))
    fwd.add_participant("mallory", [simulcast_spec()])
    fwd.add_participant("bob", [], [DownTrackSpec("video", 500, 100, 90000)])
    fwd.set_sink("bob", lambda packet: True)
    seq = iter(range(2, 1 << 30))
    keyframe = b"\x10\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" + bytes(1000)
    fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, 1, 0, 7, keyframe, rid_ext("q")))
    assert fwd.layers("bob") == {500: 0}  # "q" bound and forwarded; "h" and "f" never bound
    delta = b"\x10\x11\x02\x00" + bytes(1000)
    hostile = rtp.build_rtp(False, VP8, 9, 0, 0xBAD, b"\x10", rid_ext("x", junk=690))
    assert len(hostile) > 1400

    def normal() -> None:
        for _ in range(300):
            fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, next(seq) & 0xFFFF, 0, 7, delta))

    def flood() -> None:
        for _ in range(300):
            fwd.on_rtp("mallory", hostile)

    sent = fwd.sent_to("bob")
    assert best_of(7, flood) < 10 * best_of(7, normal)
    assert fwd.sent_to("bob") == sent + 7 * 300  # the baseline was forwarded, the flood not


def test_a_rid_after_a_legitimate_number_of_elements_is_still_found() -> None:
    """The bound on a block's scan leaves every real browser packet's RID found (Chromium
    sends fewer than 14 elements, one per negotiated extension id)."""
    data = rtp.build_rtp(False, VP8, 1, 0, 5, b"\x10", rid_ext("h", junk=13))
    hdr = rtp.parse_rtp(data)
    assert hdr is not None
    assert rtp.find_extension(data, hdr, RID_ID) == b"h"


def test_a_remb_listing_255_ssrcs_costs_little_more_to_parse_than_one_listing_one() -> None:
    """A subscriber's RTCP is parsed on every compound it sends (no rate limit in front):
    a REMB listing 255 SSRCs was ~30x one listing one, read one SSRC at a time."""
    many = rtp.build_remb(1, 500_000, list(range(1, 256)))
    one = rtp.build_remb(1, 500_000, [1])
    assert rtp.parse_rtcp_feedback(many).rembs[0].ssrcs == tuple(range(1, 256))

    def parse(data: bytes) -> Callable[[], None]:
        def run() -> None:
            for _ in range(300):
                rtp.parse_rtcp_feedback(data)

        return run

    assert best_of(7, parse(many)) < 4 * best_of(7, parse(one))


def test_malformed_rtcp_never_raises_and_keeps_what_came_before() -> None:
    """Random and truncated compounds, lying lengths and counts: parsed without an exception;
    a well-formed RR ahead of garbage is still read."""
    rng = random.Random(13)
    good = rtp.build_receiver_report(9, [rtp.ReportBlock(500, 128, 3, 1000)])
    remb = rtp.build_remb(9, 300_000, [500])
    for _ in range(3000):
        size = rng.randrange(0, 120)
        junk = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.5:  # a plausible header: version 2, a feedback type, any count
            junk = bytes((0x80 | rng.randrange(32), rng.choice((200, 201, 206)))) + junk[2:]
        for data in (junk, good + junk, remb[: rng.randrange(len(remb) + 1)] + junk):
            rtp.parse_rtcp_feedback(data)
    # Lying lengths and counts: 31 blocks announced, none there; a REMB claiming 255 SSRCs.
    lying_rr = struct.pack("!BBHI", 0x80 | 31, 201, 1, 9)
    lying_remb = bytearray(remb)
    lying_remb[16] = 255
    feedback = rtp.parse_rtcp_feedback(good + lying_rr + bytes(lying_remb))
    assert [b.ssrc for b in feedback.reports] == [500] and feedback.rembs == []


def test_one_subscribers_feedback_moves_only_its_own_estimate_and_layers() -> None:
    """Mallory's REMB at the floor and 100 % loss step her own slots down; Bob, watching the
    same publisher, keeps his estimate and layer; Alice's uplink estimate does not move."""
    clock = Clock()
    fwd = Forwarder(clock=clock)
    fwd.add_participant("alice", [simulcast_spec()])  # no key ids: not what this is about
    for i, pid in enumerate(("bob", "mallory")):
        fwd.add_participant(pid, [], [DownTrackSpec("video", 500 + i, 100, 90000)])
    seqs = {"q": 100, "h": 2000, "f": 4000}
    ts = 0
    for step in range(200):
        clock.now += 1 / 30
        ts += 3000
        for k, rid in enumerate(("q", "h", "f")):
            seqs[rid] += 1
            height = (180 << k).to_bytes(2, "little")
            key = bytes((0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0, 0)) + height
            vp8 = key if step % 30 == 0 else b"\x10\x11\x02\x00"
            data = vp8 + bytes(200 * (k + 1))
            fwd.on_rtp("alice", rtp.build_rtp(True, VP8, seqs[rid], ts, 70 + k, data, rid_ext(rid)))
        if step % 3 == 0:
            fwd.tick()
        if step == 100:
            uplink = fwd.uplink_estimate("alice")
            fwd.on_feedback("mallory", remb_bps=1, fraction_lost=1.0)
            fwd.on_feedback("mallory", remb_bps=1, fraction_lost=1.0)
    stats = fwd.stats()["participants"]
    assert isinstance(stats, dict)
    assert stats["mallory"]["estimate_bps"] < stats["bob"]["estimate_bps"]
    assert fwd.layers("bob") == {500: 2}
    assert fwd.layers("mallory") == {501: 0}
    assert fwd.uplink_estimate("alice") == uplink


def test_a_publisher_skipping_sequence_numbers_cannot_flood_itself_with_nacks() -> None:
    """Tiny packets each 64 sequence numbers ahead: every one was a gap of 63 to NACK (an RTCP
    packet out per packet in, before any rate limit) and the table of what was asked grew to
    the whole 16-bit space, walked on every tick. What is asked at a time is now bounded."""
    clock = Clock()
    fwd = Forwarder(clock=clock)
    fwd.add_participant("mallory", [UpTrackSpec("video", 1, frozenset({VP8}))], [])
    fwd.add_participant("bob", [], [DownTrackSpec("video", 500, 100, 90000)])
    nacks = 0
    seq = 0
    for i in range(5000):  # one second of it
        seq = (seq + 64) & 0xFFFF
        fwd.on_rtp("mallory", rtp.build_rtp(False, VP8, seq, 0, 1, b"\x10"))
        clock.now += 0.0002
        if i % 250 == 0:
            fwd.tick()
        nacks += sum(1 for e in fwd.events() if isinstance(e, NackRequest))
    stats = fwd.stats()["participants"]
    assert isinstance(stats, dict)
    assert stats["mallory"]["nacks_upstream"] < 10_000  # was 315 000 sequence numbers
    assert nacks < 500  # was 5 000 NACK packets

    def tick() -> None:
        clock.now += 0.06
        fwd.tick()

    assert best_of(3, tick) < 0.005  # was ~20 ms a tick (20 ticks a second)


def test_a_layer_switch_happens_only_on_a_keyframe_under_the_publishers_own_key_id() -> None:
    """Mallory publishes three layers; Bob's tile grows so the node wants her top layer. A top-
    layer keyframe under Alice's key id (every receiver holds it) is dropped and switches
    nothing; her own keyframe switches Bob, and every packet he gets names Mallory (CSRC)."""
    from client.call.e2ee_media import MEDIA_SUITE
    from client.call.sframe import SFrameContext, protect_frame
    from protocol.media_keys import media_kid

    alice, mallory = 1, 3
    clock = Clock()
    fwd = Forwarder(clock=clock)
    fwd.add_participant("mallory", [simulcast_spec()], [], sender_index=mallory)
    fwd.add_participant("bob", [], [DownTrackSpec("video", 500, 100, 90000)], sender_index=2)
    got: list[bytes] = []

    def sink(packet: bytes) -> bool:
        got.append(packet)
        return True

    fwd.set_sink("bob", sink)
    contexts: dict[int, SFrameContext] = {}
    for index in (alice, mallory):
        contexts[index] = SFrameContext(MEDIA_SUITE)
        contexts[index].add_key(media_kid(index, 0), bytes([index]) * 16)
    seqs = {"q": 100, "h": 2000, "f": 4000}
    ts = 0

    def send(rid: str, keyframe: bool, under: int = mallory) -> None:
        k = ("q", "h", "f").index(rid)
        seqs[rid] += 1
        if keyframe:
            height = (180 << k).to_bytes(2, "little")
            frame = bytes((0x00, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0, 0)) + height + bytes(100)
        else:
            frame = bytes((0x01, 0x02, 0x00)) + bytes(100)
        data = b"\x10" + protect_frame(contexts[under], media_kid(under, 0), "vp8", frame)
        fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, seqs[rid], ts, 70 + k, data, rid_ext(rid)))

    fwd.set_view("bob", {500: 180})
    for step in range(60):  # all three layers arriving; Bob on the bottom one
        clock.now += 1 / 30
        ts += 3000
        for rid in ("q", "h", "f"):
            send(rid, step % 30 == 0)
        if step % 3 == 0:
            fwd.tick()
    assert fwd.layers("bob") == {500: 0}
    fwd.set_view("bob", {500: 720})  # now the top layer, at its next keyframe
    clock.now += 1 / 30
    ts += 3000
    dropped = fwd.stats()["participants"]["mallory"]["dropped_kid"]  # type: ignore[index]
    send("f", True, under=alice)
    send("f", False)  # a delta after it: still no switch
    assert fwd.stats()["participants"]["mallory"]["dropped_kid"] == dropped + 1  # type: ignore[index]
    assert fwd.layers("bob") == {500: 0}
    send("q", False)
    send("f", True)
    assert fwd.layers("bob") == {500: 2}
    for packet in got:
        hdr = rtp.parse_rtp(packet)
        assert hdr is not None and packet[0] & 0x0F == 1
        assert int.from_bytes(packet[12:16], "big") == mallory
        assert rtp.sframe_kid(packet, hdr, True) in (rtp.NOT_FRAME_START, media_kid(mallory, 0))


def _call_with_audio_flood(*, muted: bool) -> Forwarder:
    """Alice publishes three layers; Mallory only audio, but 30 packets of 1.2 kB per 1/30 s
    (8.6 Mbit/s, far over the audio rate limit), or plain audio while the server muted her.
    Bob shows both. Returns the forwarder after 200 steps."""
    clock = Clock()
    fwd = Forwarder(clock=clock)
    fwd.add_participant("alice", [simulcast_spec()])
    fwd.add_participant("mallory", [UpTrackSpec("audio", 900, frozenset({111}))])
    fwd.add_participant(
        "bob",
        [],
        [DownTrackSpec("video", 500, 100, 90000), DownTrackSpec("audio", 600, 110, 48000)],
    )
    if muted:
        fwd.set_muted("mallory", "audio", True)
    seqs = {"q": 100, "h": 2000, "f": 4000, "audio": 7000}
    ts = 0
    for step in range(200):
        clock.now += 1 / 30
        ts += 3000
        for k, rid in enumerate(("q", "h", "f")):
            seqs[rid] += 1
            height = (180 << k).to_bytes(2, "little")
            key = bytes((0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0, 0)) + height
            vp8 = key if step % 30 == 0 else b"\x10\x11\x02\x00"
            data = vp8 + bytes(200 * (k + 1))
            fwd.on_rtp("alice", rtp.build_rtp(True, VP8, seqs[rid], ts, 70 + k, data, rid_ext(rid)))
        for _ in range(30 if not muted else 8):
            seqs["audio"] += 1
            opus = rtp.build_rtp(False, 111, seqs["audio"] & 0xFFFF, ts, 900, bytes(1200))
            fwd.on_rtp("mallory", opus)
        if step % 3 == 0:
            fwd.tick()
    return fwd


def test_audio_over_the_rate_limit_does_not_count_against_anyones_video_budget() -> None:
    """Each subscriber's video budget is its estimate minus the audio it receives. Counting
    what a publisher *sent* on its audio SSRC (dropped over the limit, never forwarded) let
    one participant push every subscriber's video down to the lowest layer."""
    fwd = _call_with_audio_flood(muted=False)
    stats = fwd.stats()["participants"]
    assert isinstance(stats, dict) and stats["mallory"]["dropped_rate"] > 1000
    assert fwd.layers("bob") == {500: 2}


def test_a_muted_publishers_audio_does_not_count_against_anyones_video_budget() -> None:
    """The same with audio the server mutes (a stage listener, a moderated participant): it is
    dropped on arrival and must weigh nothing."""
    fwd = _call_with_audio_flood(muted=True)
    stats = fwd.stats()["participants"]
    assert isinstance(stats, dict) and stats["mallory"]["dropped_muted"] > 1000
    assert fwd.layers("bob") == {500: 2}


def test_rid_binding_cannot_be_redone_stolen_or_raced_by_rtx() -> None:
    """RTX naming a layer (repaired-rid) before that layer's media is dropped, not bound to
    anything; a second SSRC claiming a RID already bound is dropped (no rebinding: the first
    SSRC keeps the layer); once the media is bound its RTX binds and repairs that layer only."""
    clock = Clock()
    fwd = Forwarder(ForwarderConfig(stale_after=None), clock=clock)
    fwd.add_participant("mallory", [simulcast_spec()])
    fwd.add_participant("bob", [], [DownTrackSpec("video", 500, 100, 90000)])
    got: list[bytes] = []

    def sink(packet: bytes) -> bool:
        got.append(packet)
        return True

    fwd.set_sink("bob", sink)

    def repaired(rid: str) -> bytes:
        body = bytes(((RRID_ID << 4) | (len(rid) - 1),)) + rid.encode()
        body += b"\0" * (-len(body) % 4)
        return b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + body

    def stats() -> dict[str, int]:
        participants = fwd.stats()["participants"]
        assert isinstance(participants, dict)
        return dict(participants["mallory"])

    keyframe = b"\x10\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" + bytes(50)
    delta = b"\x10\x11\x02\x00" + bytes(50)
    # RTX for "q" first: dropped as unknown, binds nothing.
    early = rtp.build_rtp(True, RTX, 1, 0, 0x77, (5).to_bytes(2, "big") + delta, repaired("q"))
    fwd.on_rtp("mallory", early)
    assert stats()["dropped_unknown"] == 1 and not got
    # The media binds "q" on SSRC 7 and starts Bob's slot.
    fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, 1, 0, 7, keyframe, rid_ext("q")))
    assert len(got) == 1
    # SSRC 8 claims "q" too: dropped, whatever it carries.
    fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, 2, 0, 8, keyframe, rid_ext("q")))
    assert stats()["dropped_unknown"] == 2 and len(got) == 1
    # SSRC 7 goes on (seq 2 lost, 3 arrives); the RTX, now after the media, repairs seq 2.
    fwd.on_rtp("mallory", rtp.build_rtp(True, VP8, 3, 3000, 7, delta, rid_ext("q")))
    fix = (2).to_bytes(2, "big") + delta
    fwd.on_rtp("mallory", rtp.build_rtp(True, RTX, 2, 0, 0x77, fix, repaired("q")))
    fwd.on_rtp("mallory", rtp.build_rtp(True, RTX, 3, 0, 0x77, fix, repaired("q")))  # again
    assert len(got) == 3 and stats()["recovered"] == 1
    assert fwd.layers("bob") == {500: 0}


def test_a_subscriber_cannot_nack_the_whole_history_again_and_again() -> None:
    """A NACK names 17 packets in 4 bytes: one RTCP compound asked the node to re-send
    thousands of packets (CPU, and the node's uplink) without any bound. Retransmissions
    per subscriber are now a token bucket; another subscriber's are untouched."""
    clock = Clock()
    cfg = ForwarderConfig(stale_after=None, max_video_bps=10**12)
    fwd = Forwarder(cfg, clock=clock)
    fwd.add_participant("alice", [UpTrackSpec("video", 1, frozenset({VP8}))])
    numbers: dict[int, list[int]] = {500: [], 600: []}

    def sink(packet: bytes) -> bool:
        hdr = rtp.parse_rtp(packet)
        assert hdr is not None
        numbers[hdr.ssrc].append(hdr.sequence)
        return True

    for pid, ssrc in (("mallory", 500), ("bob", 600)):
        fwd.add_participant(pid, [], [DownTrackSpec("video", ssrc, 100, 90000)])
        fwd.set_sink(pid, sink)
    keyframe = b"\x10\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" + bytes(1000)
    fwd.on_rtp("alice", rtp.build_rtp(True, VP8, 1, 0, 1, keyframe))
    for seq in range(2, 513):
        clock.now += 0.001
        fwd.on_rtp("alice", rtp.build_rtp(True, VP8, seq, 0, 1, b"\x10\x11\x02\x00" + bytes(1000)))
    first = {pid: fwd.sent_to(pid) for pid in ("mallory", "bob")}
    assert first["mallory"] == first["bob"] == 512

    def slot_numbers(ssrc: int) -> list[int]:
        return numbers[ssrc][:512]  # what the slot was sent first: the whole history

    resent = sum(fwd.on_nack("mallory", 500, slot_numbers(500)) for _ in range(20))
    assert resent <= cfg.retransmit_burst  # 20 x 512 asked
    clock.now += 1.0
    assert fwd.on_nack("mallory", 500, slot_numbers(500)[:100]) == 100  # refilled
    assert fwd.on_nack("bob", 600, slot_numbers(600)[:50]) == 50  # Bob has his own budget


def test_the_nodes_rtcp_cost_weighs_what_a_compound_makes_the_node_do() -> None:
    """A crafted compound of NACKs (297 FCIs, every bit set: 5 049 sequence numbers, one call
    into the forwarder each) costs hundreds of tokens; a browser's NACK of a few packets, or
    its report + REMB, a handful. Lying lengths never raise nor count past the data."""
    from sfu.node import RTCP_PER_SECOND, rtcp_cost

    def nack(fcis: int, mask: int = 0xFFFF) -> bytes:
        header = struct.pack("!BBHII", 0x80 | 1, 205, 2 + fcis, 9, 500)
        return header + struct.pack("!HH", 100, mask) * fcis

    crafted = nack(297)
    assert len(crafted) <= 1200 and rtp.nack_bound(crafted) == 297 * 17
    assert rtcp_cost(crafted) >= 300
    browser = rtp.build_receiver_report(9, [rtp.ReportBlock(500, 10, 3, 1000)])
    browser += rtp.build_remb(9, 800_000, [500])
    assert rtcp_cost(nack(2, 0x0001)) <= 4 and rtcp_cost(browser) <= 2
    assert 300 * rtcp_cost(nack(2, 0x0001)) < RTCP_PER_SECOND  # heavy loss on six slots
    lying = struct.pack("!BBHII", 0x81, 205, 0xFFFF, 9, 500) + bytes(8)
    assert rtp.nack_bound(lying) == (len(lying) // 4 - 3) * 17
    for size in range(0, 40):
        assert rtp.nack_bound(crafted[:size]) >= 0
