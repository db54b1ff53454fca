"""When a sender starts using its next media key on the SFU (PROTOCOL.md §15.5).

On a join every sender ratchets its key and seals the new one to the joiner; on a leave every
sender makes a fresh one and seals it to those who remain. A receiver holds frames under a key
it does not have yet for one second only, so a sender that encrypted under its new key at once
made every receiver whose key came later than that (a busy page, a slow relay) count its
frames as decrypt failures (issue 10: a late-joining CLI and the pages' keys). Now a sender
switches once the server has taken its new key for every recipient (bounded), and a
newcomer connects its media once those in the call before it have sealed it their keys.

The server here is the real app in the test's loop, with a relay that takes two seconds to
pass on anything addressed to Bob — slower than the one-second hold, as a loaded machine can
be. Alice and Bob (and Carol) are real ``salon call`` processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import msgspec
import pytest
from call_helpers import CallProcess, CallResult, amake_town, calls

from protocol.conference_wire import SendCallSignal
from rtc import aiortc_adapter
from spaces.services import ROUTES

pytestmark = pytest.mark.timeout(150)
RELAY_DELAY = 2.5  # longer than the one-second hold receivers had (now HOLD_SECONDS, 3 s)


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


def slow_relay_to(srv: Any, slow: set[bytes]) -> None:
    """Signals to the members in ``slow`` reach them (and the sender's "done") late."""
    relay = srv.app[ROUTES][SendCallSignal]

    async def slow_relay(caller: Any, message: SendCallSignal) -> msgspec.Struct:
        if message.to in slow:
            await asyncio.sleep(RELAY_DELAY)
        return await relay(caller, message)

    srv.app[ROUTES][SendCallSignal] = slow_relay


def clean(result: CallResult, others: tuple[str, ...]) -> None:
    assert result.returncode == 0, result.stderr
    sfu = result.stats["sfu"]
    assert sfu["unattributed_decrypt_failures"] == 0, sfu
    for other in others:
        peer = result.peer(other)
        assert peer["video_frames_decoded"] > 0 and peer["audio_frames_decoded"] > 0, peer
        assert peer["decrypt_failures"] == 0, (other, peer, sfu)


async def test_a_late_joiner_reads_every_frame_although_its_keys_come_slowly(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    await town["Alice"].arun(
        "room", "create", town.space, "hall", "--kind", "conference", "--topology", "sfu"
    )
    slow_relay_to(srv, {town.member_key("Bob")})
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 60)
        running.append(alice)
        await alice.wait_for("topology sfu")
        await asyncio.sleep(1)  # Alice is sending (alone) under her first key
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 60)
        running.append(bob)
        await bob.wait_for(r"verification code .* \(2 in the call", 30)
        await bob.wait_for("first video from Alice", 30)
        await asyncio.sleep(3)
        bob_result = await bob.stop()
        alice_result = await alice.stop()

    clean(bob_result, ("Alice",))
    clean(alice_result, ("Bob",))
    (change,) = [c for c in alice_result.stats["key_changes"] if c["kind"] == "join"]
    # Alice kept her first key until the server had taken her ratcheted one for Bob.
    assert change["sending_at"] - change["seen_at"] >= RELAY_DELAY - 0.2, change


async def test_a_rekey_on_leave_reaches_a_slow_receiver_before_any_frame_under_it(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    await town["Alice"].arun(
        "room", "create", town.space, "hall", "--kind", "conference", "--topology", "sfu"
    )
    slow: set[bytes] = set()
    slow_relay_to(srv, slow)
    async with calls() as running:
        started = {}
        for name in ("Alice", "Bob", "Carol"):
            started[name] = await CallProcess.start(
                town[name], town.space, "hall", tmp_path / f"{name}.json", 60
            )
            running.append(started[name])
            await started[name].wait_for("topology sfu")
        for call in started.values():
            await call.wait_for(r"verification code .* \(3 in the call", 30)
        slow.add(town.member_key("Bob"))
        await started["Carol"].stop()
        for name in ("Alice", "Bob"):
            await started[name].wait_for(r"verification code .* \(2 in the call", 30)
        await asyncio.sleep(3)
        bob_result = await started["Bob"].stop()
        alice_result = await started["Alice"].stop()

    clean(bob_result, ("Alice",))
    clean(alice_result, ("Bob",))
    leave = next(c for c in alice_result.stats["key_changes"] if c["kind"] == "leave")  # Carol's
    # Alice sent nothing under either key until the server had taken her fresh one for Bob.
    assert leave["sending_at"] - leave["seen_at"] >= RELAY_DELAY - 0.2, leave
