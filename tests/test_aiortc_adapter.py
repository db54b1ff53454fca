"""Fail loudly if the pinned aiortc/aioice moves a private name the adapter relies on.

Two layers: the *shape* checks read aiortc's source and signatures for every private name
``rtc/aiortc_adapter.py`` touches (so an upgrade fails here, by name, not as silent media
loss), and the *behaviour* checks run real aiortc peer connections on loopback through
each hook.
"""

from __future__ import annotations

import asyncio
import fractions
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aioice.ice
import aioice.stun
import aiortc
import aiortc.codecs
import aiortc.rtcrtpreceiver
import av
import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtpPacket
from support import until

from client.call.media import TestPatternTrack
from rtc import aiortc_adapter
from rtc.aiortc_adapter import EncodedFrame, MarkerJitterBuffer, OutboundFrame, SourcedJitterFrame
from sfu import rtp

VIDEO_TB = fractions.Fraction(1, 90000)
AUDIO_TB = fractions.Fraction(1, 48000)


def source(obj: Any) -> str:
    return inspect.getsource(obj)


def params(obj: Any) -> list[str]:
    return list(inspect.signature(obj).parameters)


# =========================================================================== shape checks


def test_pinned_versions() -> None:
    assert aiortc.__version__ == "1.16.0", "re-check every name below, then bump the pin"


def test_aioice_gathers_host_addresses_through_module_function() -> None:
    assert "get_host_addresses(" in source(aioice.ice.Connection.gather_candidates)
    assert params(aiortc_adapter._original_host_addresses) == ["use_ipv4", "use_ipv6"]


def test_decoder_worker_and_get_decoder_are_module_globals_looked_up_per_use() -> None:
    worker = aiortc_adapter._original_decoder_worker
    assert worker.__module__ == "aiortc.rtcrtpreceiver"
    assert params(worker) == ["loop", "input_q", "output_q", "decode_error"]
    body = source(worker)
    assert "decoder = get_decoder(codec)" in body
    assert "except av.FFmpegError" in body  # the only exception the thread survives
    assert "output_q.put(frame)" in body  # whatever decode() returns reaches the track
    assert "target=decoder_worker" in source(RTCRtpReceiver.receive)
    assert "self._track._queue" in source(RTCRtpReceiver.receive)
    assert hasattr(aiortc.rtcrtpreceiver.RemoteStreamTrack(kind="video"), "_queue")
    assert params(aiortc_adapter._original_get_decoder) == ["codec"]


def test_receiver_jitter_buffer_contract() -> None:
    init = source(RTCRtpReceiver.__init__)
    assert "self.__jitter_buffer = JitterBuffer(" in init
    assert "self._track" in init
    handle = source(RTCRtpReceiver._handle_rtp_packet)
    assert "packet._data = depayload(codec, packet.payload)" in handle
    assert "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)" in handle
    assert "await self._send_rtcp_pli(packet.ssrc)" in handle
    assert params(JitterFrame) == ["data", "timestamp"]


def test_remote_track_queue_contract() -> None:
    # queued_frames() reads RemoteStreamTrack._queue, the asyncio.Queue recv() takes from.
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    assert "self._queue: asyncio.Queue = asyncio.Queue()" in source(RemoteStreamTrack.__init__)
    assert "await self._queue.get()" in source(RemoteStreamTrack.recv)
    track = RemoteStreamTrack(kind="video")
    track._queue.put_nowait(None)
    assert aiortc_adapter.queued_frames(track) == 1
    assert aiortc_adapter.queued_frames(object()) == 0


def test_receiver_pli_sender() -> None:
    assert params(RTCRtpReceiver._send_rtcp_pli) == ["self", "media_ssrc"]


def test_sender_encoded_frame_contract() -> None:
    assert params(RTCRtpSender._next_encoded_frame) == ["self", "codec"]
    run = source(RTCRtpSender._run_rtp)
    assert "enc_frame = await self._next_encoded_frame(codec)" in run
    assert "enc_frame.audio_level" in run and "enc_frame.payloads" in run
    assert params(RTCEncodedFrame) == ["payloads", "timestamp", "audio_level"]
    assert "self._enabled" in source(RTCRtpSender._next_encoded_frame)
    assert params(aiortc.codecs.get_encoder) == ["codec"]
    assert "self.__encoder.pack(data)" in source(RTCRtpSender._next_encoded_frame)


