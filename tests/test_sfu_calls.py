"""Calls through the SFU with real processes: a ``salon serve`` (SFU in-process) and
``salon call`` processes, every one its own aiortc peer on loopback.

- five participants all decode each other's video (the right person's test pattern) and
  audio through the SFU, end to end encrypted, with no decrypt failure;
- an auto room moves from a mesh to the SFU past ``mesh_max`` and back (hysteresis), while
  the media keeps flowing;
- a kick drops the participant and rekeys: with every key it ever held, the kicked
  participant decrypts none of the frames sent after it; a joiner decrypts none of the
  frames sent before it joined (keys and frames come from ``SALON_MEDIA_DEBUG_DIR``);
- a server without an SFU refuses a call that would outgrow the mesh, saying why.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, CallResult, Town, calls, make_town

from client.call.e2ee_media import MEDIA_SUITE
from client.call.media import colour_distance, name_colour
from client.call.sframe import SFrameError, decrypt

SAME_COLOUR = 40.0
SERVER_CONFIG = {"conference": {"mesh_max": 3, "mesh_return_max": 2}}
CAST = ("Alice", "Bob", "Carol", "Dave", "Erin")
pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def town(server: Any, module_user: Any) -> Town:
    return make_town(server.url, module_user, CAST[1:])


def room(town: Town, name: str, *flags: str) -> str:
    town["Alice"].run("room", "create", town.space, name, "--kind", "conference", *flags)
    return name


def check_decodes(result: CallResult, name: str, others: list[str], video: int = 15) -> None:
    """``name`` decoded every other's right picture and their audio, all of it decrypted."""
    for other in others:
        peer = result.peer(other)
        assert peer["video_frames_decoded"] > video, (name, other, peer)
        assert peer["audio_frames_decoded"] > 3 * video, (name, other, peer)
        assert peer["decrypt_failures"] == 0, (name, other, peer, result.stats["sfu"])
        colour = tuple(peer["dominant_colour"])
        assert colour_distance(colour, name_colour(other)) < SAME_COLOUR, (name, other, colour)


async def test_five_participants_decode_each_other_through_the_sfu(
    town: Town, tmp_path: Path
) -> None:
    hall = room(town, "hall", "--topology", "sfu")
    async with calls() as running:
        for name in CAST:
            stats = tmp_path / f"{name}.json"
            running.append(await CallProcess.start(town[name], town.space, hall, stats, 16))
        for call in running:
            await call.wait_for(r"verification code .* \(5 in the call", 40)
        results = {name: await call.finish(60) for name, call in zip(CAST, running, strict=True)}

    for name, result in results.items():
        assert result.returncode == 0, result.stderr
        stats = result.stats
        assert stats["topology"] == "sfu" and stats["e2ee"] is True, stats
        assert stats["topologies"] == ["sfu"]
        assert stats["sfu"]["unattributed_decrypt_failures"] == 0
        assert stats["rejected_actions"] == 0 and stats["rejected_signals"] == 0
        check_decodes(result, name, [n for n in CAST if n != name])
        assert any("encryption: end-to-end (SFrame" in line for line in result.stdout)
    # Everyone showed the same code while all five were in the call.
    full = [
        re.search(r"verification code ([\d ]+) \(5 in the call", "\n".join(r.stdout))
        for r in results.values()
    ]
    assert all(full) and len({m.group(1) for m in full if m}) == 1


async def test_auto_room_moves_to_the_sfu_and_back(town: Town, tmp_path: Path) -> None:
    """mesh_max 3, mesh_return_max 2: four people move the call to the SFU; three keep it
    there (hysteresis); two are back on a mesh. Alice and Bob see each other throughout."""
    lounge = room(town, "lounge")
    async with calls() as running:

        async def start(name: str, seconds: float) -> CallProcess:
            stats = tmp_path / f"{name}.json"
            call = await CallProcess.start(town[name], town.space, lounge, stats, seconds)
            running.append(call)
            return call

        alice, bob, carol = (
            await start("Alice", 60),
            await start("Bob", 60),
            await start("Carol", 60),
        )
        for call in (alice, bob, carol):
            await call.wait_for(r"verification code .* \(3 in the call")
        await alice.wait_for("first video from Bob")
        dave = await start("Dave", 60)
        await alice.wait_for("topology moved from mesh to sfu")
        for call in (alice, bob, carol, dave):
            await call.wait_for(r"verification code .* \(4 in the call", 40)
        await dave.wait_for("first video from Alice", 40)
        await asyncio.sleep(2)
        await dave.stop()
        await alice.wait_for(r"Dave \(\w+\) left", 20)
        await asyncio.sleep(2)  # three in the call: still on the SFU
        assert alice.index("topology moved from sfu to mesh") is None
        await carol.stop()
        await alice.wait_for("topology moved from sfu to mesh", 20)
        await bob.wait_for("topology moved from sfu to mesh", 20)
        mark = len(alice.lines)
        status = re.compile(r"status: .* mesh, .*Bob \(connected[^)]*?(\d+) video")
        found = None
        for _ in range(80):  # the next status line (every 5 s) after the move back
            found = next((m for line in alice.lines[mark:] if (m := status.search(line))), None)
            if found:
                break
            await asyncio.sleep(0.1)
        assert found, alice.lines[mark:]
        seen_on_mesh = int(found.group(1))
        await asyncio.sleep(2)
        host, other = await alice.stop(), await bob.stop()

    for result, name, peer in ((host, "Alice", "Bob"), (other, "Bob", "Alice")):
        assert result.returncode == 0, result.stderr
        assert result.stats["topologies"] == ["mesh", "sfu", "mesh"], result.stats["topologies"]
        assert result.stats["topology"] == "mesh" and result.stats["e2ee"] is True
        check_decodes(result, name, [peer], video=60)
    # After the move back, the mesh carried Bob's video to Alice: it kept coming.
    assert host.peer("Bob")["video_frames_decoded"] > seen_on_mesh + 15


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def readable(frame: dict[str, Any], keys: list[dict[str, Any]]) -> bool:
    """Can any of ``keys`` (base keys, as a participant kept them) decrypt this frame?"""
    metadata, data = bytes.fromhex(frame["metadata"]), bytes.fromhex(frame["data"])
    for key in keys:
        try:
            decrypt(MEDIA_SUITE, bytes.fromhex(key["key"]), metadata, data)
        except SFrameError:
            continue
        return True
    return False


