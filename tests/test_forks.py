"""A server that forks the roster, and one that replays messages (issue 8, points 7 and 10).

The server is the real spaces app in the test's event loop (``app_server``), made to lie to
one member: it shows Bob an older chain (Carol's promotion and removal hidden), or a branch
of its own on which Carol is still around. Everything other members sign names the roster
head they verified, as (seq, hash), so Bob's client sees that what Alice wrote comes from a
history it is not shown — and says so instead of obeying it. A replaying server (an old
message under a new sequence number, or a post at a retired key epoch) is caught by the
reader's (sender, client id) memory and its per-sender epoch check.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from call_helpers import CallProcess, Town, amake_town, calls
from chat_support import jpeg_with_gps
from conftest import stored_records

from client.core import chatcrypto, crypto
from client.core.chat import ReplayGuard, new_client_id
from protocol import forks, roomkeys
from protocol.chat_wire import CLIENT_ID_LEN, ChatMessage, FetchMessages, Messages
from protocol.records import Profile, Record, record_hash, signing_bytes
from protocol.wire import GetRecords, Records
from spaces.services import ROUTES, Caller

pytestmark = pytest.mark.timeout(150)
FORK = forks.FORK_WARNING


def chain_of(srv: Any, town: Town) -> list[Record]:
    return stored_records(srv.data_dir / "salon.db", town.space)


def fork_records_for(srv: Any, victim: bytes, view: Callable[[list[Record]], list[Record]]):
    """From now on the server answers ``victim``'s GetRecords with ``view(true chain)``; the
    others (and every append) still see the truth. Returns a function that stops it."""
    routes = srv.app[ROUTES]
    honest = routes[GetRecords]

    async def forking(caller: Caller, message: GetRecords) -> msgspec.Struct:
        reply = await honest(caller, msgspec.structs.replace(message, after=-1))
        assert isinstance(reply, Records)
        shown = view(reply.records) if caller.member == victim else reply.records
        # The shown chain, whole and self-consistent: its own head (a small test chain fits
        # one page).
        head = shown[-1]
        return Records(message.id, shown[message.after + 1 :], head.seq, record_hash(head))

    routes[GetRecords] = forking
    return lambda: routes.__setitem__(GetRecords, honest)


def carol_branch(town: Town, keep: int) -> Callable[[list[Record]], list[Record]]:
    """The first ``keep`` records, then one Carol signs on top: a branch only Bob is shown."""
    seed = town.signing_seed("Carol")
    made: list[Record] = []  # one branch record, shown the same every time

    def view(records: list[Record]) -> list[Record]:
        base = records[:keep]
        if not made:
            unsigned = Record(
                town.space,
                keep,
                record_hash(base[-1]),
                crypto.public_signing_key(seed),
                int(time.time()),
                Profile(0, secrets.token_bytes(40)),
            )
            made.append(
                msgspec.structs.replace(unsigned, sig=crypto.sign(seed, signing_bytes(unsigned)))
            )
        return [*base, *made]

    return view


# -- point 7: forks are detected -----------------------------------------------------------------


@pytest.mark.parametrize("fork", ["stale", "branch"])
async def test_a_forked_roster_is_detected_by_the_reader(
    app_server: Any, user: Any, tmp_path: Path, fork: str
) -> None:
    """Bob is shown a chain without Carol's promotion and removal (``stale``: the old head;
    ``branch``: a record of Carol's in their place). Alice's message, story and post-kick
    message carry the real head: Bob's client refuses each with a fork warning, exits 0, and
    still shows what is consistent with his chain."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    alice, bob = town["Alice"], town["Bob"]
    await alice.arun("room", "create", town.space, "general", "--kind", "chat")
    await alice.arun("room", "create", town.space, "news", "--kind", "channel")
    await alice.arun("send", town.space, "general", "before")
    assert [m["text"] for m in await bob.ajson("read", town.space, "general")] == ["before"]
    bobs_head = len(chain_of(srv, town))  # what Bob verified and stored

    if fork == "stale":
        stop = fork_records_for(srv, town.member_key("Bob"), lambda rs: rs[:bobs_head])
    else:
        stop = fork_records_for(srv, town.member_key("Bob"), carol_branch(town, bobs_head))
    await alice.arun("role", town.space, "Carol", "moderator")
    await alice.arun("send", town.space, "general", "Carol is a moderator now")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(64, 48))
    await alice.arun("story", "post", town.space, "news", str(photo), "--caption", "hidden")
    await alice.arun("kick", town.space, "Carol")
    await alice.arun("send", town.space, "general", "Carol is gone")

    # Alice (shown the truth) reads everything, with no warning.
    result = await alice.arun("read", town.space, "general", "--json")
    assert [m["text"] for m in msgspec.json.decode(result.stdout)] == [
        "before",
        "Carol is a moderator now",
        "Carol is gone",
    ]
    assert "warning" not in result.stderr

    # Bob: only what his chain supports, and a fork warning for the rest (not a crash).
    result = await bob.arun("read", town.space, "general", "--json")
    assert [m["text"] for m in msgspec.json.decode(result.stdout)] == ["before"]
    warnings = [line for line in result.stderr.splitlines() if FORK in line]
    assert any(line.startswith("warning: message #2 is not shown") for line in warnings)
    assert any(line.startswith("warning: message #3 is not shown") for line in warnings)
    if fork == "branch":
        assert "differs from yours" in result.stderr  # same seq, another record
    assert "error" not in result.stderr and "Traceback" not in result.stderr
    stories = await bob.arun("story", "list", town.space, "news", "--json")
    assert msgspec.json.decode(stories.stdout) == []
    assert FORK in stories.stderr

    stop()  # the server is honest again
    if fork == "stale":
        # Bob's chain simply catches up: everything shows, nothing is refused.
        result = await bob.arun("read", town.space, "general", "--json")
        assert len(msgspec.json.decode(result.stdout)) == 3 and "warning" not in result.stderr
    else:
        # Bob's device stored the branch's head: the true chain is refused as a rewrite.
        line = await bob.afail("read", town.space, "general")
        assert "rewrote this space's history" in line


