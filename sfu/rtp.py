"""The few RTP facts the SFU routes on, sans-I/O: header, header extensions, VP8 keyframes.

Everything here takes and returns bytes and never raises on hostile input: a parser
returns ``None`` for anything malformed, so one client's garbage is dropped at the door.

* RFC 3550 §5.1  fixed header, CSRC list, padding.
* RFC 8285       one-byte (``0xBEDE``) and two-byte (``0x100x``) header extensions.
* RFC 6464       client-to-mixer audio level (``-dBov`` 0..127, 127 = silence; V flag).
* RFC 7741 §4.2  VP8 payload descriptor; §4.3 the first bytes of the VP8 frame (kept in
                 clear by SFrame, DESIGN §6) tell a keyframe from a delta frame.
* RFC 9605 §4.3  the SFrame header right after a frame's clear codec bytes: its key id
                 says whose key the frame is under (the SFU checks it is the publisher's).
* RFC 3550 §6.4  RTCP sender/receiver report blocks (loss per SSRC), read and written.
* draft-alvestrand-rmcat-remb-03  REMB (RFC 4585 PSFB, FMT 15, "REMB"): a receiver's
                 estimate of the bitrate it can take, read and written.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "ABS_SEND_TIME_URI",
    "AUDIO_LEVEL_SILENT",
    "NOT_FRAME_START",
    "SFRAME_MALFORMED",
    "Remb",
    "ReportBlock",
    "RtcpFeedback",
    "RtpHeader",
    "audio_level",
    "build_audio_level_extension",
    "build_receiver_report",
    "build_remb",
    "build_rtp",
    "find_extension",
    "is_rtcp",
    "nack_bound",
    "parse_rtcp_feedback",
    "parse_rtp",
    "seq_newer",
    "sframe_kid",
    "sframe_kid_at",
    "vp8_frame_start",
    "vp8_keyframe_start",
]

RTP_VERSION = 2
AUDIO_LEVEL_SILENT = 127
_FIXED = struct.Struct("!BBHII")
_FIXED_CSRC = struct.Struct("!BBHIII")  # the fixed header and one CSRC
NOT_FRAME_START = -1  # sframe_kid: a packet in the middle of a frame (no SFrame header)
SFRAME_MALFORMED = -2  # sframe_kid: a frame start without a parseable SFrame header
# Clear codec bytes before the SFrame header (client/call/sframe.py): VP8 keyframe / delta, Opus.
_VP8_KEYFRAME_CLEAR = 10
_VP8_DELTA_CLEAR = 3
_OPUS_CLEAR = 1
_ONE_BYTE_PROFILE = 0xBEDE
MAX_EXTENSION_STEPS = 32  # elements and padding bytes read in one extension block
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class RtpHeader(NamedTuple):
    """A parsed RTP packet: header fields and where the payload sits in ``data``."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int  # padding excluded
    ext_profile: int  # 0 when there is no extension block
    ext_start: int
    ext_end: int


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, a second byte of 192-223 is an RTCP packet type."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpHeader | None:
    """Parse an RTP packet; ``None`` if it is not a well-formed version 2 packet."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        return None
    pos = 12 + (b0 & 0x0F) * 4
    end = len(data)
    ext_profile = ext_start = ext_end = 0
    if b0 & 0x10:
        if end < pos + 4:
            return None
        ext_profile = (data[pos] << 8) | data[pos + 1]
        words = (data[pos + 2] << 8) | data[pos + 3]
        ext_start = pos + 4
        ext_end = ext_start + words * 4
        pos = ext_end
    if b0 & 0x20:
        if end <= pos:
            return None
        pad = data[-1]
        if pad == 0:
            return None
        end -= pad
    if end < pos:
        return None
    return RtpHeader(
        bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, pos, end, ext_profile, ext_start, ext_end
    )


def find_extension(data: bytes, header: RtpHeader, ext_id: int) -> bytes | None:
    """The value of header extension ``ext_id`` (RFC 8285), or ``None``.

    Reads at most :data:`MAX_EXTENSION_STEPS` elements and padding bytes: a sender has one
    element per negotiated id (fewer than 15 one-byte ids exist), and the SFU looks for a
    RID in packets no rate limit has counted yet, so a block of a thousand tiny elements
    must not cost a thousand steps. Past that bound the extension is "not found"."""
    if not header.ext_profile or not 1 <= ext_id <= 255:
        return None
    pos, end = header.ext_start, header.ext_end
    steps = MAX_EXTENSION_STEPS
    if header.ext_profile == _ONE_BYTE_PROFILE:
        while pos < end:
            steps -= 1
            if steps < 0:
                return None
            b = data[pos]
            if b == 0:  # padding
                pos += 1
                continue
            x_id, length = b >> 4, (b & 0x0F) + 1
            if x_id == 15:  # reserved: stop parsing (RFC 8285 §4.2)
                return None
            if pos + 1 + length > end:
                return None
            if x_id == ext_id:
                return data[pos + 1 : pos + 1 + length]
            pos += 1 + length
        return None
    if header.ext_profile >> 4 == 0x100:
        while pos < end:
            steps -= 1
            if steps < 0:
                return None
            if data[pos] == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return None
            x_id, length = data[pos], data[pos + 1]
            if pos + 2 + length > end:
                return None
            if x_id == ext_id:
                return data[pos + 2 : pos + 2 + length]
            pos += 2 + length
    return None


def audio_level(data: bytes, header: RtpHeader, ext_id: int) -> int | None:
    """RFC 6464 level as ``-dBov`` (0 loudest … 127 silence), or ``None`` if absent."""
    value = find_extension(data, header, ext_id)
    if not value:
        return None
    return value[0] & 0x7F


def build_audio_level_extension(ext_id: int, level: int) -> bytes:
    """A one-byte-header extension block carrying only the audio level (V flag clear)."""
    return bytes((0xBE, 0xDE, 0x00, 0x01, (ext_id << 4) & 0xF0, level & 0x7F, 0, 0))


def build_abs_send_time_extension(ext_id: int, send_time: int) -> bytes:
    """A one-byte-header extension block with abs-send-time (24-bit 6.18 fixed-point
    seconds): what a receive-side bandwidth estimator needs to send REMB."""
    return bytes(
        (
            0xBE,
            0xDE,
            0x00,
            0x01,
            ((ext_id << 4) & 0xF0) | 2,
            (send_time >> 16) & 0xFF,
            (send_time >> 8) & 0xFF,
            send_time & 0xFF,
        )
    )


def build_rtp(
    marker: bool,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes | memoryview,
    extension: bytes = b"",
    csrc: int | None = None,
) -> bytes:
    """Serialise an RTP packet; ``extension`` is a whole extension block or empty.

    ``csrc`` is one contributing source (the SFU names the publisher of what it forwards).
    """
    b0 = 0x90 if extension else 0x80
    b1 = (0x80 if marker else 0) | payload_type
    if csrc is None:
        return _FIXED.pack(b0, b1, sequence, timestamp, ssrc) + extension + payload
    return _FIXED_CSRC.pack(b0 | 1, b1, sequence, timestamp, ssrc, csrc) + extension + payload


def vp8_frame_start(data: bytes, header: RtpHeader) -> int:
    """Offset of the VP8 frame's first byte if this packet starts a frame, else -1.

    Parses the RFC 7741 §4.2 payload descriptor as aiortc's depayloader does, so the SFU
    and the receivers agree on where a frame starts.
    """
    pos, end = header.payload_start, header.payload_end
    if pos >= end:
        return -1
    b = data[pos]
    # S bit set and partition index 0: the packet starts the frame.
    if not b & 0x10 or b & 0x07:
        return -1
    pos += 1
    if b & 0x80:  # X: extension byte follows
        if pos >= end:
            return -1
        x = data[pos]
        pos += 1
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= end:
                return -1
            pos += 2 if data[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    return pos if pos < end else -1


def vp8_keyframe_start(data: bytes, header: RtpHeader) -> bool:
    """True if this VP8 RTP packet starts a keyframe (RFC 7741 §4.2-4.3).

    Reads only the payload descriptor and the first byte of the VP8 frame tag, which
    SFrame leaves in clear; anything truncated or odd is "not a keyframe start".
    """
    pos = vp8_frame_start(data, header)
    # VP8 frame tag bit 0 is the inverse keyframe flag (RFC 6386 §9.1).
    return pos >= 0 and data[pos] & 0x01 == 0


def sframe_kid(data: bytes, header: RtpHeader, video: bool) -> int:
    """The SFrame key id of the frame this packet starts (RFC 9605 §4.3), without a key.

    A protected frame is ``clear codec bytes || SFrame header || ciphertext``
    (``client.call.sframe.protect_frame``): 10 clear bytes for a VP8 keyframe, 3 for a delta
    frame, 1 (the TOC) for Opus; every Opus packet is a whole frame. Returns
    :data:`NOT_FRAME_START` for a VP8 packet inside a frame and :data:`SFRAME_MALFORMED`
    when the header is missing or truncated. O(1): a few byte reads per packet.
    """
    return sframe_kid_at(data, header, vp8_frame_start(data, header) if video else None)


def sframe_kid_at(data: bytes, header: RtpHeader, vp8_start: int | None) -> int:
    """:func:`sframe_kid` for a packet whose VP8 frame start is already known
    (``vp8_start`` from :func:`vp8_frame_start`; None for Opus), so the SFU parses each
    video packet's payload descriptor once for both the key id and the keyframe flag."""
    if vp8_start is not None:
        pos = vp8_start
        if pos < 0:
            start = header.payload_start
            claims_start = start < header.payload_end and data[start] & 0x17 == 0x10
            return SFRAME_MALFORMED if claims_start else NOT_FRAME_START
        pos += _VP8_KEYFRAME_CLEAR if data[pos] & 0x01 == 0 else _VP8_DELTA_CLEAR
    else:
        pos = header.payload_start + _OPUS_CLEAR
    end = header.payload_end
    if pos >= end:
        return SFRAME_MALFORMED
    config = data[pos]
    if not config & 0x80:
        return (config >> 4) & 0x07
    size = ((config >> 4) & 0x07) + 1
    if pos + 1 + size > end:
        return SFRAME_MALFORMED
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big")


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` is after ``b`` (RFC 3550 wrap-around)."""
    return a != b and (a - b) & 0xFFFF < 0x8000


# =====================================================================================
# RTCP congestion feedback: report blocks and REMB
# =====================================================================================

RTCP_SR = 200
RTCP_RR = 201
RTCP_PSFB = 206
PSFB_APP = 15  # RFC 4585 §6.4 application layer feedback; REMB rides on it
_REMB_ID = b"REMB"
_SSRC = struct.Struct("!I")
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|cumulative, ext seq, jitter, lsr, dlsr
_RTCP_HEADER = struct.Struct("!BBH")
_MAX_BLOCKS = 31  # the 5-bit report count
_MAX_REMB_MANTISSA = 0x3FFFF  # 18 bits


class ReportBlock(NamedTuple):
    """An RFC 3550 §6.4.1 report block: how well ``ssrc`` is being received."""

    ssrc: int
    fraction_lost: int  # 0-255: lost / expected since the previous report, times 256
    cumulative_lost: int  # signed 24 bits (duplicates can make it negative)
    extended_highest_seq: int
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0


class Remb(NamedTuple):
    """A receiver's estimate of what it can take, in bits/s, for the streams ``ssrcs``."""

    bitrate: int
    ssrcs: tuple[int, ...]


class RtcpFeedback(NamedTuple):
    """What an RTCP compound packet says about congestion (empty lists: nothing usable)."""

    reports: list[ReportBlock]
    rembs: list[Remb]


def _blocks(data: bytes, pos: int, end: int, count: int, out: list[ReportBlock]) -> None:
    for _ in range(count):
        if pos + 24 > end:
            return
        ssrc, lost, seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        out.append(ReportBlock(ssrc, lost >> 24, cumulative, seq, jitter, lsr, dlsr))
        pos += 24


def _remb(data: bytes, pos: int, end: int) -> Remb | None:
    # Common PSFB header (sender SSRC, media SSRC = 0), then "REMB", num, exp|mantissa, SSRCs.
    fci = pos + 8
    if fci + 8 > end or data[fci : fci + 4] != _REMB_ID:
        return None
    count = data[fci + 4]
    exponent = data[fci + 5] >> 2
    mantissa = ((data[fci + 5] & 0x03) << 16) | (data[fci + 6] << 8) | data[fci + 7]
    if fci + 8 + 4 * count > end:
        return None
    # One C-level unpack: a subscriber's RTCP has no rate limit in front of this parser.
    ssrcs = struct.unpack_from(f"!{count}I", data, fci + 8)
    return Remb(mantissa << exponent, ssrcs)


def parse_rtcp_feedback(data: bytes) -> RtcpFeedback:
    """The report blocks (from SR and RR) and REMBs in an RTCP compound packet.

    Never raises: parsing stops at the first malformed packet of the compound (what came
    before it is kept), and a malformed REMB or block is skipped.
    """
    reports: list[ReportBlock] = []
    rembs: list[Remb] = []
    pos, size = 0, len(data)
    while pos + 4 <= size:
        b0, ptype, words = _RTCP_HEADER.unpack_from(data, pos)
        end = pos + 4 + 4 * words
        if b0 >> 6 != RTP_VERSION or end > size:
            break
        count = b0 & 0x1F
        if ptype == RTCP_RR:
            _blocks(data, pos + 8, end, count, reports)
        elif ptype == RTCP_SR:
            _blocks(data, pos + 28, end, count, reports)
        elif ptype == RTCP_PSFB and count == PSFB_APP:
            remb = _remb(data, pos + 4, end)
            if remb is not None:
                rembs.append(remb)
        pos = end
    return RtcpFeedback(reports, rembs)


RTCP_RTPFB = 205
RTPFB_NACK = 1


def nack_bound(data: bytes) -> int:
    """At most how many sequence numbers the generic NACKs (RFC 4585 §6.2.1) in an RTCP
    compound ask for: 17 per FCI entry (a packet id and a 16-bit mask). O(packets in the
    compound), never raises: what a rate limit can weigh before anything parses the FCIs."""
    total, pos, size = 0, 0, len(data)
    while pos + 4 <= size:
        b0, ptype, words = _RTCP_HEADER.unpack_from(data, pos)
        if b0 >> 6 != RTP_VERSION:
            break
        if ptype == RTCP_RTPFB and b0 & 0x1F == RTPFB_NACK and words > 2:
            total += max(0, min(words, (size - pos) // 4 - 1) - 2) * 17
        pos += 4 + 4 * words
    return total


def build_receiver_report(sender_ssrc: int, blocks: Sequence[ReportBlock]) -> bytes:
    """RTCP RR packet(s) (RFC 3550 §6.4.2) carrying ``blocks``: 31 per packet, at least one
    packet (an RR without blocks is a valid compound start)."""
    out = bytearray()
    start = 0
    while True:
        chunk = blocks[start : start + _MAX_BLOCKS]
        out += _RTCP_HEADER.pack(0x80 | len(chunk), RTCP_RR, 1 + 6 * len(chunk))
        out += _SSRC.pack(sender_ssrc & 0xFFFFFFFF)
        for b in chunk:
            fraction = min(max(b.fraction_lost, 0), 255)
            cumulative = min(max(b.cumulative_lost, -0x800000), 0x7FFFFF) & 0xFFFFFF
            out += _BLOCK.pack(
                b.ssrc & 0xFFFFFFFF,
                (fraction << 24) | cumulative,
                b.extended_highest_seq & 0xFFFFFFFF,
                b.jitter & 0xFFFFFFFF,
                b.lsr & 0xFFFFFFFF,
                b.dlsr & 0xFFFFFFFF,
            )
        start += _MAX_BLOCKS
        if start >= len(blocks):
            return bytes(out)


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    """A REMB packet: ``bitrate`` (rounded down to 18 significant bits) for ``ssrcs``
    (at most 255 are listed)."""
    listed = ssrcs[:255]
    exponent, mantissa = 0, max(int(bitrate), 0)
    while mantissa > _MAX_REMB_MANTISSA:
        mantissa >>= 1
        exponent += 1
    exponent = min(exponent, 63)
    header = _RTCP_HEADER.pack(0x80 | PSFB_APP, RTCP_PSFB, 4 + len(listed))
    fci = _REMB_ID + bytes(
        (len(listed), (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF)
    )
    listing = b"".join(_SSRC.pack(s & 0xFFFFFFFF) for s in listed)
    return b"".join((header, _SSRC.pack(sender_ssrc & 0xFFFFFFFF), b"\0\0\0\0", fci, listing))
