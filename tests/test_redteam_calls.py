"""Red team on call admission and moderation (issue 8, points 3 and 7): a hostile server,
a removed member and a malicious participant, each doing one attack the signed facts must
defeat. The servers are the real spaces app in the test's event loop, doctored the way a
compromised operator could; the participants are real ``salon call`` processes.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import msgspec
import pytest
from call_helpers import CallProcess, amake_town, calls
from test_call_admission import (
    CODE_2,
    CODE_3,
    UNVERIFIED,
    Relayed,
    alice_admits_bob,
    hall,
    push_state,
    signed,
    until,
)
from test_call_core import Person, roles, room

from client.call.ledger import ActionLedger
from protocol.conference_rules import FRESHNESS_MS, Restrictions, seat_flags
from protocol.conference_wire import (
    CallAction,
    CallParticipant,
    CallSignal,
    CallUpdate,
    SendCallSignal,
)
from protocol.wire import encoder
from spaces.conference import Seat
from spaces.services import ROUTES

pytestmark = pytest.mark.timeout(180)


# -- a server muting a host with a lower host's "mute-all" -------------------------------------


def test_mute_all_never_covers_a_higher_ranked_host() -> None:
    """A moderator's genuine "mute-all" mutes those not above them; an honest server applies
    it that way. A server that files it on the owner's seat must not mute the owner (their
    own client would stop sending audio, and everyone would drop it)."""
    people = {"owner": Person("owner"), "mod": Person("moderator"), "bob": Person("member")}
    owner, mod, bob = people["owner"], people["mod"], people["bob"]
    mute_all = mod.act("c1", "mute-all")
    flags = {}
    for who in (owner, bob):
        join = who.act("c1", "join", who.key)
        seat = CallParticipant(who.key, 1, "joined", join, mute=mute_all)
        flags[who.role] = seat_flags(seat, room(), "c1", roles(people), lambda a: True)
    assert flags["member"].muted  # what the moderator meant
    assert not flags["owner"].muted and flags["owner"].muted_by is None


# -- a removed join's kick shown again to its member -------------------------------------------


async def test_old_kick_of_an_earlier_join_does_not_make_a_member_leave(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """Carol was kicked once (a genuine kick of that join). She joins again; the server shows
    her a state in which her seat is that old join, and the old kick: her client must judge
    the kick against the join it signed itself, and stay."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town)
    carol_key = town.member_key("Carol")
    kicks: list[CallAction] = []
    honest_act = conference.act

    def recording_act(action: CallAction, *args: Any) -> Any:
        if action.action == "kick":
            kicks.append(action)
        return honest_act(action, *args)

    conference.act = recording_act  # type: ignore[method-assign,assignment]
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 90)
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c1.json", 90)
        running += [alice, carol]
        await carol.wait_for(CODE_2)
        old_join = conference.seats[carol_key].join
        await town["Alice"].arun("mod", town.space, "hall", "kick", "Carol")
        kicked = await carol.finish()
        assert kicked.returncode == 5 and kicks

        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c2.json", 90)
        running.append(carol)
        await carol.wait_for(CODE_2)
        roles_now = {k: m.role for k, m in roster.members.items()}
        state = conference.state_for(carol_key, roles_now)
        seats = [
            msgspec.structs.replace(p, join=old_join) if p.member == carol_key else p
            for p in state.participants
        ]
        update = CallUpdate(msgspec.structs.replace(state, participants=seats), kicks[0])
        session = conferences.session_of((conference.space_id, conference.room_id), carol_key)
        assert session is not None
        session.push(encoder.encode(update))
        await asyncio.sleep(3)
        assert carol.proc.returncode is None, carol.lines
        stayed = await carol.stop()
        await alice.stop()

    assert stayed.returncode == 0, stayed.stderr
    assert "removed you" not in stayed.stderr


# -- an admission replayed onto a later join that re-uses the admitted join's nonce -------------