async def test_a_call_action_from_a_hidden_history_is_refused(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    """A host's signed mute names the roster head the host verified; the server hides that
    head from Bob (Carol's promotion), so Bob's call client refuses the mute as a fork and
    keeps sending — it does not obey an action from a history it is not shown."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    alice = town["Alice"]
    await alice.arun("room", "create", town.space, "hall", "--kind", "conference")
    bobs_view = len(chain_of(srv, town))
    stop = fork_records_for(srv, town.member_key("Bob"), lambda rs: rs[:bobs_view])
    async with calls() as running:
        a = await CallProcess.start(alice, town.space, "hall", tmp_path / "a.json", 40)
        b = await CallProcess.start(town["Bob"], town.space, "hall", tmp_path / "b.json", 40)
        running += [a, b]
        await b.wait_for(r"verification code .* \(2 in the call")
        await alice.arun("role", town.space, "Carol", "moderator")  # hidden from Bob
        await alice.arun("mod", town.space, "hall", "mute", "Bob")
        await b.wait_for(f"ignored an unverifiable 'mute' event: .*{FORK}")
        await asyncio.sleep(1)
        host, target = await a.stop(), await b.stop()
    stop()
    assert target.returncode == 0 and host.returncode == 0
    assert target.stats["self"]["muted"] is False
    assert target.stats["rejected_actions"] >= 1


def test_head_problem_rules() -> None:
    chain = [bytes([n]) * 32 for n in range(5)]

    def hash_at(seq: int) -> bytes | None:
        return chain[seq] if 0 <= seq < len(chain) else None

    assert forks.head_problem(hash_at, 4, 2, chain[2]) is None  # a prefix of mine
    assert forks.head_problem(hash_at, 4, 4, chain[4]) is None
    assert FORK in (forks.head_problem(hash_at, 4, 2, chain[3]) or "")  # another record
    assert FORK in (forks.head_problem(hash_at, 4, 5, bytes(32)) or "")  # beyond my head
    assert forks.head_problem(hash_at, 4, -1, b"") == "it names no roster head"
    assert forks.epoch_problem(1, 1) is None and forks.epoch_problem(2, 1) is None
    assert FORK in (forks.epoch_problem(1, 2) or "")


# -- point 10: no replay, no linkability through ids ---------------------------------------------


def serve_messages(srv: Any, extra: Callable[[list[ChatMessage]], list[ChatMessage]]) -> None:
    """The server appends ``extra(true messages)`` under new sequence numbers to every fetch
    (a replaying or injecting server)."""
    routes = srv.app[ROUTES]
    honest = routes[FetchMessages]

    async def replaying(caller: Caller, message: FetchMessages) -> msgspec.Struct:
        reply = await honest(caller, msgspec.structs.replace(message, after=0))
        assert isinstance(reply, Messages)
        found = list(reply.messages)
        last = max((m.seq for m in found), default=0)
        for n, injected in enumerate(extra(found), start=1):
            found.append(msgspec.structs.replace(injected, seq=last + n))
        shown = [m for m in found if m.seq > message.after]
        return Messages(message.id, message.room_id, shown, max(last, reply.last_seq))

    routes[FetchMessages] = replaying


async def test_a_replayed_message_is_shown_once(app_server: Any, user: Any) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    alice, bob = town["Alice"], town["Bob"]
    await alice.arun("room", "create", town.space, "general", "--kind", "chat")
    await alice.arun("send", town.space, "general", "pay Bob 10 coins")
    await alice.arun("send", town.space, "general", "thanks")
    serve_messages(srv, lambda found: [found[0], found[0]])  # seq 3 and 4: copies of seq 1
    result = await bob.arun("read", town.space, "general", "--json")
    assert [m["text"] for m in msgspec.json.decode(result.stdout)] == [
        "pay Bob 10 coins",
        "thanks",
    ]
    assert "warning: message #3 is not shown: it repeats message #1 (a replay)" in result.stderr
    assert "warning: message #4 is not shown: it repeats message #1" in result.stderr


async def test_a_post_at_a_retired_epoch_is_refused(app_server: Any, user: Any) -> None:
    """After Carol's removal (epoch 0 -> 1) Alice posts at epoch 1. A post of Alice's at
    epoch 0 then appears after it (a modified client signing on its old head, accepted by
    the server): Bob refuses it — and one signed on the new head but sealed with the old
    key is refused too."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    alice, bob = town["Alice"], town["Bob"]
    # A shared-history room: its key has one generation (0) per epoch.
    await alice.arun(
        "room", "create", town.space, "general", "--kind", "chat", "--history", "shared"
    )
    await alice.arun("send", town.space, "general", "at epoch 0")
    old_head = chain_of(srv, town)[-1]
    await alice.arun("kick", town.space, "Carol")
    await alice.arun("send", town.space, "general", "at epoch 1")
    new_head = chain_of(srv, town)[-1]

    membership = alice.keystore().load().memberships[0]
    room_id = next(iter(membership.room_keys))
    old_key = membership.room_keys[room_id][0].key

    def alices_old_epoch_post(text: str, head: Record) -> ChatMessage:
        client_id = new_client_id()
        header = chatcrypto.MessageHeader(
            town.space, room_id, 0, town.member_key("Alice"), client_id, 0
        )
        box = chatcrypto.seal_message(
            old_key,
            membership.signing_seed,
            header,
            text,
            int(time.time()),
            head.seq,
            record_hash(head),
        )
        box = roomkeys.frame(0, box)
        return ChatMessage(0, header.sender, client_id, 0, 0, time.time(), None, box)

    injected = [
        alices_old_epoch_post("old head, old key", old_head),
        alices_old_epoch_post("new head, old key", new_head),
    ]
    serve_messages(srv, lambda found: injected)
    result = await bob.arun("read", town.space, "general", "--json")
    assert [m["text"] for m in msgspec.json.decode(result.stdout)] == ["at epoch 0", "at epoch 1"]
    assert (
        "message #3 is not shown: it is encrypted for key epoch 0, older than epoch 1"
        in result.stderr
    )
    assert "message #4 is not shown: it claims a roster state that never was" in result.stderr


def test_replay_guard_rules() -> None:
    guard = ReplayGuard(limit=2)
    sender = bytes(32)

    def message(seq: int, client_id: bytes, epoch: int) -> ChatMessage:
        return ChatMessage(seq, sender, client_id, epoch, 0, 0.0, None, b"")

    first = message(1, b"a" * 16, 1)
    assert guard.problem(first) is None
    guard.accept(first)
    assert guard.problem(first) is None  # the same seq again (a re-fetch) is no replay
    assert "repeats message #1" in (guard.problem(message(9, b"a" * 16, 1)) or "")
    assert "older than epoch 1" in (guard.problem(message(2, b"b" * 16, 0)) or "")
    assert guard.problem(message(2, b"b" * 16, 2)) is None


def test_client_ids_are_random_and_carry_no_clock() -> None:
    """16 bytes, all of them random: no clock prefix (a device's clock offset would link
    its memberships), no two alike, every byte position spread over its range."""
    ids = [new_client_id() for _ in range(2000)]
    assert all(len(i) == CLIENT_ID_LEN for i in ids)
    assert len(set(ids)) == len(ids)
    for position in range(CLIENT_ID_LEN):
        assert len({i[position] for i in ids}) > 200, position  # ~255 expected when uniform
    micros = time.time_ns() // 1000
    clock_prefix = micros.to_bytes(8, "big")[:4]  # changes every ~1.2 hours
    assert sum(i.startswith(clock_prefix) for i in ids) < 5


async def test_the_server_refuses_an_action_on_a_head_it_does_not_have(
    app_server: Any, tmp_path: Path
) -> None:
    """An honest server refuses up front what every client would refuse as a fork."""
    from test_call_server import join, lobby_call, request

    from client.call.client import sign_action
    from client.core.errors import ServerError
    from protocol.conference_wire import ActInCall, action_signing_bytes
    from protocol.errors import ErrorCode
    from protocol.wire import Done

    async with lobby_call(app_server, tmp_path) as call:
        room, alice, bob = call["room"], call["alice"], call["bob"]
        call_id = (await join(alice, room)).state.call_id
        bob_joined = await join(bob, room)
        seat = next(p for p in bob_joined.state.participants if p.member == bob.member_key)
        admit = sign_action(alice, room, call_id, "admit", bob.member_key, seat.join.nonce)
        head = alice.verified
        for seq, digest in (
            (head.head_seq + 1, bytes(32)),  # beyond the chain
            (head.head_seq, bytes(32)),  # the head's seq with another record's hash
            (-1, b""),  # no head at all
        ):
            unsigned = msgspec.structs.replace(admit, head_seq=seq, head_hash=digest, sig=b"")
            signed = msgspec.structs.replace(
                unsigned, sig=crypto.sign(alice.m.signing_seed, action_signing_bytes(unsigned))
            )
            with pytest.raises(ServerError) as refused:
                await request(alice, ActInCall(alice.conn.next_id(), room, signed), Done)
            assert refused.value.code == ErrorCode.INVALID_MESSAGE
            assert "roster head" in str(refused.value)
        await request(alice, ActInCall(alice.conn.next_id(), room, admit), Done)


async def test_a_replayed_story_is_listed_once(app_server: Any, user: Any, tmp_path: Path) -> None:
    from protocol.chat_wire import ListStories, Stories

    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    alice, bob = town["Alice"], town["Bob"]
    await alice.arun("room", "create", town.space, "news", "--kind", "channel")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_gps(64, 48))
    await alice.arun("story", "post", town.space, "news", str(photo), "--caption", "once")
    routes = srv.app[ROUTES]
    honest = routes[ListStories]

    async def replaying(caller: Caller, message: ListStories) -> msgspec.Struct:
        reply = await honest(caller, message)
        assert isinstance(reply, Stories)
        return Stories(reply.id, reply.room_id, reply.stories * 2)

    routes[ListStories] = replaying
    result = await bob.arun("story", "list", town.space, "news", "--json")
    assert [s["caption"] for s in msgspec.json.decode(result.stdout)] == ["once"]
    assert "is not shown: it is listed twice (a replay)" in result.stderr
