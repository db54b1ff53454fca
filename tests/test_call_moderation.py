"""Moderation with real processes: lobby, mute, hands, kick, ban, lock, end, stage.

Alice owns the space (a host); Bob and Carol are members (participants). Every call is a
real ``salon call`` process; moderation is ``salon mod`` / ``salon hand`` from other
processes, as a person would run them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, Town, calls, code_for, make_town

STORAGE_ENGINES = ("sqlite", "postgresql")  # the server fixtures run on each (conftest.py)

pytestmark = pytest.mark.timeout(150)
CONNECTED_2 = r"verification code .* \(2 in the call"
CONNECTED_3 = r"verification code .* \(3 in the call"


@pytest.fixture(scope="module")
def town(server: Any, module_user: Any) -> Town:
    return make_town(server.url, module_user)


def conference(town: Town, name: str, *flags: str) -> str:
    town["Alice"].run("room", "create", town.space, name, "--kind", "conference", *flags)
    return name


async def mod(town: Town, who: str, room: str, *args: str) -> None:
    await town[who].arun("mod", town.space, room, *args)


async def test_lobby_admit_and_deny(town: Town, tmp_path: Path) -> None:
    room = conference(town, "lobby-room", "--lobby")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, room, tmp_path / "a.json", 30)
        running.append(alice)
        await alice.wait_for("topology mesh")
        bob = await CallProcess.start(town["Bob"], town.space, room, tmp_path / "b.json", 30)
        running.append(bob)
        await bob.wait_for("waiting in the lobby until a host admits you")
        await alice.wait_for(r"Bob \(\w+\) is waiting in the lobby; admit with: salon mod")
        await asyncio.sleep(1.5)  # in the lobby a while: nothing may reach Bob meanwhile
        await mod(town, "Alice", room, "admit", "Bob")
        await bob.wait_for(CONNECTED_2)
        carol = await CallProcess.start(town["Carol"], town.space, room, tmp_path / "c.json", 20)
        running.append(carol)
        await alice.wait_for(r"Carol \(\w+\) is waiting in the lobby")
        await mod(town, "Alice", room, "deny", "Carol")
        denied = await carol.finish()
        await bob.wait_for("first video from Alice")
        await asyncio.sleep(1)
        admitted = await bob.stop()
        await alice.stop()

    # Bob: no keys, no connection, no media before the admission; all of it after.
    admission = bob.index("Alice .* admitted you")
    assert admission is not None
    for secret_stuff in ("verification code", "connected to", "first video"):
        seen = bob.index(secret_stuff)
        assert seen is not None and seen > admission, (secret_stuff, admitted.stdout)
    assert admitted.returncode == 0 and admitted.stats["self"]["admitted"] is True
    assert admitted.peer("Alice")["video_frames_decoded"] > 10
    # Carol was turned away: one clear line, non-zero exit, ended_reason "denied".
    assert denied.returncode == 5
    assert denied.stderr.strip().splitlines() == [
        next(line for line in denied.stderr.splitlines() if line.startswith("error:"))
    ]
    assert "denied your request to join" in denied.stderr
    assert denied.stats["ended_reason"] == "denied"
    assert denied.stats["participants"] == [] and denied.stats["verification_codes"] == []


async def test_mute_hand_kick_and_ban(town: Town, tmp_path: Path) -> None:
    room = conference(town, "moderated")
    async with calls() as running:
        people = {}
        for name, seconds in (("Alice", 30), ("Bob", 30), ("Carol", 30)):
            stats = tmp_path / f"{name}.json"
            people[name] = await CallProcess.start(town[name], town.space, room, stats, seconds)
            running.append(people[name])
        alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]
        for call in running:
            await call.wait_for(CONNECTED_3)
        await asyncio.sleep(1)
        await mod(town, "Alice", room, "mute", "Bob")
        await bob.wait_for("muted you: your audio is no longer sent")
        await carol.wait_for(r"Alice \(\w+\) muted Bob")
        await asyncio.sleep(2.5)  # Bob stays muted a while: peers must receive nothing from him
        await town["Carol"].arun("hand", town.space, room, "up")
        await alice.wait_for(r"Carol \(\w+\) raised a hand")
        # A participant cannot moderate.
        refused = await town["Bob"].afail("mod", town.space, room, "kick", "Carol")
        assert "only the space's owners and moderators" in refused
        await mod(town, "Alice", room, "kick", "Carol")
        kicked = await carol.finish()
        await alice.wait_for(r"verification code .* \(2 in the call")  # rekeyed without Carol
        await mod(town, "Alice", room, "unmute", "Bob")
        await bob.wait_for("asks you to unmute")
        # Banned: a later attempt is refused at once with a clear error.
        await mod(town, "Alice", room, "ban", "Carol")
        again = await CallProcess.start(town["Carol"], town.space, room, tmp_path / "c2.json", 5)
        running.append(again)
        refused_again = await again.finish()
        await asyncio.sleep(1)  # some unmuted audio from Bob again
        host, muted = await alice.stop(), await bob.stop()

    assert kicked.returncode == 5
    assert kicked.stderr.startswith("error: Alice") and "removed you from the call" in kicked.stderr
    assert len(kicked.stderr.strip().splitlines()) == 1
    assert kicked.stats["ended_reason"] == "removed"
    assert refused_again.returncode == 5 and "banned you from this call" in refused_again.stderr
    assert refused_again.stats["ended_reason"] == "denied"
    # Everyone saw the mute; while muted, nothing of Bob's audio arrived or was played.
    assert kicked.peer("Bob")["muted"] is True
    for result in (host, kicked):
        bob_seen = result.peer("Bob")
        assert bob_seen["audio_frames_decoded"] > 50  # before the mute and after the unmute
        assert bob_seen["audio_frames_dropped"] < 25, bob_seen  # at most what was in flight
    assert host.peer("Bob")["muted"] is False  # unmuted at the end
    assert host.peer("Carol")["hand_raised"] is True
    assert muted.stats["self"]["muted"] is False
    # After the kick, Alice and Bob moved to a new code that Carol never saw.
    codes = [code_for(result, 2) for result in (host, muted)]
    assert codes[0] == codes[1] and codes[0] in host.stats["verification_codes"]
    assert codes[0] not in kicked.stats["verification_codes"]


async def test_lock_and_end(town: Town, tmp_path: Path) -> None:
    room = conference(town, "lockable")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, room, tmp_path / "a.json", 30)
        running.append(alice)
        await alice.wait_for("topology mesh")
        await mod(town, "Alice", room, "lock")
        locked_out = await CallProcess.start(town["Bob"], town.space, room, tmp_path / "b1.json")
        running.append(locked_out)
        refused = await locked_out.finish()
        await mod(town, "Alice", room, "unlock")
        bob = await CallProcess.start(town["Bob"], town.space, room, tmp_path / "b2.json", 30)
        running.append(bob)
        await bob.wait_for(CONNECTED_2)
        await mod(town, "Alice", room, "end")
        ended, host = await bob.finish(), await alice.finish()

    assert refused.returncode == 5 and "locked" in refused.stderr
    assert refused.stats["ended_reason"] == "denied"
    assert ended.returncode == 0 and ended.stats["ended_reason"] == "ended"
    assert any("Alice" in line and "ended the call for everyone" in line for line in ended.stdout)
    assert host.returncode == 0 and host.stats["ended_reason"] == "ended"


async def test_stage_listener_is_promoted(town: Town, tmp_path: Path) -> None:
    room = conference(town, "stage", "--stage")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, room, tmp_path / "a.json", 30)
        bob = await CallProcess.start(town["Bob"], town.space, room, tmp_path / "b.json", 30)
        running += [alice, bob]
        await bob.wait_for("stage: only speakers send")
        await alice.wait_for(CONNECTED_2)
        await bob.wait_for("first video from Alice")  # a listener receives the speakers
        await town["Bob"].arun("hand", town.space, room, "up")
        await alice.wait_for(r"Bob \(\w+\) raised a hand")
        await asyncio.sleep(1)
        assert alice.index("first video from Bob") is None  # listeners send nothing
        await mod(town, "Alice", room, "promote", "Bob")
        await bob.wait_for("you are a speaker now")
        await alice.wait_for("first video from Bob")
        await asyncio.sleep(1.5)
        host, speaker = await alice.stop(), await bob.stop()

    promoted = host.peer("Bob")
    assert promoted["role"] == "speaker" and promoted["video_frames_decoded"] > 10
    assert promoted["video_frames_dropped"] == 0  # as a listener Bob sent nothing at all
    assert speaker.stats["self"]["role"] == "speaker"
    assert speaker.peer("Alice")["role"] == "host"
    assert host.stats["topology"] == "sfu"  # a stage always runs on the SFU


def test_call_mistakes_are_one_line_errors(town: Town, tmp_path: Path) -> None:
    room = conference(town, "errors")
    town["Alice"].run("room", "create", town.space, "chatter", "--kind", "chat")
    alice, bob = town["Alice"], town["Bob"]
    env = {"SALON_ICE_HOSTS": "127.0.0.1"}
    assert alice.fail("call", town.space, room, "--video", "camera:7", env=env) == (
        "error: no camera at index 7"
    )
    assert "unknown video source 'tset'" in alice.fail("call", town.space, room, "--video", "tset")
    assert "cannot record to .avi" in alice.fail(
        "call", town.space, room, "--record", str(tmp_path / "x.avi")
    )
    assert "positive number of seconds" in alice.fail("call", town.space, room, "--duration", "-3")
    assert "is a chat room, not a conference" in alice.fail("call", town.space, "chatter")
    assert "'mute' needs a MEMBER" in alice.fail("mod", town.space, room, "mute")
    assert "'lock' takes no MEMBER" in alice.fail("mod", town.space, room, "lock", "Bob")
    assert "nobody is in the call" in alice.fail("mod", town.space, room, "kick", "Bob")
    assert "you are not in the call" in bob.fail("hand", town.space, room, "up")
    assert "invalid choice" in alice.fail("mod", town.space, room, "explode")
