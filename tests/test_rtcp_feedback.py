"""RTCP congestion feedback in sfu.rtp: report blocks (RFC 3550 §6.4) and REMB
(draft-alvestrand-rmcat-remb-03), checked byte for byte against aiortc's own codec."""

from __future__ import annotations

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp import (
    Remb,
    ReportBlock,
    build_receiver_report,
    build_remb,
    parse_rtcp_feedback,
)

ssrcs = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrcs,
    st.integers(0, 255),
    st.integers(-0x800000, 0x7FFFFF),
    ssrcs,
    ssrcs,
    ssrcs,
    ssrcs,
)


def _info(b: ReportBlock) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=b.ssrc,
        fraction_lost=b.fraction_lost,
        packets_lost=b.cumulative_lost,
        highest_sequence=b.extended_highest_seq,
        jitter=b.jitter,
        lsr=b.lsr,
        dlsr=b.dlsr,
    )


@given(ssrcs, st.lists(blocks, max_size=31))
def test_receiver_report_is_aiortcs_byte_for_byte(sender: int, reports: list[ReportBlock]) -> None:
    ours = build_receiver_report(sender, reports)
    assert ours == bytes(RtcpRrPacket(ssrc=sender, reports=[_info(b) for b in reports]))
    (parsed,) = RtcpPacket.parse(ours)
    assert isinstance(parsed, RtcpRrPacket)
    assert [r.packets_lost for r in parsed.reports] == [b.cumulative_lost for b in reports]
    assert parse_rtcp_feedback(ours).reports == reports


def test_more_than_31_blocks_take_several_packets() -> None:
    reports = [ReportBlock(i, i % 256, -i, 1000 + i) for i in range(70)]
    data = build_receiver_report(7, reports)
    packets = RtcpPacket.parse(data)
    assert [len(p.reports) for p in packets if isinstance(p, RtcpRrPacket)] == [31, 31, 8]
    assert parse_rtcp_feedback(data).reports == reports


def test_out_of_range_values_are_clamped_not_wrapped() -> None:
    (block,) = parse_rtcp_feedback(
        build_receiver_report(1, [ReportBlock(5, 300, 10**9, 2**40 + 3)])
    ).reports
    assert block == ReportBlock(5, 255, 0x7FFFFF, 3)
    (block,) = parse_rtcp_feedback(
        build_receiver_report(1, [ReportBlock(5, -4, -(10**9), 0)])
    ).reports
    assert (block.fraction_lost, block.cumulative_lost) == (0, -0x800000)


@given(ssrcs, st.integers(0, 10**12), st.lists(ssrcs, max_size=20))
def test_remb_is_aiortcs_byte_for_byte(sender: int, bitrate: int, media: list[int]) -> None:
    ours = build_remb(sender, bitrate, media)
    theirs = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=sender, media_ssrc=0, fci=pack_remb_fci(bitrate, media)
    )
    assert ours == bytes(theirs)
    aiortc_bitrate, aiortc_ssrcs = unpack_remb_fci(theirs.fci)
    assert parse_rtcp_feedback(ours).rembs == [Remb(aiortc_bitrate, tuple(aiortc_ssrcs))]
    # 18 significant bits: within 2**-17 of what was asked, never above it.
    assert bitrate - bitrate / 2**17 - 1 <= aiortc_bitrate <= bitrate


def test_aiortc_remb_and_reports_in_one_compound() -> None:
    sr = RtcpSrPacket(
        ssrc=1,
        sender_info=RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4),
        reports=[_info(ReportBlock(11, 64, 5, 70000))],
    )
    rr = RtcpRrPacket(ssrc=1, reports=[_info(ReportBlock(12, 0, 0, 9))])
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(750_000, [11, 12])
    )
    feedback = parse_rtcp_feedback(bytes(sr) + bytes(rr) + bytes(remb))
    assert feedback.reports == [ReportBlock(11, 64, 5, 70000), ReportBlock(12, 0, 0, 9)]
    assert feedback.rembs == [Remb(750_000, (11, 12))]


def test_psfb_app_that_is_not_remb_is_ignored() -> None:
    other = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=b"GOOG\x01\x00\x00\x00")
    assert parse_rtcp_feedback(bytes(other)) == ([], [])


def test_remb_listing_more_ssrcs_than_it_carries_is_dropped() -> None:
    data = bytearray(build_remb(1, 500_000, [7, 8]))
    data[16] = 3  # claims three SSRCs
    assert parse_rtcp_feedback(bytes(data)).rembs == []


def test_truncated_compound_keeps_what_came_before() -> None:
    good = build_remb(1, 400_000, [9])
    rr = build_receiver_report(1, [ReportBlock(9, 10, 1, 2)])
    feedback = parse_rtcp_feedback(good + rr[:-3])
    assert feedback == ([], [Remb(400_000, (9,))])


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    feedback = parse_rtcp_feedback(data)
    assert isinstance(feedback.reports, list) and isinstance(feedback.rembs, list)


@given(st.lists(blocks, min_size=1, max_size=3), st.integers(0, 10**9), st.data())
def test_every_bit_flip_or_cut_still_parses(
    reports: list[ReportBlock], bitrate: int, data: st.DataObject
) -> None:
    packet = bytearray(build_receiver_report(3, reports) + build_remb(3, bitrate, [1, 2]))
    cut = data.draw(st.integers(0, len(packet)))
    bit = data.draw(st.integers(0, len(packet) * 8 - 1))
    packet[bit // 8] ^= 1 << (bit % 8)
    parse_rtcp_feedback(bytes(packet[:cut]))
    parse_rtcp_feedback(bytes(packet))