def test_sender_keyframe_request_and_ssrc() -> None:
    handle = source(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_PLI" in handle and "RTCP_PSFB_FIR" in handle
    assert "self._send_keyframe()" in handle
    assert params(RTCRtpSender._send_keyframe) == ["self"]
    assert "self._ssrc = " in source(RTCRtpSender.__init__)


def test_nack_contract() -> None:
    # on_nack() replaces RTCRtpSender._retransmit, which a remote NACK calls per sequence
    # number; send_nack() calls RTCRtpReceiver._send_rtcp_nack; sender_rtx_ssrc() reads
    # _rtx_ssrc, the SSRC aiortc writes into the ssrc-group FID of its SDP.
    handle = source(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_RTPFB_NACK" in handle and "await self._retransmit(seq)" in handle
    assert params(RTCRtpSender._retransmit) == ["self", "sequence_number"]
    assert params(RTCRtpReceiver._send_rtcp_nack) == ["self", "media_ssrc", "lost"]
    assert "self._rtx_ssrc = " in source(RTCRtpSender.__init__)
    # count_retransmits() reads the history _retransmit answers from (name-mangled).
    assert "self.__rtp_history: dict[int, RtpPacket] = {}" in source(RTCRtpSender.__init__)
    assert "self.__rtp_history.get(sequence_number % RTP_HISTORY_SIZE)" in source(
        RTCRtpSender._retransmit
    )


def test_transceiver_negotiated_parameters() -> None:
    init = source(RTCRtpTransceiver.__init__)
    assert "self._codecs" in init and "self._headerExtensions" in init


def test_dtls_transport_rtp_seams() -> None:
    recv = source(RTCDtlsTransport._recv_next)
    assert "data = self._rx_srtp.unprotect(data)" in recv
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in recv
    assert "await self._handle_rtcp_data(data)" in recv
    assert params(RTCDtlsTransport._handle_rtp_data) == ["self", "data", "arrival_time_ms"]
    assert params(RTCDtlsTransport._handle_rtcp_data) == ["self", "data"]
    assert "self._tx_srtp.protect(data)" in source(RTCDtlsTransport._send_rtp)
    assert "self._tx_srtp: Session = None" in source(RTCDtlsTransport.__init__)


def test_ice_nominated_pair_path() -> None:
    assert "self._connection = " in source(RTCIceTransport.__init__)
    assert "self._nominated: dict[int, CandidatePair] = {}" in source(aioice.ice.Connection)
    sendto = source(aioice.ice.Connection.sendto)
    assert "active_pair = self._nominated.get(component)" in sendto
    assert "active_pair.protocol.send_data(data, active_pair.remote_addr)" in sendto
    assert "self.transport.sendto(data, addr)" in source(aioice.ice.StunProtocol.send_data)
    assert isinstance(aioice.ice.CandidatePair.remote_addr, property)
    # RtpSink keeps a reference to the dict: it must be emptied, never replaced.
    assert source(aioice.ice.Connection).count("self._nominated = ") == 0
    assert "self._nominated.clear()" in source(aioice.ice.Connection.close)


def test_blackhole_seams() -> None:
    """:func:`aiortc_adapter.blackhole` replaces these per protocol instance."""
    assert "self._protocols: list[StunProtocol] = []" in source(aioice.ice.Connection.__init__)
    assert params(aioice.ice.StunProtocol.send_stun) == ["self", "message", "addr"]
    assert inspect.iscoroutinefunction(aioice.ice.StunProtocol.send_data)
    assert "self.__protocol.send_stun(" in source(aioice.stun.Transaction)
    assert "protocol.send_data(" in source(aioice.ice.Connection.sendto)


def test_ice_protocol_datagram_seam() -> None:
    assert params(aioice.ice.StunProtocol.datagram_received) == ["self", "data", "addr"]
    body = source(aioice.ice.StunProtocol.datagram_received)
    assert "self.receiver.data_received(data, self.local_candidate.component)" in body
    assert "self._rx_srtp: Session = None" in source(RTCDtlsTransport.__init__)
    assert "protect_rtcp" in dir(aiortc_adapter.pylibsrtp.Session)


# =========================================================================== pure behaviour


def rtp_packet(seq: int, ts: int, marker: bool, payload: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts)
    p.payload = payload
    p._data = payload[1:]  # type: ignore[attr-defined]  # what depayload() would leave
    return p


def test_marker_buffer_releases_video_on_marker() -> None:
    jb = MarkerJitterBuffer("video")
    assert jb.add(rtp_packet(10, 1000, False, b"\x10AA")) == (False, None)
    assert jb.add(rtp_packet(11, 1000, False, b"\x00BB")) == (False, None)
    pli, frame = jb.add(rtp_packet(12, 1000, True, b"\x00CC"))
    assert not pli and frame is not None
    assert (frame.data, frame.timestamp) == (b"AABBCC", 1000)
    # A single-packet frame, reordered packets of the next one, a late duplicate.
    pli, frame = jb.add(rtp_packet(13, 2000, True, b"\x10DD"))
    assert frame is not None and frame.data == b"DD"
    assert jb.add(rtp_packet(15, 3000, True, b"\x00FF")) == (False, None)
    pli, frame = jb.add(rtp_packet(14, 3000, False, b"\x10EE"))  # the marker came first
    assert not pli and frame is not None and frame.data == b"EEFF"
    assert jb.add(rtp_packet(12, 1000, True, b"\x00CC")) == (False, None)  # late: dropped


def test_marker_buffer_skips_an_incomplete_frame_and_flags_pli() -> None:
    jb = MarkerJitterBuffer("video")
    jb.add(rtp_packet(1, 100, True, b"\x10A"))
    jb.add(rtp_packet(2, 200, False, b"\x10B"))  # frame 200 loses its packet 3
    pli, frame = jb.add(rtp_packet(4, 300, True, b"\x10C"))
    assert pli and frame is not None and frame.data == b"C"
    assert jb.add(rtp_packet(3, 200, True, b"\x00b")) == (False, None)


def test_marker_buffer_releases_every_audio_packet_at_once() -> None:
    jb = MarkerJitterBuffer("audio")
    for seq in range(5):
        _, frame = jb.add(rtp_packet((65534 + seq) & 0xFFFF, seq * 960, True, b"\x78o"))
        assert frame is not None and frame.timestamp == seq * 960
    assert jb.add(rtp_packet(65534, 0, True, b"\x78o")) == (False, None)


def test_marker_buffer_bounds_itself_without_markers() -> None:
    jb = MarkerJitterBuffer("video", capacity=16)
    plis = [jb.add(rtp_packet(i, i, False, b"\x10x"))[0] for i in range(40)]
    assert any(plis)
    assert len(jb._packets) <= 16


def test_passthrough_decoder_never_raises() -> None:
    dec = aiortc_adapter.PassThroughDecoder("VP8")
    [out] = dec.decode(JitterFrame(b"abc", 7))
    assert out == EncodedFrame(b"abc", 7, "vp8")
    assert dec.decode(None) == []  # type: ignore[arg-type]


def test_unbundling_decoder_decodes_each_frame_of_a_bundle_in_order() -> None:
    class Recording(aiortc.codecs.base.Decoder):
        def __init__(self) -> None:
            self.seen: list[tuple[bytes, int]] = []

        def decode(self, encoded_frame: JitterFrame) -> list[Any]:
            if encoded_frame.data == b"bad":
                raise av.InvalidDataError(1094995529, "bad")
            self.seen.append((encoded_frame.data, encoded_frame.timestamp))
            return [encoded_frame.data]

    inner = Recording()
    dec = aiortc_adapter.UnbundlingDecoder(inner)
    assert dec.decode(JitterFrame(b"one", 5)) == [b"one"]
    frames = [
        SourcedJitterFrame(d, ts, None) for d, ts in ((b"a", 1000), (b"bad", 4000), (b"c", 7000))
    ]
    bundle = aiortc_adapter.BundledJitterFrame(frames)
    bundle.timestamp = 100  # aiortc rebased the last frame's timestamp
    assert dec.decode(bundle) == [b"a", b"c"]  # the frame that fails is skipped
    assert inner.seen[1:] == [(b"a", 100 - 6000), (b"c", 100)]
    only_bad = aiortc_adapter.BundledJitterFrame([SourcedJitterFrame(b"bad", 1, None)])
    with pytest.raises(av.FFmpegError):  # nothing decoded: aiortc's worker asks for a keyframe
        dec.decode(only_bad)


# =========================================================================== live behaviour


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


@pytest.mark.usefixtures("loopback_ice")
async def test_restricted_ice_gathers_only_loopback() -> None:
    conn = aioice.ice.Connection(ice_controlling=True, components=1)
    await conn.gather_candidates()
    hosts = {c.host for c in conn.local_candidates}
    await conn.close()
    assert hosts == {"127.0.0.1"}


def config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


@pytest.fixture
async def pair(loopback_ice: None) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    a, b = RTCPeerConnection(config()), RTCPeerConnection(config())
    yield a, b
    await a.close()
    await b.close()


async def negotiate(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    await until(condition, what, timeout, interval=0.01)


class FrameSource(MediaStreamTrack):
    """Yields given OutboundFrames, paced at ``interval``."""

    def __init__(self, kind: str, frames: list[OutboundFrame], interval: float = 0.02):
        super().__init__()
        self.kind = kind
        self.frames = list(frames)
        self.interval = interval

    async def recv(self) -> OutboundFrame:  # type: ignore[override]
        await asyncio.sleep(self.interval)
        if not self.frames:
            await asyncio.sleep(3600)
        return self.frames.pop(0)


def fake_vp8(n: int, size: int) -> bytes:
    tag = 0x10 if n == 0 else 0x11  # keyframe first
    return bytes((tag, n & 0xFF, 0x01)) + bytes((n * 7 + i) & 0xFF for i in range(size - 3))


async def test_preencoded_frames_arrive_unchanged_through_passthrough(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    video = [OutboundFrame(fake_vp8(n, 700 + 900 * (n % 4)), n * 6000, VIDEO_TB) for n in range(8)]
    audio = [OutboundFrame(b"\x78" + bytes([n]) * 60, n * 960, AUDIO_TB, -20) for n in range(8)]
    for kind, frames in (("video", video), ("audio", audio)):
        t = a.addTransceiver(FrameSource(kind, frames), direction="sendonly")
        aiortc_adapter.enable_preencoded(t.sender)
        r = b.addTransceiver(kind, direction="recvonly").receiver
        aiortc_adapter.enable_passthrough(r)
        aiortc_adapter.use_marker_release(r, kind)
    await negotiate(a, b)
    got: dict[str, list[Any]] = {}
    for t in b.getTransceivers():
        items = [await asyncio.wait_for(t.receiver.track.recv(), 10) for _ in range(8)]
        got[t.kind] = items
    assert [f.data for f in got["video"]] == [f.data for f in video]
    assert [f.data for f in got["audio"]] == [f.data for f in audio]
    assert [f.codec for f in got["video"]] == ["vp8"] * 8
    ts = [f.timestamp for f in got["video"]]
    assert [t - ts[0] for t in ts] == [n * 6000 for n in range(8)]


async def test_other_receivers_keep_decoding(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    for _ in range(2):
        a.addTransceiver(TestPatternTrack("Alice", 96, 64), direction="sendonly")
    r1 = b.addTransceiver("video", direction="recvonly").receiver
    r2 = b.addTransceiver("video", direction="recvonly").receiver
    aiortc_adapter.enable_passthrough(r1)
    await negotiate(a, b)
    first = await asyncio.wait_for(r1.track.recv(), 10)
    second = await asyncio.wait_for(r2.track.recv(), 10)
    assert isinstance(first, EncodedFrame)
    assert isinstance(second, av.VideoFrame)


async def test_audio_level_and_keyframe_hooks_over_the_wire(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    audio = [OutboundFrame(b"\x78level", n * 960, AUDIO_TB, -37) for n in range(200)]
    video = [OutboundFrame(fake_vp8(n, 200), n * 6000, VIDEO_TB) for n in range(200)]
    senders = {}
    for kind, frames in (("audio", audio), ("video", video)):
        t = a.addTransceiver(FrameSource(kind, frames), direction="sendonly")
        aiortc_adapter.enable_preencoded(t.sender)
        senders[kind] = t.sender
        b.addTransceiver(kind, direction="recvonly")
    asked: list[str] = []
    aiortc_adapter.on_keyframe_request(senders["video"], lambda: asked.append("kf"))
    raw: list[bytes] = []
    await negotiate(a, b)
    dtls = b.getTransceivers()[0].receiver.transport
    aiortc_adapter.intercept_rtp(dtls, raw.append)
    await wait_for(lambda: len(raw) > 10, "raw RTP")
    levels = set()
    for data in raw:
        hdr = rtp.parse_rtp(data)
        assert hdr is not None
        if hdr.ssrc == aiortc_adapter.sender_ssrc(senders["audio"]):
            ext = next(
                e.id
                for e in aiortc_adapter.negotiated_header_extensions(b.getTransceivers()[0])
                if e.uri.endswith("ssrc-audio-level")
            )
            levels.add(rtp.audio_level(data, hdr, ext))
    assert levels == {37}
    video_receiver = b.getTransceivers()[1].receiver
    await aiortc_adapter.send_pli(video_receiver, aiortc_adapter.sender_ssrc(senders["video"]))
    await wait_for(lambda: asked == ["kf"], "keyframe request at the sender")
    codecs = aiortc_adapter.negotiated_codecs(b.getTransceivers()[1])
    assert codecs[0].mimeType.lower() == "video/vp8"


async def test_rtp_sink_feeds_a_stock_receiver(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    ta = a.addTransceiver("video", direction="sendonly")
    rb = b.addTransceiver("video", direction="recvonly").receiver
    aiortc_adapter.enable_passthrough(rb)
    aiortc_adapter.use_marker_release(rb, "video")
    await negotiate(a, b)
    sink = aiortc_adapter.RtpSink(ta.sender.transport)
    await wait_for(lambda: sink(b"\x80\x00" + bytes(10)) or False, "a connected sink")
    ssrc = aiortc_adapter.sender_ssrc(ta.sender)
    pt = aiortc_adapter.negotiated_codecs(ta)[0].payloadType
    assert pt is not None
    frames = [fake_vp8(n, 300) for n in range(3)]
    for n, frame in enumerate(frames):
        # Two packets per frame: descriptor S=1 then S=0; the marker closes the frame.
        half = len(frame) // 2
        assert sink(rtp.build_rtp(False, pt, 2 * n, n * 3000, ssrc, b"\x10" + frame[:half]))
        assert sink(rtp.build_rtp(True, pt, 2 * n + 1, n * 3000, ssrc, b"\x00" + frame[half:]))
    got: list[Any] = [await asyncio.wait_for(rb.track.recv(), 10) for _ in range(3)]
    assert [f.data for f in got] == frames
    assert sink.sent >= 6


async def test_rtp_from_the_socket_while_rtcp_keeps_aiortcs_path(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    video = [OutboundFrame(fake_vp8(n, 200), n * 6000, VIDEO_TB) for n in range(500)]
    ta = a.addTransceiver(FrameSource("video", video), direction="sendonly")
    aiortc_adapter.enable_preencoded(ta.sender)
    b.addTransceiver("video", direction="recvonly")
    tb = b.addTransceiver(FrameSource("video", []), direction="sendonly")
    a.addTransceiver("video", direction="recvonly")
    asked: list[int] = []
    aiortc_adapter.on_keyframe_request(tb.sender, lambda: asked.append(1))
    dtls = b.getTransceivers()[0].receiver.transport
    assert not aiortc_adapter.receive_rtp_from_socket(dtls, lambda data: None)  # too early
    await negotiate(a, b)
    await wait_for(lambda: b.connectionState == "connected", "connection")
    got: list[bytes] = []
    assert aiortc_adapter.receive_rtp_from_socket(dtls, got.append)
    await wait_for(lambda: len(got) >= 5, "RTP through the socket hook")
    headers = [rtp.parse_rtp(data) for data in got]
    assert {h.ssrc for h in headers if h} == {aiortc_adapter.sender_ssrc(ta.sender)}
    # RTCP still reaches aiortc: a PLI from a to b's sender arrives at b's hook.
    await aiortc_adapter.send_pli(
        a.getTransceivers()[1].receiver, aiortc_adapter.sender_ssrc(tb.sender)
    )
    await wait_for(lambda: asked == [1], "PLI through aiortc's RTCP path")


async def test_relay_only_policy_reaches_aioice() -> None:
    """``salon call --relay-only`` relies on aiortc's public iceTransportPolicy reaching
    aioice's transport policy (client/call/ice.py); fail loudly if that plumbing changes."""
    import aioice
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )
    try:
        pc.addTransceiver("audio")
        gatherer = pc.getTransceivers()[0].sender.transport.transport.iceGatherer
        assert gatherer._connection._transport_policy == aioice.TransportPolicy.RELAY
    finally:
        await pc.close()
