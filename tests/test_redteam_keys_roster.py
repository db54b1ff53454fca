"""Red team (issue 8): room keys, rekeys, invites and the cached roster, attacked as a hostile
server, a removed member and a malicious current member would."""

from __future__ import annotations

import os

import msgspec
import pytest
from call_helpers import amake_town
from conftest import stored_records
from test_room_keys import raw_session
from test_tamper import Chain

from client.core import crypto
from client.core.connection import Connection
from client.core.errors import ServerError, VerificationError
from client.core.invites import parse_invite_link
from client.core.space import InvitePreview, ProfileInfo, chain, seal_invite
from protocol.chat_wire import FetchMessages, Messages
from protocol.errors import ErrorCode
from protocol.records import (
    Profile,
    RecordForbidden,
    RoomCreate,
    RoomKey,
    fingerprint,
)
from protocol.wire import Append, Appended, Envelope, InviteOpened, OpenInvite
from spaces.membership import OpenedInvite
from spaces.services import MEMBERSHIP, ROUTES, Caller


def membership(person, space_id):
    found = [m for m in person.keystore().load().memberships if m.space_id == space_id]
    return found[0] if found else None


def readable_profiles(srv, space_id: str, key: bytes) -> list[str]:
    names = []
    for record in stored_records(srv.data_dir / "salon.db", space_id):
        if isinstance(record.body, Profile):
            try:
                plain = crypto.secretbox_open(key, record.body.box)
            except VerificationError:
                continue
            names.append(msgspec.msgpack.decode(plain, type=ProfileInfo).display_name)
    return names


# -- the invite seal is the server's to swap, with anyone who holds the link ------------------


@pytest.mark.parametrize("attack", ["forged", "forged-after-kick", "stale"])
async def test_a_joiner_refuses_an_invite_key_the_chain_does_not_hold(app_server, user, attack):
    """``forged``: Mallory knows a multi-use link (it was posted where she reads it; or she
    was kicked without --ban) and the server helps her: it swaps the link's stored seal for
    one carrying a space key of her choosing. ``stale``: the server alone keeps the seal of
    epoch 0 and serves it after Bob's kick (epoch 1). Carol joins: she must not take that key
    (she would publish her profile under it, readable by Mallory or by Bob, who was kicked;
    and refuse every later rekey as not matching it)."""
    srv = await app_server()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    link = parse_invite_link(created["link"])
    _, old_seal = await srv.store.invite_seal(link.invite_id)
    key_0 = membership(alice, space_id).space_keys[0]
    if attack != "forged":  # the space is at epoch 1: the key is checked against the rekey
        await bob.ajson("join", created["link"], "--as", "Bob")
        await alice.arun("kick", space_id, "Bob")
    if attack == "stale":
        attackers = key_0  # Bob, kicked, holds it
        await srv.store.put_seals(space_id, [old_seal])
    else:
        epoch = max(membership(alice, space_id).space_keys)
        attackers = crypto.random_key()
        preview = InvitePreview(space_id, "Town", "", "Alice")
        await srv.store.put_seals(
            space_id, [seal_invite(link, space_id, epoch, attackers, preview)]
        )
    members = srv.app[MEMBERSHIP]

    async def serve_any_seal(invite_id: str, *_: bytes) -> OpenedInvite:
        """An honest server refuses a stale seal itself; this one serves it."""
        space_id, seal = await members.store.invite_seal(invite_id)
        roster = await members.roster(space_id)
        return OpenedInvite(space_id, roster.invites[invite_id], seal, roster)

    members.open_invite = serve_any_seal

    line = await carol.afail("join", created["link"], "--as", "Carol")
    assert "invite" in line and "space key" in line
    m = membership(carol, space_id)
    assert m is None or attackers not in m.space_keys.values()
    assert "Carol" not in readable_profiles(srv, space_id, attackers)


# -- a moderator who joined during the epoch must still be able to make a room ---------------


