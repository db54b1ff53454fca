"""Congestion feedback at the SFU node (issue 13: REMB + receiver-report loss), with real
aiortc peers on loopback.

- The node's answer negotiates abs-send-time and goog-remb for video, to the CLI's offer and
  to a Chromium-shaped one (Chromium offers transport-cc too; the answer leaves it out, so
  Chromium falls back to REMB), and each video slot writes abs-send-time.
- A subscriber's REMB and receiver reports reach the forwarder (its estimate), and each
  publisher gets the node's RR + REMB, which its camera encoder follows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import aioice.ice
import pytest
from support import until

from client.call.e2ee_media import MEDIA_SUITE, SfuSession
from client.call.media import TestPatternTrack, ToneTrack
from client.call.sframe import SFrameContext
from rtc import aiortc_adapter
from sfu import rtp
from sfu.forwarder import ForwarderConfig
from sfu.node import ADAPT_ENV, SfuConfig, SfuNode, forwarder_config_from_env

CONF = "conf-feedback"
KIDS = {"Alice": 1 << 16, "Bob": 2 << 16}
KEYS = {"Alice": b"\x01" * 16, "Bob": b"\x02" * 16}

FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(
    ["7B", "8B", "F0", "65", "5F", "78", "E2", "51"] * 4
)
# A Chromium offer as the web client makes it for the SFU (candidates and keys replaced):
# microphone and camera published (camera with RTX), one receiving video slot.
CHROMIUM_OFFER = f"""v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wbzy
a=ice-pwd:J5NwKm7jd4Yp1nSmzjwnC6yq
a=ice-options:trickle
{FINGERPRINT}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:stream mic
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=ssrc:1001 cname:chromium
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wbzy
a=ice-pwd:J5NwKm7jd4Yp1nSmzjwnC6yq
a=ice-options:trickle
{FINGERPRINT}
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendonly
a=msid:stream camera
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc-group:FID 2001 2002
a=ssrc:2001 cname:chromium
a=ssrc:2002 cname:chromium
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wbzy
a=ice-pwd:J5NwKm7jd4Yp1nSmzjwnC6yq
a=ice-options:trickle
{FINGERPRINT}
a=setup:actpass
a=mid:2
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
""".replace("\n", "\r\n")


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


@pytest.fixture
async def node() -> AsyncIterator[SfuNode]:
    sfu = SfuNode()
    yield sfu
    await sfu.close()


def session(name: str) -> SfuSession:
    rx, tx = SFrameContext(MEDIA_SUITE), SFrameContext(MEDIA_SUITE)
    for other, kid in KIDS.items():
        (tx if other == name else rx).add_key(kid, KEYS[other])
    return SfuSession(
        send_ctx=tx,
        send_kid=KIDS[name],
        recv_ctx=rx,
        video=TestPatternTrack(name),
        audio=ToneTrack(name),
        video_slots=2,
        audio_slots=2,
    )


def video_sections(sdp: str) -> list[str]:
    return [s for s in re.split(r"\r?\n(?=m=)", sdp) if s.startswith("m=video")]


def test_adaptation_is_on_unless_the_environment_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert forwarder_config_from_env().adapt
    monkeypatch.setenv(ADAPT_ENV, "0")
    assert not forwarder_config_from_env().adapt


async def test_answers_negotiate_abs_send_time_and_remb_not_transport_cc(node: SfuNode) -> None:
    cli = session("Alice")
    try:
        answers = {
            "chromium": await node.join(CONF, "Chromium", CHROMIUM_OFFER),
            "cli": await node.join(CONF, "Alice", await cli.create_offer()),
        }
    finally:
        await cli.close()
    for who, answer in answers.items():
        for section in video_sections(answer):
            assert rtp.ABS_SEND_TIME_URI in section, (who, section)
            assert re.search(r"a=rtcp-fb:\d+ goog-remb", section), (who, section)
            assert "transport-cc" not in section, (who, section)
    peers = node._conferences[CONF].peers  # the slots as negotiated
    chromium_slot = next(dt for dt in peers["Chromium"].downtracks if dt.kind == "video")
    assert chromium_slot.abs_send_time_id == 2
    for dt in peers["Alice"].downtracks:
        assert (dt.abs_send_time_id is not None) == (dt.kind == "video"), dt


async def test_remb_and_reports_flow_both_ways_through_the_node(node: SfuNode) -> None:
    alice, bob = session("Alice"), session("Bob")
    try:
        for name, s in (("Alice", alice), ("Bob", bob)):
            await s.set_answer(await node.join(CONF, name, await s.create_offer()))
            s.start_receiving(lambda receiver, kid, frame: None)
        fwd = node.forwarder(CONF)
        assert fwd is not None

        def peer(pid: str) -> dict[str, int]:
            participants = node.stats()["conferences"][CONF]["participants"]
            return participants[pid]  # type: ignore[no-any-return]

        # Bob's aiortc receivers estimate from the abs-send-time the node wrote and send
        # REMB on his slots, and receiver reports; the node hands them to the forwarder.
        await until(
            lambda: peer("Bob")["rembs_received"] > 0 and peer("Bob")["loss_reports_received"] > 0,
            "Bob's REMB and receiver reports at the node",
            30,
        )
        assert peer("Alice")["feedback_sent"] > 0
        # The node's RR + REMB reach Alice's camera encoder.
        sender = alice.video_sender
        assert sender is not None
        await until(lambda: sender.estimate_bps is not None, "the node's REMB at Alice", 30)
        assert alice.stats()["video_bitrate"]["estimate_kbps"] is not None
    finally:
        await alice.close()
        await bob.close()


async def test_without_adaptation_publishers_get_reports_but_no_remb() -> None:
    node = SfuNode(SfuConfig(forwarder=ForwarderConfig(adapt=False)))
    alice, bob = session("Alice"), session("Bob")
    try:
        for name, s in (("Alice", alice), ("Bob", bob)):
            await s.set_answer(await node.join(CONF, name, await s.create_offer()))
            s.start_receiving(lambda receiver, kid, frame: None)

        def sent() -> int:
            participants = node.stats()["conferences"][CONF]["participants"]
            return int(participants["Alice"]["feedback_sent"])

        await until(lambda: sent() >= 3, "three receiver reports to Alice", 30)
        assert alice.video_sender is not None and alice.video_sender.estimate_bps is None
        assert alice.stats()["video_bitrate"]["target_kbps"] == 300
    finally:
        await alice.close()
        await bob.close()
        await node.close()