async def test_admission_replayed_onto_a_join_reusing_its_nonce_is_refused(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """In a lobby room Alice admitted Carol's join; Carol left. Carol (a malicious member,
    with the server) signs a new join with the same nonce, and the server seats it with the
    old admission, which names that nonce. Nobody admitted this join: no keys for it."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town, "--lobby")
    relayed = Relayed(srv)
    carol_key = town.member_key("Carol")
    async with calls() as running:
        alice, bob = await alice_admits_bob(town, running, tmp_path, 90)
        carol = await CallProcess.start(town["Carol"], town.space, "hall", tmp_path / "c.json", 90)
        running.append(carol)
        await alice.wait_for(r"Carol \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Carol")
        await carol.wait_for(CODE_3)
        await bob.wait_for(CODE_3)
        admitted = conference.seats[carol_key]
        old_join, old_admit = admitted.join, admitted.admission
        assert old_admit is not None
        await carol.stop()
        await until(lambda: carol_key not in conference.seats, "Carol's departure")
        await bob.wait_for(r"Carol \(\w+\) left")

        since = len(relayed.sent)
        rejoin = signed(
            town, "Carol", conference, "join", carol_key, nonce=old_join.nonce, roster=roster
        )
        conference.seats[carol_key] = Seat(carol_key, 99, "joined", rejoin, old_admit)
        push_state(conferences, conference, roster)
        for honest in (alice, bob):
            await honest.wait_for(UNVERIFIED + r".*nonce was already used")
        await asyncio.sleep(2)
        results = [await alice.stop(), await bob.stop()]

    assert relayed.to(carol_key, since) == []
    for result in results:
        assert result.returncode == 0


# -- a whole old seat (join and admission from long ago) shown to someone just let in ---------


async def test_old_seat_in_a_reused_call_id_gets_no_keys_from_a_newcomer(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """Bob, just let in, trusts every seat of his first state (they may have entered long
    ago), so a server re-using a call id can show him a seat Alice admitted in an earlier
    call with that id, whose owner is not here. Bob connects to and seals his key to such a
    participant only once they have sent him a signal naming his join (random, just
    signed): the old seat never does, so it gets nothing from Bob."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    conferences, conference, roster = await hall(srv, town, "--lobby")
    relayed = Relayed(srv)
    carol_key, bob_key = town.member_key("Carol"), town.member_key("Bob")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 90)
        running.append(alice)
        await alice.wait_for("topology mesh")
        # An hour ago, in a call the server gave this same id, Alice admitted Carol.
        old_join = signed(
            town, "Carol", conference, "join", carol_key, ago_ms=3_600_000, roster=roster
        )
        old_admit = signed(
            town,
            "Alice",
            conference,
            "admit",
            carol_key,
            ago_ms=3_590_000,
            join_ref=old_join.nonce,
            roster=roster,
        )
        conference.seats[carol_key] = Seat(carol_key, 99, "joined", old_join, old_admit)
        push_state(conferences, conference, roster)
        await alice.wait_for(UNVERIFIED + r".*their 'admit' was refused: it is stale")
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 90)
        running.append(bob)
        await alice.wait_for(r"Bob \(\w+\) is waiting in the lobby")
        await town["Alice"].arun("mod", town.space, "hall", "admit", "Bob")
        await bob.wait_for("first video from Alice")
        await asyncio.sleep(3)
        await bob.stop()
        await alice.stop()

    assert [s for s, to in relayed.sent if to == carol_key and s == bob_key] == []


# -- a media key sealed to an earlier join, replayed into a later one ----------------------------


async def test_media_key_sealed_to_an_earlier_join_is_refused(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """Alice sealed her media key (and offers) to Bob's first join of the call. Bob leaves
    and joins again (same call id: Alice stayed). The server replays Alice's old boxes to
    Bob's new join: they open and verify, but they name his earlier join, so Bob refuses
    them, and his call goes on."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    conferences, conference, _ = await hall(srv, town)
    alice_key, bob_key = town.member_key("Alice"), town.member_key("Bob")
    boxes: list[tuple[bytes, bytes, bytes]] = []
    relay = srv.app[ROUTES][SendCallSignal]

    async def recording(caller: Any, message: SendCallSignal) -> msgspec.Struct:
        boxes.append((caller.subscriber.member, message.to, message.box))
        return await relay(caller, message)

    srv.app[ROUTES][SendCallSignal] = recording
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 90)
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b1.json", 90)
        running += [alice, bob]
        await bob.wait_for(CODE_2)
        call_id = conference.call_id
        old = [box for sender, to, box in boxes if (sender, to) == (alice_key, bob_key)]
        assert old
        await bob.stop()
        await alice.wait_for(r"Bob \(\w+\) left")
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b2.json", 90)
        running.append(bob)
        await bob.wait_for(CODE_2)
        assert conference.call_id == call_id
        session = conferences.session_of((conference.space_id, conference.room_id), bob_key)
        assert session is not None
        for box in old:
            session.push(encoder.encode(CallSignal(conference.room_id, call_id, alice_key, box)))
        await bob.wait_for(r"ignored a media key from Alice \(\w+\): it is for another join")
        await asyncio.sleep(2)
        again = await bob.stop()
        await alice.stop()

    assert again.returncode == 0, again.stderr
    assert again.stats["rejected_signals"] >= 1
    assert again.peer("Alice")["connection"] != "refused"


# -- a server rolling a mute back after everyone saw it ------------------------------------------


async def test_mute_rolled_back_by_the_server_still_holds(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """Alice mutes Bob; every client verifies it. The server then shows Bob's seat without
    the mute again (no unmute was signed): Bob stays muted for everyone, himself included."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    conferences, conference, roster = await hall(srv, town)
    bob_key = town.member_key("Bob")
    async with calls() as running:
        alice = await CallProcess.start(town["Alice"], town.space, "hall", tmp_path / "a.json", 90)
        bob = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 90)
        running += [alice, bob]
        await bob.wait_for(CODE_2)
        await alice.wait_for(r"first audio from Bob|first video from Bob")
        await town["Alice"].arun("mod", town.space, "hall", "mute", "Bob")
        await bob.wait_for("muted you")
        conference.seats[bob_key].mute = None  # the rollback
        push_state(conferences, conference, roster)
        await asyncio.sleep(3)
        host, muted = await alice.stop(), await bob.stop()

    assert muted.stats["self"]["muted"] is True, muted.stdout
    assert host.peer("Bob")["muted"] is True


