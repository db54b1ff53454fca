"""Pure pieces of holding up on lossy networks (issue 13): freeze counting in ``--stats``,
the SFU's packet history and NACK handling. No network, no processes."""

from __future__ import annotations

import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from client.call.stats import PeerStats
from rtc.aiortc_adapter import (
    BundledJitterFrame,
    MarkerJitterBuffer,
    PassThroughDecoder,
    RetryingNackGenerator,
)
from sfu import rtp
from sfu.forwarder import DownTrackSpec, Forwarder, ForwarderConfig, NackRequest, UpTrackSpec


def test_a_gap_over_three_frame_intervals_is_one_freeze() -> None:
    stats = PeerStats(b"m", "Bob", "fp")
    at = 0.0
    for _ in range(30):  # 15 fps
        at += 1 / 15
        stats.video_frame_at(at)
    assert stats.video_freezes == 0
    at += 0.5  # half a second without a picture
    stats.video_frame_at(at)
    for _ in range(10):
        at += 1 / 15
        stats.video_frame_at(at)
    assert stats.video_freezes == 1
    assert 499 < stats.video_freeze_ms < 501
    assert stats.to_json()["video_freezes"] == 1


def test_a_slightly_late_frame_is_no_freeze() -> None:
    stats = PeerStats(b"m", "Bob", "fp")
    for i in range(30):
        stats.video_frame_at(i / 15 + (0.1 if i == 20 else 0.0))  # 100 ms late once
    assert stats.video_freezes == 0


# -- the SFU's retransmission (sfu/forwarder.py) ------------------------------------------------

VP8, RTX_IN, OPUS = 96, 97, 111
PUB_VIDEO, PUB_RTX = 0x1111, 0x2222
SLOT, SLOT_RTX, SLOT_RTX_PT = 0x5000, 0x6000, 101


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def vp8(seq: int, keyframe: bool = False, body: bytes = b"sframe-ciphertext") -> bytes:
    tag = 0x10 if keyframe else 0x11
    payload = b"\x10" + bytes((tag, 0x9D, 0x01)) + body + seq.to_bytes(2, "big")
    return rtp.build_rtp(True, VP8, seq, seq * 3000, PUB_VIDEO, payload)


def rtx_of(packet: bytes, rtx_seq: int) -> bytes:
    """``packet`` as its publisher would retransmit it over RTX (RFC 4588 §4)."""
    hdr = rtp.parse_rtp(packet)
    assert hdr is not None
    wrapped = hdr.sequence.to_bytes(2, "big") + packet[hdr.payload_start : hdr.payload_end]
    return rtp.build_rtp(hdr.marker, RTX_IN, rtx_seq, hdr.timestamp, PUB_RTX, wrapped)


class Call:
    """A publisher and a subscriber on a forwarder with a fake clock; what reached the sub."""

    def __init__(self, *, retransmit: bool = True, sub_rtx: bool = False) -> None:
        self.clock = Clock()
        config = ForwarderConfig(stale_after=None, retransmit=retransmit, history_packets=64)
        self.fwd = Forwarder(config, clock=self.clock)
        self.got: list[bytes] = []
        up = UpTrackSpec(
            "video", PUB_VIDEO, frozenset({VP8}), rtx_ssrc=PUB_RTX, rtx_payload_type=RTX_IN,
            rtx_apt=VP8,
        )  # fmt: skip
        self.fwd.add_participant("pub", [up], [])
        slot = DownTrackSpec(
            "video",
            SLOT,
            100,
            90000,
            rtx_ssrc=SLOT_RTX if sub_rtx else None,
            rtx_payload_type=SLOT_RTX_PT if sub_rtx else None,
        )
        self.fwd.add_participant("sub", [], [slot])
        self.fwd.set_sink("sub", self._take)
        self.fwd.events()

    def _take(self, packet: bytes) -> bool:
        self.got.append(packet)
        return True

    def publish(self, *packets: bytes) -> None:
        for packet in packets:
            self.fwd.on_rtp("pub", packet)

    def nacks(self) -> list[NackRequest]:
        return [e for e in self.fwd.events() if isinstance(e, NackRequest)]

    def headers(self) -> list[rtp.RtpHeader]:
        found = [rtp.parse_rtp(p) for p in self.got]
        assert all(found)
        return [h for h in found if h is not None]


