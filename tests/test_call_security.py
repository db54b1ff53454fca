"""A malicious server: it forges moderator events and tampers with relayed SDP.

The server here is the real spaces app running in the test's event loop (``app_server``);
the test then makes it misbehave the way a compromised operator could — pushing its own
events to a participant, or altering the sealed boxes it relays — while the participants
are real ``salon call`` processes. They must ignore the forgeries and refuse to connect
over tampered signalling (fail closed), and they must say so.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from call_helpers import CallProcess, amake_town, calls, code_for, first_line

from client.core import crypto
from protocol.conference_wire import CallAction, CallUpdate, SendCallSignal, action_signing_bytes
from protocol.wire import encoder
from spaces.handlers.conference import CONFERENCES
from spaces.services import ROUTES, Caller

pytestmark = pytest.mark.timeout(120)


def forged_mute(call_id: str, space: str, room: str, actor: bytes, target: bytes, seed: bytes):
    unsigned = CallAction(
        space,
        room,
        call_id,
        actor,
        "mute",
        target,
        int(time.time() * 1000),
        secrets.token_bytes(16),
    )
    return msgspec.structs.replace(unsigned, sig=crypto.sign(seed, action_signing_bytes(unsigned)))


async def test_forged_mute_from_the_server_is_ignored(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user)
    await town["Alice"].arun("room", "create", town.space, "hall", "--kind", "conference")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 30)
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 30)
        running += [alice, bob]
        await bob.wait_for(r"verification code .* \(2 in the call")
        await alice.wait_for("first video from Bob")

        # The server pushes "Alice muted Bob" events Alice never signed.
        conferences = srv.app[CONFERENCES]
        ((key, sessions),) = conferences._sessions.items()
        conference = conferences.call(key)
        assert conference is not None
        alice_key, bob_key = town.member_key("Alice"), town.member_key("Bob")
        stranger = crypto.random_key()
        forgeries = [
            # signed by a key that is no member at all
            forged_mute(
                conference.call_id, *key, crypto.public_signing_key(stranger), bob_key, stranger
            ),
            # claims to be Alice (a host), signed by someone else
            forged_mute(conference.call_id, *key, alice_key, bob_key, stranger),
            # Alice's real signature, from another call of this room (a replay)
            forged_mute("an-earlier-call", *key, alice_key, bob_key, town.signing_seed("Alice")),
        ]
        _, roster = await conferences.conference(*key)
        roles = {k: m.role for k, m in roster.members.items()}
        for forged in forgeries:
            state = conference.state_for(bob_key, roles)
            seats = [
                msgspec.structs.replace(p, mute=forged) if p.member == bob_key else p
                for p in state.participants
            ]
            event = CallUpdate(msgspec.structs.replace(state, participants=seats), forged)
            sessions[bob_key].push(encoder.encode(event))
        await bob.wait_for("ignored an unverifiable 'mute' event: its signer is not a member")
        await bob.wait_for("ignored an unverifiable 'mute' event: its signature does not verify")
        await bob.wait_for("ignored an unverifiable 'mute' event: it belongs to another call")
        await asyncio.sleep(3)  # Bob's audio must keep flowing after the forgeries
        host, target = await alice.stop(), await bob.stop()

    assert target.returncode == 0 and host.returncode == 0
    assert target.stats["self"]["muted"] is False
    assert target.stats["rejected_actions"] >= 3
    assert not any("muted you" in line for line in target.stdout)
    # Bob kept sending audio the whole call: Alice heard as much of him as he heard of her.
    heard_bob, heard_alice = host.peer("Bob"), target.peer("Alice")
    assert heard_bob["muted"] is False and heard_bob["audio_frames_dropped"] == 0
    assert heard_bob["audio_frames_decoded"] > 0.8 * heard_alice["audio_frames_decoded"]


async def test_tampered_sdp_fails_closed(app_server: Any, user: Any, tmp_path: Path) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user)
    await town["Alice"].arun("room", "create", town.space, "hall", "--kind", "conference")
    relay = srv.app[ROUTES][SendCallSignal]
    tampered: list[int] = []

    async def tampering_relay(caller: Caller, message: SendCallSignal) -> msgspec.Struct:
        # Offers and answers (the large boxes: they carry the SDP and its DTLS fingerprint)
        # get one bit flipped; media keys pass, so the call still shows its code.
        if len(message.box) > 1000:
            box = bytearray(message.box)
            box[len(box) // 2] ^= 0x04
            message = msgspec.structs.replace(message, box=bytes(box))
            tampered.append(len(box))
        return await relay(caller, message)

    srv.app[ROUTES][SendCallSignal] = tampering_relay
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 30)
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 30)
        running += [alice, bob]
        # Whoever answers sees the tampered offer, and refuses it.
        refusal = r"refused signalling from .*: its sealed box does not open .* altered or forged"
        await first_line([alice, bob], refusal)
        await asyncio.sleep(1)
        results = [await alice.stop(), await bob.stop()]

    assert tampered, "the test server never relayed an SDP box"
    assert sum(r.stats["rejected_signals"] for r in results) >= 1
    for result in results:
        assert result.returncode == 0
        assert result.stats["e2ee"] is True
        (peer,) = result.stats["participants"]
        assert peer["video_frames_decoded"] == 0 and peer["audio_frames_decoded"] == 0
        assert peer["connection"] in ("refused", "failed", "connecting", "waiting"), peer
        assert peer["connection"] != "connected"
        assert not any(line.startswith("connected to") for line in result.stdout)
    # The media keys were not touched, so both still agree on the code: the refusal is
    # about the altered SDP alone.
    assert code_for(results[0], 2) == code_for(results[1], 2)