def test_a_member_who_joined_this_epoch_may_create_a_since_join_room():
    """Merge slip: "a member cannot commit to a room key older than its own" also refused the
    generation-0 commitment of a room its author made after joining (so `salon room create`
    failed for every moderator who joined since the last rekey). A room made after a join has
    no history hidden from that member; a room made before it still does."""
    chain = Chain()
    older = os.urandom(8).hex()
    chain.add(chain.owner, RoomCreate(older, "chat", 0, b"name"))
    mod = chain.join("moderator")  # generation 1 of epoch 0
    room = os.urandom(8).hex()
    chain.add(mod, RoomCreate(room, "chat", 0, b"name"))
    chain.add(mod, RoomKey(room, 0, 0, bytes(32)))
    assert chain.roster.member_generation(room, mod.public) == 0
    # The room made before the moderator joined: its history stays closed to them. Once
    # someone else made its key (committed generation 1 here), the moderator may not vouch
    # for the older generation 0. (With no key made yet there is no history, and whoever
    # makes it commits every generation: protocol/records.py, the maker rule.)
    assert chain.roster.member_generation(older, mod.public) == 1
    chain.add(chain.owner, RoomKey(older, 0, 1, bytes(32)))
    chain.refuses(chain.make(mod, RoomKey(older, 0, 0, bytes(32))), RecordForbidden)


# -- the server hands a reader the same message twice under its own seq ----------------------


