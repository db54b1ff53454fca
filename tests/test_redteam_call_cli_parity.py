"""Red team on the CLI's call client: two checks the page has had since its red-team pass
(call.ts knockProblem, PENDING_PER_SENDER), now in ``client.call.client`` too.

- A hostile server shows a host a lobby seat whose join is old (a re-used call id) or not the
  member's own: the host's ``salon call`` does not list it as a knock, and ``salon mod admit``
  refuses to sign an admission for it (no ghost participant everyone would let in).
- Signals held back until their sender is admitted are capped per sender: a participant (or
  server) flooding them can neither grow the client's memory nor crowd out a newcomer's
  early media key.

The servers are the real spaces app in the test's event loop, doctored the way a compromised
operator could; the hosts are a real ``salon call``/``salon mod`` and an in-process CallClient.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, amake_town, calls
from test_call_admission import hall, push_state, signed, until
from test_sfu_moderation import keystore_of

from client.call.client import PENDING_PER_SENDER, PENDING_SIGNALS_MAX, CallClient, CallOptions
from client.call.view import PlainDisplay
from client.core.rooms import resolve_room
from client.core.space import open_space
from protocol.conference_wire import ActInCall, CallSignal
from protocol.wire import encoder
from spaces.conference import Seat
from spaces.services import ROUTES

pytestmark = pytest.mark.timeout(150)


async def test_an_old_or_forged_knock_is_neither_listed_nor_admitted(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town, "--lobby")
    carol_key, bob_key = town.member_key("Carol"), town.member_key("Bob")
    admits: list[Any] = []
    act = srv.app[ROUTES][ActInCall]

    async def recording(caller: Any, message: ActInCall) -> Any:
        if message.action.action == "admit":
            admits.append(message.action)
        return await act(caller, message)

    srv.app[ROUTES][ActInCall] = recording
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 60)
        running.append(alice)
        await alice.wait_for("topology mesh")
        # Carol knocked an hour ago in an earlier call the server gave this id; she is not here.
        old = signed(town, "Carol", conference, "join", carol_key, ago_ms=3_600_000, roster=roster)
        conference.seats[carol_key] = Seat(carol_key, 98, "lobby", old)
        # And a "knock" of Bob's that Carol signed (a join that is not the member's own).
        forged = signed(town, "Carol", conference, "join", bob_key, roster=roster)
        conference.seats[bob_key] = Seat(bob_key, 99, "lobby", forged)
        push_state(conferences, conference, roster)
        await alice.wait_for(
            r"the server shows Carol \(\w+\) in the lobby, but not as a knock you may admit: "
            r"their 'join' is 60 min old when first shown"
        )
        await alice.wait_for(
            r"the server shows Bob \(\w+\) in the lobby, but not as a knock you may admit: "
            r"their 'join' does not verify"
        )
        assert not any("waiting in the lobby" in line for line in alice.lines)
        for name, why in (("Carol", "60 min old"), ("Bob", "does not verify")):
            admit = ("mod", town.space, "hall", "admit", name)
            refused = await town["Alice"].arun(*admit, check=False)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert f"{name} cannot be admitted: their 'join'" in refused.stderr, refused.stderr
            assert why in refused.stderr
        assert admits == []
        # A genuine knock (fresh, her own) is listed and admitted as before.
        del conference.seats[bob_key]
        fresh = signed(town, "Carol", conference, "join", carol_key, roster=roster)
        conference.seats[carol_key] = Seat(carol_key, 100, "lobby", fresh)
        push_state(conferences, conference, roster)
        await alice.wait_for(r"Carol \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Carol")
        assert [a.target for a in admits] == [carol_key]
        await alice.stop()


async def test_a_flood_of_early_signals_is_capped_per_sender(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Mallory"))
    conferences, conference, _ = await hall(srv, town)
    mallory_key, bob_key = town.member_key("Mallory"), town.member_key("Bob")
    out = io.StringIO()
    async with open_space(*keystore_of(town["Alice"])) as session:
        room = resolve_room(session, "hall", ("conference",))
        alice = CallClient(session, room, CallOptions("test", "test", 60), PlainDisplay(out))
        call = asyncio.create_task(alice.run())
        try:
            await until(lambda: alice.me_admitted, "Alice in the call")
            subscriber = conferences.session_of((conference.space_id, conference.room_id), alice.me)
            assert subscriber is not None

            def push(sender: bytes) -> None:
                box = secrets.token_bytes(200)  # never opened: its sender is not admitted
                event = CallSignal(conference.room_id, conference.call_id, sender, box)
                subscriber.push(encoder.encode(event))

            # Mallory (a member, not in the call) floods Alice with signals.
            for _ in range(5 * PENDING_SIGNALS_MAX):
                push(mallory_key)
            await until(
                lambda: len(alice.admission.pending.held) >= PENDING_PER_SENDER,
                "the flood arriving",
            )
            await asyncio.sleep(1)  # every one of them handled
            held = [ev.sender for _, ev in alice.admission.pending.held]
            assert held.count(mallory_key) == PENDING_PER_SENDER, len(held)
            # Bob's early signal (he is not admitted in Alice's view yet) is still held.
            push(bob_key)
            await until(
                lambda: any(ev.sender == bob_key for _, ev in alice.admission.pending.held), "Bob's"
            )
        finally:
            alice._stop.set()  # as on Ctrl-C
            await asyncio.wait_for(call, 30)
    assert "Traceback" not in out.getvalue()
