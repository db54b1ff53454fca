"""Screen share, with real processes: ``salon call --screen test``, on the SFU and in a mesh.

Alice shares a test screen (a pattern in the complement of her camera colour) besides her
camera and microphone; Bob and Carol decode it on screen slots of their own, SFrame-decrypted
under Alice's key, with no decrypt failure, each in its own ``screen`` entry of ``--stats``
(and Bob's ``--record`` has a tile for it) — while the cameras still arrive as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from call_helpers import CallProcess, Town, calls, make_town

from client.call.media import colour_distance, name_colour, screen_colour

pytestmark = pytest.mark.timeout(150)
SAME_COLOUR = 40.0


@pytest.fixture(scope="module")
def town(server: Any, module_user: Any) -> Town:
    return make_town(server.url, module_user, ("Bob", "Carol"))


async def test_a_shared_screen_reaches_everyone_through_the_sfu(town: Town, tmp_path: Path) -> None:
    town["Alice"].run(
        "room", "create", town.space, "demo", "--kind", "conference", "--topology", "sfu"
    )
    record = tmp_path / "bob.webm"
    extra = {"Alice": ("--screen", "test"), "Bob": ("--record", str(record)), "Carol": ()}
    async with calls() as running:
        for name, args in extra.items():
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "demo", stats, 14, *args)
            )
        for call in running[1:]:
            await call.wait_for(r"Alice .* is sharing a screen", 40)
        results = dict(zip(extra, [await call.finish(60) for call in running], strict=True))

    for name in ("Bob", "Carol"):
        result = results[name]
        assert result.returncode == 0, result.stderr
        alice = result.peer("Alice")
        screen = alice["screen"]
        assert screen["frames_decoded"] > 10, (name, screen, result.stats.get("sfu"))
        assert screen["decrypt_failures"] == 0, (name, screen)
        colour = tuple(screen["dominant_colour"])
        assert colour_distance(colour, screen_colour("Alice")) < SAME_COLOUR, (name, colour)
        # The camera still arrives, as the camera (not the screen).
        assert alice["video_frames_decoded"] > 15, (name, alice)
        camera = tuple(alice["dominant_colour"])
        assert colour_distance(camera, name_colour("Alice")) < SAME_COLOUR, (name, camera)
        assert alice["decrypt_failures"] == 0
        # Nobody else shared a screen.
        other = "Carol" if name == "Bob" else "Bob"
        assert result.peer(other)["screen"]["frames_received"] == 0
    assert results["Alice"].peer("Bob")["screen"]["frames_received"] == 0
    # Bob's recording holds a tile for Alice's screen: a frame whose colour is mostly there.
    with av.open(str(record)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert frames
    last = frames[-1]
    target = screen_colour("Alice")
    close = (abs(last.astype(int) - target).sum(axis=2) < 60).mean()
    assert close > 0.05, close


async def test_a_shared_screen_reaches_the_other_side_of_a_mesh(town: Town, tmp_path: Path) -> None:
    town["Alice"].run(
        "room", "create", town.space, "pair", "--kind", "conference", "--topology", "mesh"
    )
    extra = {"Alice": ("--screen", "test"), "Bob": ()}
    async with calls() as running:
        for name, args in extra.items():
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "pair", stats, 10, *args)
            )
        await running[1].wait_for(r"Alice .* is sharing a screen", 40)
        bob, alice = [await call.finish(60) for call in running[::-1]]
    assert bob.stats["topology"] == "mesh" and bob.returncode == 0, bob.stderr
    screen = bob.peer("Alice")["screen"]
    assert screen["frames_decoded"] > 5, screen
    colour = tuple(screen["dominant_colour"])
    assert colour_distance(colour, screen_colour("Alice")) < SAME_COLOUR, colour
    camera = tuple(bob.peer("Alice")["dominant_colour"])
    assert colour_distance(camera, name_colour("Alice")) < SAME_COLOUR, camera
    assert alice.peer("Bob")["screen"]["frames_received"] == 0


def test_screen_sections_are_marked_and_read_back() -> None:
    from protocol.sfu_sdp import SCREEN_CONTENT, mark_screen_sections, screen_mids

    video, audio = "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111"
    sdp = "\r\n".join(["v=0", video, "a=mid:0", audio, "a=mid:1", video, "a=mid:2", ""])
    marked = mark_screen_sections(sdp, ["2", "1"])
    assert marked.count(SCREEN_CONTENT) == 2 and "\r\n" in marked
    assert screen_mids(marked) == {"2"}  # an audio section is never a screen
    assert screen_mids(sdp) == set()


@pytest.mark.usefixtures("loopback_ice")
async def test_the_node_reads_the_screen_sections_and_refuses_two_published_screens() -> None:
    from client.call.e2ee_media import MEDIA_SUITE, SfuSession
    from client.call.media import TestPatternTrack
    from client.call.sframe import KeyUsage, SFrameContext
    from protocol.media_keys import media_kid
    from protocol.sfu_sdp import SCREEN_CONTENT
    from sfu.errors import InvalidOffer
    from sfu.node import SfuNode

    kid = media_kid(1, 0)
    send = SFrameContext(MEDIA_SUITE)
    send.add_key(kid, bytes(32), usage=KeyUsage.ENCRYPT)
    camera, screen = TestPatternTrack("A"), TestPatternTrack("A screen")
    session = SfuSession(
        recv_ctx=SFrameContext(MEDIA_SUITE),
        send_ctx=send,
        send_kid=kid,
        video=camera,
        screen=screen,
        video_slots=1,
        audio_slots=1,
        screen_slots=1,
    )
    node = SfuNode()
    try:
        offer = await session.create_offer()
        assert offer.count(SCREEN_CONTENT) == 2  # the published screen and the screen slot
        # Mark the camera as a screen too: two published screens.
        camera_mid = offer.split("a=mid:")[1].split("\r\n")[0]
        doubled = offer.replace(
            f"a=mid:{camera_mid}\r\n", f"a=mid:{camera_mid}\r\n{SCREEN_CONTENT}\r\n", 1
        )
        with pytest.raises(InvalidOffer, match="more than one published screen"):
            await node.join("conference", "p1", doubled)
        await node.join("conference", "p1", offer, sender_index=1)
        peer = node._conferences["conference"].peers["p1"]
        assert sorted(u.kind for u in peer.uptracks) == ["screen", "video"]
        assert sorted(d.kind for d in peer.downtracks) == ["audio", "screen", "video"]
    finally:
        await session.close()
        await node.close()
        camera.stop()
        screen.stop()