async def test_a_message_served_twice_under_its_seq_is_shown_once(app_server, user):
    """The replay guard lets a message's own seq through again (a re-fetch), so a server
    that repeats a message under the same seq — in one page, or on the next page — made
    `salon read` show it twice."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    alice, bob = town["Alice"], town["Bob"]
    await alice.arun("room", "create", town.space, "general", "--kind", "chat")
    await alice.arun("send", town.space, "general", "pay Bob 10")
    await alice.arun("send", town.space, "general", "thanks")
    routes = srv.app[ROUTES]
    honest = routes[FetchMessages]

    async def doubling(caller: Caller, message: FetchMessages) -> msgspec.Struct:
        reply = await honest(caller, msgspec.structs.replace(message, after=0))
        assert isinstance(reply, Messages)
        first = reply.messages[0]
        shown = [first, first, *reply.messages[1:], first]
        return Messages(message.id, message.room_id, shown, reply.last_seq)

    routes[FetchMessages] = doubling
    texts = [m["text"] for m in await bob.ajson("read", town.space, "general")]
    assert texts == ["pay Bob 10", "thanks"]


# -- a plain member locks a room for a whole epoch by committing first, sharing nothing -------


async def test_a_withheld_room_key_commitment_is_refused_or_named(app_server, user):
    """Room keys of a new epoch are made lazily, first commitment wins. Right after a kick
    (epoch 1), Mallory, a plain member, commits to a key of her own for the room's epoch-1
    key and seals it to nobody: everyone was told "no member has shared this room's current
    key with you yet; it arrives as soon as ..." — it never arrives, and nothing said whom
    to kick. Now a commitment must come with the key sealed to every member lacking one;
    if what she seals is junk, everyone's error names her, and kicking her repairs the room."""
    srv = await app_server()
    alice, bob, mallory, carol = user("alice"), user("bob"), user("mallory"), user("carol")
    created = await alice.ajson("space", "create", "Hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    for person, name in ((bob, "Bob"), (mallory, "Mallory"), (carol, "Carol")):
        await person.ajson("join", created["link"], "--as", name)
    room = await alice.ajson("room", "create", space_id, "general", "--kind", "chat")
    room_id = room["room_id"]
    await alice.arun("send", space_id, "general", "before")
    await alice.arun("kick", space_id, "Carol")
    dave = user("dave")
    await dave.ajson("join", created["link"], "--as", "Dave")  # generation 1
    mallory_m = membership(mallory, space_id)
    async with raw_session(mallory, space_id) as session:
        roster = session.verified
        assert roster.epoch == 1 and (room_id, 1) not in roster.room_key_epochs
        # Bare, for generation 0 or for the newest generation only: refused.
        for generation in (0, 1):
            bare = RoomKey(room_id, 1, generation, os.urandom(32))
            records = chain(session.m, space_id, roster, [bare])
            with pytest.raises(ServerError) as refused:
                await session.conn.request(Append(session.conn.next_id(), records), Appended)
            assert refused.value.code == ErrorCode.INVALID_MESSAGE
        bogus = RoomKey(room_id, 1, 0, os.urandom(32))
        records = chain(session.m, space_id, roster, [bogus])
        # With junk sealed to every member (the server cannot tell junk from a key).
        junk = [
            Envelope(
                room_id,
                1,
                member.key,
                session.member_key,
                crypto.seal_key(
                    mallory_m.box_secret,
                    member.box_key,
                    space_id,
                    room_id,
                    1,
                    0,
                    crypto.random_key(),
                ),
            )
            for member in roster.members.values()
        ]
        await session.conn.request(Append(session.conn.next_id(), records, junk), Appended)
    line = await alice.afail("send", space_id, "general", "after")
    assert fingerprint(session.member_key) in line, line
    await alice.arun("kick", space_id, "Mallory")
    await alice.arun("send", space_id, "general", "after Mallory")
    texts = [m["text"] for m in await bob.ajson("read", space_id, "general")]
    assert texts == ["before", "after Mallory"]
    texts = [m["text"] for m in await dave.ajson("read", space_id, "general")]
    assert texts == ["after Mallory"]


# -- whoever has only an invite's id (the URL's path) learns nothing of its state -------------


async def test_an_invite_id_without_its_secret_reveals_nothing(app_server, user):
    """The invite id travels in the link's path (proxies, history); the secret in the
    fragment. The server answered OpenInvite with "revoked" / "expired" / "used up" / "predates
    a membership change" before checking the invite key's signature, so the id alone told
    whether the link was dead and whether someone had left or been removed."""
    srv = await app_server()
    alice = user("alice")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    made = await alice.ajson("invite", "create", space_id, "--uses", "3")
    link = parse_invite_link(made["link"])
    await alice.arun("invite", "revoke", space_id, link.invite_id)
    conn = await Connection.open(link.server)
    try:
        with pytest.raises(ServerError) as refused:
            await conn.request(
                OpenInvite(conn.next_id(), link.invite_id, crypto.sign(os.urandom(32), b"x")),
                InviteOpened,
            )
    finally:
        await conn.close()
    assert refused.value.code == ErrorCode.UNAUTHENTICATED
    assert "revoked" not in str(refused.value)
    # With the secret, the state is told as before.
    assert "revoked" in await user("carol").afail("join", made["link"])


async def test_an_invite_id_without_its_secret_cannot_use_up_its_attempts(app_server, user):
    """The per-invite attempt limit was taken before the signature was checked: anyone who
    saw a link's path could keep its real holders out."""
    srv = await app_server(
        {
            "limits": {
                "join_attempts_per_minute_per_address": 1000,
                "join_attempts_per_minute_per_invite": 3,
            }
        }
    )
    alice = user("alice")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    link = parse_invite_link(created["link"])
    conn = await Connection.open(link.server)
    try:
        for _ in range(10):
            with pytest.raises(ServerError) as refused:
                bad = crypto.sign(os.urandom(32), b"x")
                await conn.request(OpenInvite(conn.next_id(), link.invite_id, bad), InviteOpened)
            assert refused.value.code == ErrorCode.UNAUTHENTICATED
    finally:
        await conn.close()
    await user("bob").ajson("join", created["link"], "--as", "Bob")


# -- a replay outside the reader's window -----------------------------------------------------


async def test_a_message_replayed_later_outside_the_window_is_refused(app_server, user):
    """The replay guard remembers what one reader saw in one run: a server that, an hour
    later, serves Alice's old message again under a new seq is caught only if the original
    is in the same fetch. Read with --since (or --follow, started after it), the copy was
    shown as new. Its signed creation time gives it away."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    alice, bob = town["Alice"], town["Bob"]
    await alice.arun("room", "create", town.space, "general", "--kind", "chat")
    await alice.arun("send", town.space, "general", "pay Bob 10")
    await alice.arun("send", town.space, "general", "thanks")
    routes = srv.app[ROUTES]
    honest = routes[FetchMessages]

    async def replaying(caller: Caller, message: FetchMessages) -> msgspec.Struct:
        reply = await honest(caller, msgspec.structs.replace(message, after=0))
        assert isinstance(reply, Messages)
        first, last = reply.messages[0], reply.messages[-1]
        copy = msgspec.structs.replace(first, seq=last.seq + 1, sent_at=last.sent_at + 3600)
        shown = [m for m in [*reply.messages, copy] if m.seq > message.after]
        return Messages(message.id, message.room_id, shown, copy.seq)

    routes[FetchMessages] = replaying
    result = await bob.arun("read", town.space, "general", "--since", "1", "--json")
    assert [m["text"] for m in msgspec.json.decode(result.stdout)] == ["thanks"]
    assert "message #3 is not shown" in result.stderr, result.stderr
