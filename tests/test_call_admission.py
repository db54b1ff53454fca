"""Call admission comes from signed facts only (issue 8, point 3), against a malicious server.

The server is the real spaces app in the test's event loop (``app_server``), made to lie
the way a compromised operator could: it says a lobby room has no lobby, it re-uses a
call id and replays an old admission, it hides a kick and a ban (the actions reach the
clients, their effect does not), and it ends a member's call with a reason no signed
action backs. The participants are real ``salon call`` processes; the honest ones must
seal no keys to anyone the signed facts do not let in, and say why.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import support
from call_helpers import CallProcess, Town, amake_town, calls

from client.core import crypto
from protocol.conference_wire import (
    ActionName,
    CallAction,
    CallEnded,
    CallUpdate,
    SendCallSignal,
    action_signing_bytes,
)
from protocol.records import Role, Roster
from protocol.wire import encoder
from spaces.conference import Change, Conference
from spaces.handlers.conference import CONFERENCES, Conferences
from spaces.services import MEMBERSHIP, ROUTES, Caller

pytestmark = pytest.mark.timeout(180)
CODE_2 = r"verification code .* \(2 in the call"
CODE_3 = r"verification code .* \(3 in the call"
UNVERIFIED = r"the server lists Carol \(\w+\) in the call, but their join or admission does not"


class Relayed:
    """Every call signal the server relays: (sender, recipient)."""

    def __init__(self, srv: Any) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        relay = srv.app[ROUTES][SendCallSignal]

        async def recording(caller: Caller, message: SendCallSignal) -> msgspec.Struct:
            self.sent.append((caller.subscriber.member, message.to))
            return await relay(caller, message)

        srv.app[ROUTES][SendCallSignal] = recording

    def to(self, recipient: bytes, since: int = 0) -> list[bytes]:
        return [sender for sender, to in self.sent[since:] if to == recipient]


async def hall(srv: Any, town: Town, *flags: str) -> tuple[Conferences, Conference, Roster]:
    await town["Alice"].arun("room", "create", town.space, "hall", "--kind", "conference", *flags)
    roster = await srv.app[MEMBERSHIP].roster(town.space)
    (room_id,) = [r for r, room in roster.rooms.items() if room.spec.kind == "conference"]
    conferences = srv.app[CONFERENCES]
    conference, roster = await conferences.conference(town.space, room_id)
    return conferences, conference, roster


def signed(
    town: Town,
    who: str,
    conference: Conference,
    name: ActionName,
    target: bytes = b"",
    *,
    call_id: str | None = None,
    ago_ms: int = 0,
    roster: Roster | None = None,
    **fields: Any,
) -> CallAction:
    """An action ``who`` really signed (the test holds their key), maybe long ago, on the
    roster head ``roster`` shows (every client refuses an action naming no head)."""
    if roster is not None:
        fields.setdefault("head_seq", roster.head_seq)
        fields.setdefault("head_hash", roster.head_hash)
    unsigned = CallAction(
        conference.space_id,
        conference.room_id,
        call_id or conference.call_id,
        town.member_key(who),
        name,
        target,
        int(time.time() * 1000) - ago_ms,
        fields.pop("nonce", secrets.token_bytes(16)),
        **fields,
    )
    sig = crypto.sign(town.signing_seed(who), action_signing_bytes(unsigned))
    return msgspec.structs.replace(unsigned, sig=sig)


def push_state(conferences: Conferences, conference: Conference, roster: Roster) -> None:
    """The server announces its (doctored) state to everyone in the call."""
    conference.version += 1
    conferences._announce(conference, roster, Change())


async def wait_after(call: CallProcess, pattern: str, mark: int) -> None:
    """Wait for a line matching ``pattern`` among those printed after line ``mark``."""
    regex = re.compile(pattern)
    await until(lambda: any(regex.search(line) for line in call.lines[mark:]), pattern)


async def alice_admits_bob(
    town: Town, running: list[CallProcess], tmp_path: Path, duration: int
) -> tuple[CallProcess, CallProcess]:
    """In the lobby room "hall": Alice (a host) starts the call, Bob knocks, Alice admits
    him; returns once Bob shows the two-person verification code."""
    alice = await CallProcess.start(
        town["Alice"], town.space, "hall", tmp_path / "a.json", duration
    )
    running.append(alice)
    await alice.wait_for("topology mesh")
    bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", duration)
    running.append(bob)
    await alice.wait_for(r"Bob \(\w+\) is waiting in the lobby")
    await town["Alice"].arun("mod", town.space, "hall", "admit", "Bob")
    await bob.wait_for(CODE_2)
    return alice, bob


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    await support.until(condition, what, timeout, interval=0.1)


async def test_server_claiming_no_lobby_gets_no_keys_to_the_knocker(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    _, conference, _ = await hall(srv, town, "--lobby")
    relayed = Relayed(srv)
    carol_key = town.member_key("Carol")
    async with calls() as running:
        alice, bob = await alice_admits_bob(town, running, tmp_path, 60)
        await alice.wait_for(CODE_2)

        # The server now says the room has no lobby: Carol walks straight in, unadmitted.
        conference.room = msgspec.structs.replace(conference.room, lobby=False)
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c.json", 60)
        running.append(carol)
        await until(lambda: carol_key in conference.seats, "Carol's seat")
        assert conference.seats[carol_key].status == "joined"
        for honest in (alice, bob):
            await honest.wait_for(UNVERIFIED)
        await asyncio.sleep(3)  # time for keys and offers, had anyone meant to send them
        knocker = await carol.stop()
        results = [await alice.stop(), await bob.stop()]

    # Not one box (media key, offer) was sealed to Carol by Alice or Bob.
    assert relayed.to(carol_key) == []
    assert knocker.stats["verification_codes"] == []
    assert all(p["video_frames_decoded"] == 0 for p in knocker.stats["participants"])
    for result in results:
        assert result.returncode == 0
        assert not any("Carol" in line and "is in the call" in line for line in result.stdout)
        assert all(p["display_name"] != "Carol" for p in result.stats["participants"])


async def test_old_admission_replayed_into_a_reused_call_id_is_refused(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town, "--lobby")
    relayed = Relayed(srv)
    carol_key = town.member_key("Carol")
    async with calls() as running:
        # An earlier call: Alice really admitted Carol.
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a1.json", 60)
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c1.json", 60)
        running += [alice, carol]
        await alice.wait_for(r"Carol \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Carol")
        await carol.wait_for(CODE_2)
        old_admit = conference.seats[carol_key].admission
        assert old_admit is not None
        old_call = conference.call_id
        await carol.stop()
        await alice.stop()
        await until(conference.is_idle, "the first call to end")
        conference.call_id = old_call  # the server re-uses the call id

        # The next call: Alice admits Bob; Carol knocks and the server replays her admission.
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a2.json", 60)
        running.append(alice)
        await alice.wait_for("topology mesh")
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 60)
        running.append(bob)
        await alice.wait_for(r"Bob \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Bob")
        await bob.wait_for(CODE_2)
        await alice.wait_for(CODE_2)
        since = len(relayed.sent)
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c2.json", 60)
        running.append(carol)
        await until(lambda: carol_key in conference.seats, "Carol's knock")
        seat = conference.seats[carol_key]
        seat.status, seat.admission = "joined", old_admit
        push_state(conferences, conference, roster)
        for honest in (alice, bob):
            await honest.wait_for(UNVERIFIED)

        # And a whole old seat: a join and an admission signed ten minutes ago.
        old_join = signed(
            town, "Carol", conference, "join", carol_key, ago_ms=660_000, roster=roster
        )
        stale_admit = signed(
            town,
            "Alice",
            conference,
            "admit",
            carol_key,
            ago_ms=600_000,
            join_ref=old_join.nonce,
            roster=roster,
        )
        seat.join, seat.admission = old_join, stale_admit
        push_state(conferences, conference, roster)
        for honest in (alice, bob):
            await honest.wait_for(UNVERIFIED + r".*their 'admit' was refused: it is stale")
        await asyncio.sleep(2)
        await carol.stop()
        results = [await alice.stop(), await bob.stop()]

    assert relayed.to(carol_key, since) == []
    for result in results:
        assert result.returncode == 0
        assert all(p["display_name"] != "Carol" for p in result.stats["participants"])


async def test_hidden_kick_and_ban_are_still_honoured(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town)
    relayed = Relayed(srv)
    carol_key = town.member_key("Carol")
    honest_act = conference.act
    hidden: list[CallAction] = []
    honest_push = conferences._push

    def push(subscriber: Any, event: msgspec.Struct) -> None:
        """Carol (in league with the server, say) never hears of her removal."""
        action = getattr(event, "action", None)
        if subscriber.member == carol_key and action is not None and action in hidden:
            return
        honest_push(subscriber, event)

    conferences._push = push  # type: ignore[method-assign]

    def hiding_act(action: CallAction, roles: dict[bytes, Role], now_ms: int) -> Change:
        """Accept the action and tell everyone about it, but keep the target in the call."""
        seats = dict(conference.seats)
        change = honest_act(action, roles, now_ms)
        if action.action in ("kick", "ban"):
            conference.seats.update(seats)
            conference.bans.pop(action.target, None)
            change.removed, change.ban_added = [], None
            hidden.append(action)
        return change

    conference.act = hiding_act  # type: ignore[method-assign]
    async with calls() as running:
        people = {}
        for name in ("Alice", "Bob", "Carol"):
            stats = tmp_path / f"{name}.json"
            people[name] = await CallProcess.start(town[name], town.space, "hall", stats, 90)
            running.append(people[name])
        alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]
        for call in running:
            await call.wait_for(CODE_3)

        marks = [len(alice.lines), len(bob.lines)]
        await town["Alice"].arun("mod", town.space, "hall", "kick", "Carol")
        for honest, mark in zip((alice, bob), marks, strict=True):
            await honest.wait_for(r"the server still lists Carol .* whom (Alice|you) .*removed")
            await wait_after(honest, CODE_2, mark)
        since_kick = len(relayed.sent)
        await asyncio.sleep(2)
        after_kick = relayed.to(carol_key, since_kick)
        assert carol_key in conference.seats and [a.action for a in hidden] == ["kick"]

        # A kick is no ban: Carol may come back with a new join, and then be banned.
        await carol.stop()
        marks = [len(alice.lines), len(bob.lines)]
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c2", 90)
        running.append(carol)
        await carol.wait_for(CODE_3)
        for honest, mark in zip((alice, bob), marks, strict=True):
            await wait_after(honest, CODE_3, mark)
        marks = [len(alice.lines), len(bob.lines)]
        await town["Alice"].arun("mod", town.space, "hall", "ban", "Carol")
        for honest, mark in zip((alice, bob), marks, strict=True):
            await honest.wait_for(r"the server still lists Carol .* whom (Alice|you) .*banned")
            await wait_after(honest, CODE_2, mark)
        since_ban = len(relayed.sent)
        await asyncio.sleep(2)
        after_ban = relayed.to(carol_key, since_ban)
        assert carol_key in conference.seats and [a.action for a in hidden] == ["kick", "ban"]
        # Told of the ban at last (still seated by the server), Carol's own client leaves.
        roles = {k: m.role for k, m in roster.members.items()}
        ban = CallUpdate(conference.state_for(carol_key, roles), hidden[-1])
        session = conferences.session_of((conference.space_id, conference.room_id), carol_key)
        assert session is not None
        honest_push(session, ban)
        banned = await carol.finish()
        results = [await alice.stop(), await bob.stop()]

    assert after_kick == [] and after_ban == []
    assert banned.returncode == 5 and "banned you from this call; the server kept" in banned.stderr
    assert banned.stats["ended_reason"] == "removed"
    for result in results:
        assert result.returncode == 0
        assert result.peer("Carol")["connection"] != "connected"
    # Alice and Bob ended on a code Carol never saw.
    final = [r.stats["verification_codes"][-1] for r in results]
    assert final[0] == final[1] and final[0] not in banned.stats["verification_codes"]


async def test_call_ended_without_a_matching_signed_action_is_reported_as_such(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    conferences, conference, _ = await hall(srv, town)
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 60)
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 60)
        running += [alice, bob]
        await bob.wait_for(CODE_2)
        await alice.wait_for(CODE_2)
        ((key, sessions),) = conferences._sessions.items()
        bob_key = town.member_key("Bob")
        # First, a real event delivered twice, then its nonce on another action: replays.
        _, roster = await conferences.conference(*key)
        roles = {k: m.role for k, m in roster.members.items()}
        lock = signed(town, "Alice", conference, "lock", roster=roster)
        unlock = signed(town, "Alice", conference, "unlock", nonce=lock.nonce, roster=roster)
        for event in (lock, lock, unlock):
            update = CallUpdate(conference.state_for(bob_key, roles), event)
            sessions[bob_key].push(encoder.encode(update))
        await bob.wait_for(r"Alice \(\w+\) locked the call")
        await bob.wait_for("ignored an unverifiable 'lock' event: it was already delivered")
        await bob.wait_for("ignored an unverifiable 'unlock' event: its nonce was already used")
        # To Bob: "removed", with a real, fresh action of Alice's about him that is no kick.
        mute = signed(town, "Alice", conference, "mute", bob_key, roster=roster)
        sessions[bob_key].push(
            encoder.encode(CallEnded(key[1], conference.call_id, "removed", mute))
        )
        # To Alice: "removed", with nothing at all.
        alice_key = town.member_key("Alice")
        sessions[alice_key].push(encoder.encode(CallEnded(key[1], conference.call_id, "removed")))
        dropped, host = await bob.finish(), await alice.finish()

    assert dropped.returncode == 1 and host.returncode == 1
    assert "with a signed 'mute', which is no 'kick'" in dropped.stderr
    assert "without a signed action" in host.stderr
    for result in (dropped, host):
        assert "the server dropped you from the call (it says 'removed')" in result.stderr
        assert "removed you" not in result.stderr
        assert result.stats["ended_reason"] == "interrupted"
