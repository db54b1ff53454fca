"""sfu/rtp.py: the RTP header, extensions and VP8 keyframe bits the SFU routes on."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from sfu import rtp

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


# --- RFC 3550 §5.1 fixed header ------------------------------------------------------------


@given(
    marker=st.booleans(),
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    level=st.none() | st.integers(0, 127),
)
def test_build_then_parse_round_trips(
    marker: bool, pt: int, seq: int, ts: int, ssrc: int, payload: bytes, level: int | None
) -> None:
    ext = b"" if level is None else rtp.build_audio_level_extension(5, level)
    data = rtp.build_rtp(marker, pt, seq, ts, ssrc, payload, ext)
    hdr = rtp.parse_rtp(data)
    assert hdr is not None
    assert (hdr.marker, hdr.payload_type, hdr.sequence, hdr.timestamp, hdr.ssrc) == (
        marker,
        pt,
        seq,
        ts,
        ssrc,
    )
    assert data[hdr.payload_start : hdr.payload_end] == payload
    assert rtp.audio_level(data, hdr, 5) == level


@given(st.binary(max_size=80))
def test_parse_never_raises_on_garbage(data: bytes) -> None:
    hdr = rtp.parse_rtp(data)
    if hdr is not None:
        assert 12 <= hdr.payload_start <= hdr.payload_end <= len(data)
        for ext_id in (1, 2, 15):
            rtp.find_extension(data, hdr, ext_id)
        rtp.vp8_keyframe_start(data, hdr)


def test_parse_rejects_malformed_headers() -> None:
    good = rtp.build_rtp(False, 96, 1, 2, 3, b"xyz")
    assert rtp.parse_rtp(good) is not None
    assert rtp.parse_rtp(good[:11]) is None  # shorter than the fixed header
    assert rtp.parse_rtp(bytes([0x40]) + good[1:]) is None  # version 1
    assert rtp.parse_rtp(bytes([0x8F]) + good[1:]) is None  # 15 CSRCs that are not there
    assert rtp.parse_rtp(bytes([0x90]) + good[1:]) is None  # extension block missing
    padded = bytes([0xA0]) + good[1:]
    assert rtp.parse_rtp(padded[:-1] + b"\x00") is None  # padding count 0
    assert rtp.parse_rtp(padded[:-1] + b"\xff") is None  # padding longer than the packet


def test_padding_and_csrcs_are_skipped() -> None:
    csrc = (1234).to_bytes(4, "big")
    data = bytes([0xA1, 96]) + (7).to_bytes(2, "big") + bytes(8) + csrc + b"body" + b"\x00\x00\x03"
    hdr = rtp.parse_rtp(data)
    assert hdr is not None
    assert data[hdr.payload_start : hdr.payload_end] == b"body"


# --- RFC 8285 / RFC 6464 extensions --------------------------------------------------------


def test_reads_aiortc_audio_level_extension() -> None:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=2, uri=AUDIO_LEVEL_URI),
            ]
        )
    )
    packet = RtpPacket(payload_type=111, sequence_number=9, timestamp=960, ssrc=42)
    packet.extensions.mid = "1"
    packet.extensions.audio_level = (True, 33)
    packet.payload = b"\x78opus"
    data = packet.serialize(ext_map)
    hdr = rtp.parse_rtp(data)
    assert hdr is not None
    assert rtp.audio_level(data, hdr, 2) == 33
    assert rtp.find_extension(data, hdr, 1) == b"1"
    assert rtp.audio_level(data, hdr, 3) is None
    assert data[hdr.payload_start : hdr.payload_end] == b"\x78opus"


def test_two_byte_extension_profile() -> None:
    block = bytes((0x10, 0x00, 0x00, 0x02, 0, 7, 2, 0xAA, 0xBB, 0, 0, 0))
    data = bytes([0x90, 96]) + bytes(10) + block + b"p"
    hdr = rtp.parse_rtp(data)
    assert hdr is not None
    assert rtp.find_extension(data, hdr, 7) == b"\xaa\xbb"
    assert rtp.find_extension(data, hdr, 8) is None


def test_one_byte_extension_stops_at_reserved_id_and_overruns() -> None:
    for body in (bytes((0xF0, 1, 2, 3)), bytes((0x13, 1, 2, 3))):  # id 15; length past the end
        data = bytes([0x90, 96]) + bytes(10) + bytes((0xBE, 0xDE, 0, 1)) + body + b"p"
        hdr = rtp.parse_rtp(data)
        assert hdr is not None
        assert rtp.find_extension(data, hdr, 1) is None


# --- RFC 7741 VP8 ----------------------------------------------------------------------------


def vp8_packet(descriptor: bytes, frame_tag: int) -> bytes:
    return rtp.build_rtp(True, 96, 1, 1, 1, descriptor + bytes((frame_tag, 0, 0)))


def test_vp8_keyframe_start_reads_descriptor_variants() -> None:
    key, delta = 0x10, 0x11  # frame tag bit 0: 0 = keyframe
    cases = {
        b"\x10": True,  # S=1, PID 0, no extension
        b"\x90\x80\x05": True,  # X, I with 7-bit picture id
        b"\x90\x80\x85\x01": True,  # 15-bit picture id
        b"\x90\xe0\x85\x01\x07\x20": True,  # I, L and T/K bytes
        b"\x00": False,  # continuation packet (S=0)
        b"\x11": False,  # partition 1
    }
    for descriptor, is_start in cases.items():
        data = vp8_packet(descriptor, key)
        hdr = rtp.parse_rtp(data)
        assert hdr is not None
        assert rtp.vp8_keyframe_start(data, hdr) is is_start, descriptor
        data = vp8_packet(descriptor, delta)
        hdr = rtp.parse_rtp(data)
        assert hdr is not None
        assert rtp.vp8_keyframe_start(data, hdr) is False


def test_vp8_truncated_descriptor_is_not_a_keyframe() -> None:
    for payload in (b"", b"\x90", b"\x90\x80", b"\x90\x80\x85", b"\x10"):
        data = rtp.build_rtp(True, 96, 1, 1, 1, payload)
        hdr = rtp.parse_rtp(data)
        assert hdr is not None
        assert rtp.vp8_keyframe_start(data, hdr) is False


def test_vp8_keyframe_detection_matches_aiortc_packetizer() -> None:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 64, 48, "yuv420p"
    codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    frames = []
    for i in range(3):
        img = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 60, np.uint8), format="bgr24")
        img = img.reformat(format="yuv420p")
        img.pts, img.time_base = i * 3000, fractions.Fraction(1, 90000)
        frames += [bytes(p) for p in codec.encode(img)]
    enc = Vp8Encoder()
    for n, frame in enumerate(frames):
        # Big frames span several packets: only the first starts the frame.
        payloads = enc._packetize(frame + bytes(3000), enc.picture_id)
        assert len(payloads) > 1
        flags = []
        for payload in payloads:
            data = rtp.build_rtp(False, 96, 1, 1, 1, payload)
            hdr = rtp.parse_rtp(data)
            assert hdr is not None
            flags.append(rtp.vp8_keyframe_start(data, hdr))
        assert flags == [n == 0] + [False] * (len(payloads) - 1)


def test_seq_newer_wraps() -> None:
    assert rtp.seq_newer(1, 0)
    assert rtp.seq_newer(0, 0xFFFF)
    assert not rtp.seq_newer(0xFFFF, 0)
    assert not rtp.seq_newer(5, 5)
    assert rtp.seq_newer(0x7FFF, 0)
    assert not rtp.seq_newer(0x8000, 0)


def test_is_rtcp() -> None:
    assert rtp.is_rtcp(bytes((0x80, 200)) + bytes(6))  # SR
    assert rtp.is_rtcp(bytes((0x81, 206)) + bytes(10))  # PSFB
    assert not rtp.is_rtcp(rtp.build_rtp(False, 96, 1, 1, 1, b""))
    assert not rtp.is_rtcp(b"\x80")