async def test_kick_drops_and_rekeys_so_old_keys_read_nothing_newer(
    town: Town, tmp_path: Path
) -> None:
    """Carol is kicked, Dave joins later. With every key Carol kept she reads none of the
    frames Bob sent after the kick; with Dave's keys none from before Dave joined."""
    hall = room(town, "keyhall", "--topology", "sfu")
    debug = {name: tmp_path / f"debug-{name}" for name in ("Bob", "Carol", "Dave")}

    async def start(name: str, seconds: float) -> CallProcess:
        env = {"SALON_MEDIA_DEBUG_DIR": str(debug[name])} if name in debug else None
        stats = tmp_path / f"{name}.json"
        return await CallProcess.start(town[name], town.space, hall, stats, seconds, env=env)

    async with calls() as running:
        for name in ("Alice", "Bob", "Carol"):
            running.append(await start(name, 60))
        alice, bob, carol = running
        for call in running:
            await call.wait_for(r"verification code .* \(3 in the call")
        await bob.wait_for("first video from Carol")
        await carol.wait_for("first video from Bob")
        await asyncio.sleep(1)
        await town["Alice"].arun("mod", town.space, hall, "kick", "Carol")
        kicked = await carol.finish()
        for call in (alice, bob):
            await call.wait_for(r"verification code .* \(2 in the call")
        await asyncio.sleep(1)
        dave = await start("Dave", 60)
        running.append(dave)
        await dave.wait_for("first video from Bob")
        await asyncio.sleep(1.5)
        host, sender, joiner = await alice.stop(), await bob.stop(), await dave.stop()

    assert kicked.returncode == 5 and "removed you from the call" in kicked.stderr
    assert kicked.stats["ended_reason"] == "removed"
    # Rekeyed: Alice and Bob agree on a code Carol never saw; they decrypted everything.
    after_kick = [
        c for c in host.stats["verification_codes"] if c in sender.stats["verification_codes"]
    ]
    assert not set(after_kick[-2:]) & set(kicked.stats["verification_codes"])
    for result, name in ((host, "Alice"), (sender, "Bob"), (joiner, "Dave")):
        for peer in result.stats["participants"]:
            assert peer["decrypt_failures"] == 0, (name, peer)
    changes = sender.stats["key_changes"]
    leave = next(c for c in changes if c["kind"] == "leave")
    join = [c for c in changes if c["kind"] == "join"][-1]
    assert leave["keys_at"] - leave["seen_at"] < 1.0  # the rekey completed within a second

    frames = load_jsonl(debug["Bob"] / "frames.jsonl")
    carol_keys = load_jsonl(debug["Carol"] / "keys.jsonl")
    dave_keys = load_jsonl(debug["Dave"] / "keys.jsonl")
    assert carol_keys and dave_keys
    while_in = [f for f in frames if f["t"] < leave["seen_at"]]
    after = [f for f in frames if f["t"] > leave["seen_at"]]
    before_dave = [f for f in frames if f["t"] < join["seen_at"]]
    with_dave = [f for f in frames if f["t"] > join["seen_at"] + 0.5]
    assert len(after) > 20 and len(before_dave) > 20 and len(with_dave) > 10
    assert any(readable(f, carol_keys) for f in while_in)  # the check can succeed
    assert not any(readable(f, carol_keys) for f in after)
    assert not any(readable(f, dave_keys) for f in before_dave)
    assert all(readable(f, dave_keys) for f in with_dave)