def payload(packet: bytes) -> bytes:
    hdr = rtp.parse_rtp(packet)
    assert hdr is not None
    return packet[hdr.payload_start : hdr.payload_end]


def test_a_nacked_packet_is_resent_from_history_with_the_same_ciphertext() -> None:
    call = Call()
    call.publish(*(vp8(seq, keyframe=seq == 10) for seq in range(10, 20)))
    sent = call.headers()
    assert len(sent) == 10
    lost = sent[4]  # the subscriber says it never got this one
    assert call.fwd.on_nack("sub", SLOT, [lost.sequence]) == 1
    again = call.got[-1]
    hdr = rtp.parse_rtp(again)
    assert hdr is not None
    assert (hdr.sequence, hdr.timestamp, hdr.ssrc) == (lost.sequence, lost.timestamp, SLOT)
    assert payload(again) == payload(vp8(14))  # the same SFrame ciphertext, byte for byte
    assert call.fwd.stats()["participants"]["sub"]["retransmits"] == 1  # type: ignore[index]
    assert call.nacks() == []  # the SFU had it: nothing asked of the publisher


def test_a_slot_with_rtx_gets_the_retransmission_wrapped_rfc4588() -> None:
    call = Call(sub_rtx=True)
    call.publish(*(vp8(seq, keyframe=seq == 10) for seq in range(10, 15)))
    original = call.headers()[2]
    call.fwd.on_nack("sub", SLOT, [original.sequence])
    call.fwd.on_nack("sub", SLOT, [original.sequence])
    first, second = (rtp.parse_rtp(p) for p in call.got[-2:])
    assert first is not None and second is not None
    assert (first.ssrc, first.payload_type) == (SLOT_RTX, SLOT_RTX_PT)
    assert second.sequence == (first.sequence + 1) & 0xFFFF  # RTX has its own numbering
    body = payload(call.got[-1])
    assert int.from_bytes(body[:2], "big") == original.sequence  # OSN first (§4)
    assert body[2:] == payload(vp8(12))


def test_what_the_sfu_never_got_is_asked_of_the_publisher_and_forwarded_in_place() -> None:
    call = Call()
    call.publish(*(vp8(seq, keyframe=seq == 10) for seq in range(10, 13)))
    call.publish(vp8(15))  # 13 and 14 lost on the publisher's uplink
    (nack,) = call.nacks()
    assert (nack.publisher, nack.ssrc, nack.sequences) == ("pub", PUB_VIDEO, (13, 14))
    # The subscriber NACKs the same gap at once: asked again only after nack_interval.
    out = call.headers()
    gap = [(out[2].sequence + 1) & 0xFFFF, (out[2].sequence + 2) & 0xFFFF]
    assert call.fwd.on_nack("sub", SLOT, gap) == 0
    assert call.nacks() == []
    call.clock.now += 0.2
    call.fwd.on_nack("sub", SLOT, gap)
    (again,) = call.nacks()
    assert again.sequences == (13, 14)
    # The publisher retransmits 13 over RTX and 14 plainly: each reaches the subscriber
    # in its place in the numbering; a second copy is dropped.
    call.publish(rtx_of(vp8(13), 500), vp8(14), vp8(14))
    late = call.headers()[-2:]
    assert [h.sequence for h in late] == gap
    assert [h.ssrc for h in late] == [SLOT, SLOT]
    assert payload(call.got[-2]) == payload(vp8(13))
    totals = call.fwd.totals()
    assert totals["recovered"] == 2 and totals["dropped_duplicate"] == 1
    assert totals["nacks_upstream"] == 4


def test_retransmission_off_answers_nothing_and_asks_nothing() -> None:
    call = Call(retransmit=False)
    call.publish(*(vp8(seq, keyframe=seq == 10) for seq in (10, 11, 14)))
    assert call.nacks() == []
    assert call.fwd.on_nack("sub", SLOT, [call.headers()[1].sequence]) == 0
    assert len(call.got) == 3
    call.publish(rtx_of(vp8(12), 1))
    assert len(call.got) == 3 and call.fwd.totals()["dropped_unknown"] == 1


