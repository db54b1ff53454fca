"""A real three-way mesh: a ``salon serve`` process and three ``salon call`` processes.

Every participant must decode the other two's video and audio, and the video must be the
right person's test pattern (its colour is derived from the sender's display name). All
three must show the same verification code while all three are in the call, and the
participant-held recording must hold a tile per remote participant.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import av
import pytest
from call_helpers import CallProcess, Town, calls, make_town

from client.call.media import colour_distance, dominant_colour, name_colour

SAME_COLOUR = 40.0  # VP8 and yuv420p move colours a little
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def town(server: Any, module_user: Any) -> Town:
    return make_town(server.url, module_user)


async def test_three_way_mesh_decodes_everyone(town: Town, tmp_path: Path) -> None:
    town["Alice"].run("room", "create", town.space, "hall", "--kind", "conference")
    names = ("Alice", "Bob", "Carol")
    recording = tmp_path / "alice.webm"
    async with calls() as running:
        for name in names:
            extra = ("--record", str(recording)) if name == "Alice" else ()
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "hall", stats, 9, *extra)
            )
        for call in running:
            await call.wait_for(r"verification code .* \(3 in the call")
        results = {name: await call.finish() for name, call in zip(names, running, strict=True)}

    for name, result in results.items():
        assert result.returncode == 0, result.stderr
        stats = result.stats
        assert stats["topology"] == "mesh" and stats["e2ee"] is True
        assert stats["ended_reason"] == "duration"
        assert stats["rejected_actions"] == 0 and stats["rejected_signals"] == 0
        others = [n for n in names if n != name]
        assert sorted(p["display_name"] for p in stats["participants"]) == others
        for other in others:
            peer = result.peer(other)
            assert peer["video_frames_decoded"] > 20, (name, peer)
            assert peer["audio_frames_decoded"] > 50, (name, peer)
            assert peer["decrypt_failures"] == 0
            assert peer["first_video_frame_ms"] is not None
            # What our camera's encoder aims at towards them (aiortc's, following their REMB).
            assert peer["video_send"]["target_kbps"] is not None, (name, peer)
            colour = tuple(peer["dominant_colour"])
            assert colour_distance(colour, name_colour(other)) < SAME_COLOUR, (name, other)
            for third in set(names) - {other}:
                assert colour_distance(colour, name_colour(third)) > 3 * SAME_COLOUR
    # Everyone showed the code of the full call, and it is the same code for all three.
    codes = [set(r.stats["verification_codes"]) for r in results.values()]
    assert set.intersection(*codes), codes
    full = [
        next(c for c in r.stats["verification_codes"] if all(c in o for o in codes))
        for r in results.values()
    ]
    assert len(set(full)) == 1

    # Alice's recording: a grid with Bob and Carol side by side.
    with av.open(str(recording)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) > 30
    late = frames[len(frames) * 2 // 3][180:300]  # the middle band of both tiles
    tiles = {dominant_colour(late[:, :320]), dominant_colour(late[:, 320:])}
    for name in ("Bob", "Carol"):
        assert any(colour_distance(t, name_colour(name)) < SAME_COLOUR for t in tiles), tiles


def test_codes_differ_between_names() -> None:
    """Sanity of the content check itself: the cast's colours are far apart."""
    for a, b in itertools.combinations(("Alice", "Bob", "Carol", "Dave"), 2):
        assert colour_distance(name_colour(a), name_colour(b)) > 3 * SAME_COLOUR


def test_a_firefox_mdns_connection_line_is_made_plain() -> None:
    """Firefox writes its default candidate, an mDNS name when it hides its addresses, into
    ``c=``; aiortc takes it but fails on ``pc.remoteDescription`` later: made 0.0.0.0."""
    from client.call.mesh import plain_connection_lines

    sdp = "v=0\r\nc=IN IP4 f691ced2-44bd-44dc-9b7e-f314ca46c92b.local\r\nc=IN IP4 10.0.0.1\r\n"
    sdp += "c=IN IP6 ab-cd.local\r\na=candidate:0 1 UDP 1 f691ced2.local 5000 typ host\r\n"
    assert plain_connection_lines(sdp) == (
        "v=0\r\nc=IN IP4 0.0.0.0\r\nc=IN IP4 10.0.0.1\r\nc=IN IP6 ::\r\n"
        "a=candidate:0 1 UDP 1 f691ced2.local 5000 typ host\r\n"
    )
