"""Congestion feedback through the aiortc adapter: the private names ``on_remb`` and
``intercept_rtp(on_rtcp=...)`` rely on (fail loudly if aiortc moves them), and real aiortc
peers on loopback: a stock receiver's REMB reaches a pre-encoded sender's callback and the
raw RTCP hook; the abs-send-time extension that REMB needs is negotiated for video."""

from __future__ import annotations

import asyncio
import fractions
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from support import until

from rtc import aiortc_adapter
from rtc.aiortc_adapter import OutboundFrame
from sfu import rtp

VIDEO_TB = fractions.Fraction(1, 90000)


def source(obj: Any) -> str:
    return inspect.getsource(obj)


# =========================================================================== shape checks


def test_sender_rtcp_handler_is_looked_up_per_packet() -> None:
    # on_remb replaces the instance's _handle_rtcp_packet; the transport must call it
    # through the instance, and REMBs must reach the senders named in their FCI.
    assert "await recipient._handle_rtcp_packet(packet)" in source(
        RTCDtlsTransport._handle_rtcp_data
    )
    assert list(inspect.signature(RTCRtpSender._handle_rtcp_packet).parameters) == [
        "self",
        "packet",
    ]
    route = source(RtpRouter.route_rtcp)
    assert "rtp.unpack_remb_fci(packet.fci)[1]" in route
    handle = source(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_APP" in handle and "unpack_remb_fci(packet.fci)" in handle


def test_rtcp_reaches_the_transport_hook_decrypted() -> None:
    recv = source(RTCDtlsTransport._recv_next)
    assert "data = self._rx_srtp.unprotect_rtcp(data)" in recv
    assert "await self._handle_rtcp_data(data)" in recv


def test_receivers_estimate_from_abs_send_time_and_send_remb() -> None:
    handle = source(RTCRtpReceiver._handle_rtp_packet)
    assert "packet.extensions.abs_send_time" in handle
    assert "fci=pack_remb_fci(*remb)" in handle
    video = [e.uri for e in aiortc_adapter.aiortc.codecs.HEADER_EXTENSIONS["video"]]
    assert rtp.ABS_SEND_TIME_URI in video


# =========================================================================== over the wire


class FrameSource(MediaStreamTrack):
    """Fake VP8 frames of ``size`` bytes, 50 a second, until stopped."""

    kind = "video"

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.n = 0

    async def recv(self) -> OutboundFrame:  # type: ignore[override]
        await asyncio.sleep(0.02)
        n, self.n = self.n, self.n + 1
        tag = 0x10 if n == 0 else 0x11
        return OutboundFrame(bytes((tag, 0, 1)) + bytes(self.size - 3), n * 1800, VIDEO_TB)


@pytest.fixture
async def pair(loopback_ice: None) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    cfg = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    a, b = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    yield a, b
    await a.close()
    await b.close()


async def test_remb_from_a_stock_receiver_reaches_the_sender_and_the_rtcp_hook(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    ta = a.addTransceiver(FrameSource(1000), direction="sendonly")
    aiortc_adapter.enable_preencoded(ta.sender)
    b.addTransceiver("video", direction="recvonly")
    rembs: list[int] = []
    aiortc_adapter.on_remb(ta.sender, rembs.append)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    assert rtp.ABS_SEND_TIME_URI in str(b.localDescription.sdp)
    raw: list[bytes] = []
    dtls = ta.sender.transport
    aiortc_adapter.intercept_rtp(dtls, lambda data: None, raw.append)
    await until(lambda: a.connectionState == "connected", "connection", 20)
    # RTP from the socket (the SFU's fast path) leaves RTCP on the path the hook sits on.
    assert aiortc_adapter.receive_rtp_from_socket(dtls, lambda data: None)
    mark, seen = len(raw), len(rembs)
    await until(lambda: len(rembs) >= seen + 2, "REMB at the sender", 20, interval=0.05)
    ssrc = aiortc_adapter.sender_ssrc(ta.sender)
    parsed = [r for data in raw[mark:] for r in rtp.parse_rtcp_feedback(data).rembs]
    assert parsed and all(ssrc in r.ssrcs for r in parsed)
    # ~50 kB/s sent: the estimate is of that order, not a default or zero.
    assert all(50_000 < bps < 10_000_000 for bps in rembs)
    await until(
        lambda: any(b.ssrc == ssrc for d in raw for b in rtp.parse_rtcp_feedback(d).reports),
        "a receiver report on the sender's SSRC through the hook",
        20,
        interval=0.05,
    )


async def test_a_failing_rtcp_hook_leaves_aiortcs_handling_alone(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    ta = a.addTransceiver(FrameSource(300), direction="sendonly")
    aiortc_adapter.enable_preencoded(ta.sender)
    b.addTransceiver("video", direction="recvonly")
    rembs: list[int] = []
    aiortc_adapter.on_remb(ta.sender, rembs.append)

    def broken(data: bytes) -> None:
        raise RuntimeError("hook bug")

    aiortc_adapter.intercept_rtp(ta.sender.transport, lambda data: None, broken)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await until(lambda: bool(rembs), "REMB handled by aiortc despite the failing hook", 20)


def test_aiortc_encoder_target_is_where_remb_goes() -> None:
    init = source(RTCRtpSender.__init__)
    assert "self.__encoder: Optional[Encoder] = None" in init
    assert "self.__encoder.target_bitrate = bitrate" in source(RTCRtpSender._handle_rtcp_packet)
    from aiortc.codecs.vpx import Vp8Encoder

    assert isinstance(Vp8Encoder.target_bitrate, property)


async def test_a_stock_encoder_follows_remb_and_the_adapter_reads_its_target(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    from client.call.media import TestPatternTrack

    a, b = pair
    ta = a.addTransceiver(TestPatternTrack("Alice"), direction="sendonly")
    b.addTransceiver("video", direction="recvonly")
    assert aiortc_adapter.encoder_target_bitrate(ta.sender) is None
    targets: list[int | None] = []
    aiortc_adapter.on_remb(
        ta.sender, lambda bps: targets.append(aiortc_adapter.encoder_target_bitrate(ta.sender))
    )
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await until(lambda: any(t is not None for t in targets), "an encoder target", 20)
    assert all(250_000 <= t <= 1_500_000 for t in targets if t is not None), targets


async def test_a_connection_closed_while_connecting_is_not_logged_as_an_error() -> None:
    """aiortc's own connect task of a closed connection fails with "RTCIceTransport is closed"
    and nobody awaits it; the adapter's handler drops exactly that, and passes on the rest.
    Fails loudly if aiortc renames the task's coroutine."""
    from aiortc import RTCPeerConnection
    from aiortc.exceptions import InvalidStateError

    loop = asyncio.get_running_loop()
    passed_on: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
    try:
        aiortc_adapter.quiet_connect_after_close(loop)
        pc = RTCPeerConnection()
        coro = pc._RTCPeerConnection__connect()  # type: ignore[attr-defined]

        class Task:
            def get_coro(self) -> object:
                return coro

        handler = loop.get_exception_handler()
        assert handler is not None
        closed = InvalidStateError("RTCIceTransport is closed")
        handler(loop, {"message": "Task exception was never retrieved", "exception": closed,
                       "future": Task()})  # fmt: skip
        assert passed_on == []
        other = {"message": "boom", "exception": ValueError("boom"), "future": Task()}
        handler(loop, other)
        assert passed_on == [other]
        coro.close()
        await pc.close()
    finally:
        loop.set_exception_handler(previous)