def test_a_nack_from_before_a_resync_or_past_the_history_is_not_answered() -> None:
    call = Call()
    call.publish(*(vp8(seq, keyframe=seq == 10) for seq in range(10, 110)))  # > 64 kept
    out = call.headers()
    assert call.fwd.on_nack("sub", SLOT, [out[0].sequence]) == 0  # overwritten: asked upstream
    assert [n.sequences for n in call.nacks()] == [(10,)]
    future = (out[-1].sequence + 5) & 0xFFFF
    assert call.fwd.on_nack("sub", SLOT, [future]) == 0  # never sent: ignored
    assert call.nacks() == []
    call.fwd.set_muted("pub", "video", True)
    call.fwd.set_muted("pub", "video", False)  # a new epoch on the next keyframe
    call.publish(vp8(200, keyframe=True))
    assert call.fwd.on_nack("sub", SLOT, [out[-1].sequence]) == 0
    assert call.nacks() == []


def test_history_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Forwarder(ForwarderConfig(history_packets=100))


# -- the receiver's side (rtc/aiortc_adapter.py): wait for retransmissions, keep asking ---------


def jb_packet(seq: int, ts: int, start: bool = True, marker: bool = True) -> RtpPacket:
    body = (b"\x10" if start else b"\x00") + seq.to_bytes(2, "big")
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts)
    p.payload = body
    p._data = body[1:]  # type: ignore[attr-defined]  # what depayload() would leave
    return p


def frames_of(frame: JitterFrame | None) -> list[bytes]:
    if frame is None:
        return []
    if isinstance(frame, BundledJitterFrame):
        return [f.data for f in frame.frames]
    return [frame.data]


def test_a_frame_behind_a_gap_waits_for_the_retransmission_then_both_leave_in_order() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer("video", hold=0.25, clock=clock)
    assert frames_of(jb.add(jb_packet(1, 100))[1]) == [b"\x00\x01"]
    # Frame 200 (seq 2) is lost; frame 300 is complete but must wait for it.
    assert jb.add(jb_packet(3, 300)) == (False, None)
    clock.now += 0.01
    pli, frame = jb.add(jb_packet(2, 200))  # the retransmission
    assert not pli and frames_of(frame) == [b"\x00\x02", b"\x00\x03"]
    assert isinstance(frame, BundledJitterFrame) and frame.timestamp == 300
    # The pass-through decoder hands both out, timestamps rebased as aiortc rebased the last.
    frame.timestamp = 300 - 100  # what aiortc's TimestampMapper would make of it
    out = PassThroughDecoder("VP8").decode(frame)
    assert [(f.data, f.timestamp) for f in out] == [(b"\x00\x02", 100), (b"\x00\x03", 200)]


MS = 90  # RTP ticks per millisecond of video


def test_a_gap_that_is_never_filled_is_given_up_after_the_hold_with_a_pli() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer("video", hold=0.25, clock=clock)
    jb.add(jb_packet(1, 0))
    assert jb.add(jb_packet(3, 200 * MS)) == (False, None)
    # A CPU stall: wall time passes, but the media behind the gap spans 100 ms only.
    clock.now += 0.6
    assert jb.add(jb_packet(4, 300 * MS)) == (False, None)
    pli, frame = jb.add(jb_packet(5, 450 * MS))  # 250 ms of media behind the gap: give up
    assert pli and frames_of(frame) == [b"\x00\x03", b"\x00\x04", b"\x00\x05"]
    assert jb.add(jb_packet(2, 100 * MS)) == (False, None)  # too late now: dropped
    # Wall time alone gives up too, after 4 × hold (a sender that stopped sending).
    assert jb.add(jb_packet(7, 600 * MS)) == (False, None)
    clock.now += 1.0
    pli, frame = jb.add(jb_packet(8, 633 * MS))
    assert pli and frames_of(frame) == [b"\x00\x07", b"\x00\x08"]