# -- a participant streaming actions at every client ----------------------------------------------


def test_a_stream_of_actions_leaves_the_clients_replay_tables_bounded() -> None:
    """Mallory raises and lowers her hand 50 times a second (the server's request rate) for
    an hour; each is a genuine, fresh action every client judges. What a client keeps to
    refuse replays must not grow with the call's length, and still refuse replays."""
    clock = [1_800_000_000_000]
    # What each call client keeps (ledger.call.ledger), on a fake clock; every action verifies.
    ledger = ActionLedger(lambda action: None, lambda: clock[0])
    mallory = bytes(range(32))
    first = None
    for n in range(50 * 3600):
        clock[0] += 20
        action = CallAction(
            "s",
            "r",
            "c",
            mallory,
            "hand-up",
            mallory,
            clock[0],
            secrets.token_bytes(16),
            sig=n.to_bytes(64, "big"),
        )
        first = first or action
        assert ledger.delivered(action) is None
    window = 2 * FRESHNESS_MS // 20 + 100
    assert len(ledger._fresh) < window and len(ledger._nonces) < window
    assert len(ledger._noted) < window
    # A recent nonce on another action is still a replay; the first action, long gone from
    # the tables, is still refused (stale).
    replay = msgspec.structs.replace(action, sig=b"x" * 64)
    assert ledger.freshness(replay) == "its nonce was already used (a replay)"
    assert first is not None and "stale" in (ledger.freshness(first) or "")


# -- a future-dated unban outliving the owner's later ban ---------------------------------------


def test_a_future_dated_unban_does_not_outlive_a_later_ban() -> None:
    """Mallory, a moderator in league with the server, signs an unban of Carol dated almost
    the whole allowed skew ahead (the server takes it: it is within FRESHNESS_MS). The owner
    bans Carol again a minute later. A client that saw both must honour the ban: an action
    counts from when it was seen, not from a time its signer may have put in the future."""
    people = {"owner": Person("owner"), "mod": Person("moderator"), "carol": Person("member")}
    owner, mallory, carol = people["owner"], people["mod"], people["carol"]
    t0 = 1_800_000_000_000
    kept = Restrictions()
    assert kept.add(owner.act("c1", "ban", carol.key, at=t0), now_ms=t0)
    unban = mallory.act("c1", "unban", carol.key, at=t0 + FRESHNESS_MS - 10_000)
    assert kept.add(unban, now_ms=t0 + 10_000)
    reban = owner.act("c1", "ban", carol.key, at=t0 + 60_000)
    assert kept.add(reban, now_ms=t0 + 61_000)
    assert kept.barring(carol.key, bytes(16)) == reban


def test_a_ban_shown_again_does_not_overtake_an_unban_seen_in_between() -> None:
    """A ban dated ahead counts from when it was first seen; a server that shows it again
    after an unban cannot make it count from the later sighting."""
    people = {"owner": Person("owner"), "mod": Person("moderator"), "carol": Person("member")}
    owner, mod, carol = people["owner"], people["mod"], people["carol"]
    t0 = 1_800_000_000_000
    kept = Restrictions()
    ban = owner.act("c1", "ban", carol.key, at=t0 + 200_000)  # dated ahead
    assert kept.add(ban, now_ms=t0)
    unban = mod.act("c1", "unban", carol.key, at=t0 + 5_000)
    assert kept.add(unban, now_ms=t0 + 5_000)
    assert not kept.add(ban, now_ms=t0 + 10_000)  # shown again
    assert kept.barring(carol.key, bytes(16)) is None


# -- a participant naming old roster heads, to make every client fetch the chain ---------------


def test_the_server_refuses_an_action_naming_a_long_gone_head() -> None:
    """Every client proves an action's head: beyond the hashes its roster keeps (the last
    HASH_WINDOW records and checkpoints) it fetches up to HASH_CHECKPOINT records. Mallory
    signing hand-ups that each name another old segment would make every client fetch the
    whole chain, a segment per action; honest clients sign on a head they just synced, so
    the server takes only heads within HASH_WINDOW of its own."""
    from types import SimpleNamespace

    from protocol.errors import InvalidMessage
    from protocol.records import HASH_WINDOW
    from spaces.handlers.conference import _check_head

    roster: Any = SimpleNamespace(head_seq=100_000, head_hash=bytes(32))
    mallory = Person("member")
    recent = msgspec.structs.replace(
        mallory.act("c1", "hand-up", mallory.key),
        head_seq=100_000 - HASH_WINDOW,
        head_hash=b"h" * 32,
    )
    _check_head(recent, roster)
    old = msgspec.structs.replace(recent, head_seq=100_000 - HASH_WINDOW - 1)
    with pytest.raises(InvalidMessage, match="roster head"):
        _check_head(old, roster)
