"""Simulcast offers on the SFU (protocol/sfu_sdp.py, sfu/node.py): real Chromium 156 and Firefox
153 offers (tests/data/*_simulcast_offer.sdp: camera as q/h/f with RTX; Chromium lists no SSRC
for it, Firefox lists each layer's) are read,
accepted by the node with real aiortc, and answered so that Chromium keeps every layer; offers
the SFU cannot forward are refused in plain words; offers without simulcast are unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.sfu_sdp import (
    REPAIRED_RID_URI,
    RID_URI,
    Simulcast,
    SimulcastError,
    answer_simulcast,
    simulcast_sections,
)
from rtc import aiortc_adapter
from sfu.errors import InvalidOffer
from sfu.node import SfuNode

OFFER = (Path(__file__).parent / "data" / "chromium156_simulcast_offer.sdp").read_bytes().decode()
CAMERA = Simulcast("0", ("q", "h", "f"), 10, 11)


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


def section(sdp: str, mid: str) -> list[str]:
    for part in sdp.split("\r\nm=")[1:]:
        lines = [line for line in part.split("\r\n") if line]
        if f"a=mid:{mid}" in lines:
            return lines
    raise AssertionError(f"no section {mid}")


def test_chromium_offer_is_read() -> None:
    assert simulcast_sections(OFFER) == {"0": CAMERA}


def test_offers_without_simulcast_have_none_and_answers_stay() -> None:
    plain = "\r\n".join(
        line for line in OFFER.split("\r\n") if not line.startswith(("a=rid:", "a=simulcast:"))
    )
    assert simulcast_sections(plain) == {}
    assert answer_simulcast(plain, {}) == plain


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;x\r\na=rid:x send"), "more than 3"),
        (("q;h;f", "q;h;~f"), "not 1-16 letters"),
        (("q;h;f", "q;h,f"), "not 1-16 letters"),
        (("a=simulcast:send q;h;f", "a=simulcast:recv q;h;f"), "only 'a=simulcast:send"),
        (("a=rid:f send", "a=rid:f recv"), "a=rid must be"),
        (("a=rid:f send", "a=rid:g send"), "name different layers"),
        (("a=rid:f send", "a=rid:f send\r\na=rid:f send"), "declared twice"),
        (("q;h;f", "q;h;q"), "listed twice"),
        (("a=simulcast:send q;h;f", ""), "no a=simulcast"),
        ((RID_URI, "urn:x"), "without the rtp-stream-id extension"),
    ],
)
def test_bad_simulcast_is_refused(change: tuple[str, str], why: str) -> None:
    with pytest.raises(SimulcastError, match=why):
        simulcast_sections(OFFER.replace(*change, 1))


SIMULCAST_LINES = [
    i for i, line in enumerate(OFFER.split("\r\n")) if line.startswith(("a=rid", "a=sim", "a=ext"))
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SIMULCAST_LINES), st.text(max_size=30), st.booleans()),
        max_size=4,
    )
)
def test_any_mangled_simulcast_is_read_or_refused_plainly(ops: list[tuple[int, str, bool]]) -> None:
    lines = OFFER.split("\r\n")
    for index, text, replace in ops:
        lines[index] = text if replace else lines[index] + text
    try:
        found = simulcast_sections("\r\n".join(lines))
    except SimulcastError:
        return
    for sim in found.values():
        assert 1 <= len(sim.rids) <= 3 and all(r.isalnum() and len(r) <= 16 for r in sim.rids)


def test_long_and_odd_rids_are_refused() -> None:
    long = "a" * 17
    offer = OFFER.replace("a=rid:f send", f"a=rid:{long} send").replace("q;h;f", f"q;h;{long}")
    with pytest.raises(SimulcastError, match="not 1-16 letters"):
        simulcast_sections(offer)
    ok = OFFER.replace("a=rid:f send", "a=rid:F16 send").replace("q;h;f", "q;h;F16")
    assert simulcast_sections(ok)["0"].rids == ("q", "h", "F16")


def test_answer_gets_the_receive_side_with_the_offered_ids() -> None:
    answer = answer_simulcast("v=0\r\nm=video 9 x 96\r\na=mid:0\r\na=recvonly\r\n", {"0": CAMERA})
    assert section(answer, "0")[-6:] == [
        f"a=extmap:10 {RID_URI}",
        f"a=extmap:11 {REPAIRED_RID_URI}",
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]


FIREFOX = (Path(__file__).parent / "data" / "firefox153_simulcast_offer.sdp").read_bytes().decode()


@pytest.mark.parametrize(
    ("offer", "ids", "vp8", "audio_ssrc"),
    [(OFFER, (10, 11), 96, 4244832253), (FIREFOX, (9, 10), 120, 228997058)],
    ids=["chromium156", "firefox153"],
)
async def test_node_accepts_and_answers_a_browser_simulcast_offer(
    offer: str, ids: tuple[int, int], vp8: int, audio_ssrc: int
) -> None:
    node = SfuNode()
    try:
        answer = await node.join("conf", "page", offer, sender_index=1)
        camera = section(answer, "0")
        assert "a=recvonly" in camera
        assert f"a=extmap:{ids[0]} {RID_URI}" in camera
        assert f"a=extmap:{ids[1]} {REPAIRED_RID_URI}" in camera
        assert [line for line in camera if line.startswith("a=rid:")] == [
            "a=rid:q recv",
            "a=rid:h recv",
            "a=rid:f recv",
        ]
        assert "a=simulcast:recv q;h;f" in camera
        assert not any(line.startswith(("a=rid:", "a=simulcast:")) for line in section(answer, "1"))
        peer = node._peer("conf", "page")
        spec = next(t for t in peer.uptracks if t.kind == "video")
        # SSRC 0 also where the offer lists the layers' SSRCs (Firefox): learned from RIDs.
        assert (spec.ssrc, spec.rids, spec.rid_ext_id, spec.repaired_rid_ext_id) == (
            0,
            ("q", "h", "f"),
            *ids,
        )
        assert spec.rtx_payload_type is not None and spec.rtx_apt == vp8
        assert spec.rtx_ssrc is None
        audio = next(t for t in peer.uptracks if t.kind == "audio")
        assert audio.rids == () and audio.ssrc == audio_ssrc
        # RTCP for any layer (a PLI, a NACK) goes through the camera's receiver.
        assert peer.receiver(123456) is peer.receiver(0) is not peer.receiver(audio_ssrc)
    finally:
        await node.close()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            (
                "a=simulcast:send q;h;f",
                "a=simulcast:send q;h;f;x;y\r\na=rid:x send\r\na=rid:y send",
            ),
            "more than 3 simulcast layers",
        ),
        (("a=mid:0\r\n", "a=mid:0\r\na=content:slides\r\n"), "only the published camera"),
        (("a=sendonly\r\na=msid:- fd7d", "a=recvonly\r\na=msid:- fd7d"), "publishes nothing"),
    ],
)
async def test_node_refuses_bad_simulcast_offers(change: tuple[str, str], why: str) -> None:
    offer = OFFER.replace(*change, 1)
    assert offer != OFFER
    node = SfuNode()
    try:
        with pytest.raises(InvalidOffer, match=why):
            await node.join("conf", "page", offer, sender_index=1)
        assert node.participants("conf") == []
    finally:
        await node.close()