def test_without_a_hold_the_earlier_frame_is_given_up_at_once() -> None:
    jb = MarkerJitterBuffer("video")
    jb.add(jb_packet(1, 100))
    pli, frame = jb.add(jb_packet(3, 300))
    assert pli and frames_of(frame) == [b"\x00\x03"]


def test_the_nack_generator_asks_again_and_then_gives_up() -> None:
    clock = Clock()
    gen = RetryingNackGenerator(retry=0.04, give_up=0.25, clock=clock)
    assert not gen.add(jb_packet(1, 0))
    assert gen.add(jb_packet(3, 0)) and gen.missing == {2}  # the gap: NACK now
    clock.now += 0.01
    assert not gen.add(jb_packet(4, 0))  # asked 10 ms ago: not yet
    clock.now += 0.05
    assert gen.add(jb_packet(5, 0)) and gen.missing == {2}  # still missing: ask again
    clock.now += 0.3
    assert not gen.add(jb_packet(6, 0)) and gen.missing == set()  # given up
    assert gen.add(jb_packet(8, 0)) and gen.missing == {7}
    clock.now += 0.05
    assert not gen.add(jb_packet(7, 0)) and gen.missing == set()  # it came


def test_the_sfu_asks_the_publisher_again_on_its_tick_until_it_gives_up() -> None:
    call = Call()
    call.publish(vp8(10, keyframe=True), vp8(12))  # 11 lost upstream
    assert [n.sequences for n in call.nacks()] == [(11,)]
    call.clock.now += 0.01
    call.fwd.tick()
    assert call.nacks() == []  # asked 10 ms ago
    call.clock.now += 0.05
    call.fwd.tick()
    assert [n.sequences for n in call.nacks()] == [(11,)]
    for _ in range(10):
        call.clock.now += 0.05
        call.fwd.tick()
    assert sum(len(n.sequences) for n in call.nacks()) < 6  # given up after nack_give_up
    call.clock.now += 0.05
    call.fwd.tick()
    assert call.nacks() == []


def test_a_sender_that_never_retransmits_is_not_waited_for_after_ten_gaps() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer("video", hold=0.25, clock=clock)
    jb.add(jb_packet(1, 100))
    seq = 1
    for _ in range(MarkerJitterBuffer.GIVE_UP_UNANSWERED):  # each gap given up after the hold
        seq += 2
        assert jb.add(jb_packet(seq, seq * 100 * MS)) == (False, None)
        seq += 1
        pli, frame = jb.add(jb_packet(seq, seq * 100 * MS + 200 * MS))
        assert pli and len(frames_of(frame)) == 2
    pli, frame = jb.add(jb_packet(seq + 2, 99999 * MS))  # the next gap: released at once
    assert pli and frames_of(frame) == [(seq + 2).to_bytes(2, "big")]
    # A sender that does answer keeps being waited for.
    jb = MarkerJitterBuffer("video", hold=0.25, clock=clock)
    jb.add(jb_packet(1, 100))
    jb.add(jb_packet(3, 300))
    jb.add(jb_packet(2, 200))  # filled
    seq = 3
    for _ in range(MarkerJitterBuffer.GIVE_UP_UNANSWERED):
        seq += 2
        jb.add(jb_packet(seq, seq * 100 * MS))
        seq += 1
        jb.add(jb_packet(seq, seq * 100 * MS + 200 * MS))
    assert jb.add(jb_packet(seq + 2, 99999 * MS)) == (False, None)  # still held behind a gap


def test_padding_on_the_rtx_stream_is_dropped_quietly() -> None:
    call = Call()
    call.publish(vp8(10, keyframe=True))
    padding = bytearray(rtp.build_rtp(False, RTX_IN, 7, 0, PUB_RTX, bytes(255)))
    padding[0] |= 0x20  # P bit: the whole payload is padding, its last byte says 255
    padding[-1] = 255
    call.publish(bytes(padding))
    assert len(call.got) == 1
    totals = call.fwd.totals()
    assert totals["dropped_malformed"] == 0 and totals["dropped_unknown"] == 0
