"""Room keys are bound to what they are for, and history visibility is enforced by keys
(issue 8, points 1 and 9).

Attacks: a server relabelling an old epoch's envelope as the new epoch (so the room would
keep a key a kicked member kept); a kicked member sealing her own chosen key to a member;
a member sealing a key other than the one committed to on the chain; a joiner of a
``since-join`` room trying every key it holds on what was said before it joined.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec
import pytest
from chat_support import query
from conftest import SalonUser
from test_tamper import Chain, Key

from client.core import chatcrypto, crypto
from client.core.connection import Connection
from client.core.errors import VerificationError
from client.core.space import SpaceSession
from protocol import roomkeys
from protocol.records import (
    RecordError,
    RecordForbidden,
    Rekey,
    Remove,
    RoomCreate,
    RoomKey,
    fingerprint,
)
from protocol.wire import (
    Append,
    Appended,
    Authenticate,
    Envelope,
    EnvelopeHolders,
    GetEnvelopeHolders,
    Welcome,
    auth_statement,
)
from spaces.services import MEMBERSHIP

# -- the roster's rules ------------------------------------------------------------------------


def _room(chain: Chain, history: str = "since-join") -> str:
    room_id = os.urandom(8).hex()
    chain.add(chain.owner, RoomCreate(room_id, "chat", 0, b"name", history=history))  # type: ignore[arg-type]
    return room_id


def test_one_commitment_per_room_key_and_only_for_keys_that_exist():
    chain = Chain()
    bob = chain.join()
    room = _room(chain)
    chain.add(chain.owner, RoomKey(room, 0, 0, bytes(32)))
    # A second key for the same (room, epoch, generation): the first commitment stands.
    chain.refuses(chain.make(bob, RoomKey(room, 0, 0, bytes([1]) * 32)), RecordForbidden)
    # Not for an epoch that is not the current one, nor a generation not reached yet.
    chain.refuses(chain.make(bob, RoomKey(room, 1, 0, bytes(32))), RecordError)
    chain.refuses(chain.make(bob, RoomKey(room, 0, 2, bytes(32))), RecordError)
    chain.join()  # generation 2 exists now
    chain.add(bob, RoomKey(room, 0, 2, bytes(32)))
    # A shared room never ratchets on joins: generation 0 only.
    shared = _room(chain, "shared")
    chain.refuses(chain.make(bob, RoomKey(shared, 0, 1, bytes(32))), RecordError)
    assert chain.roster.room_generation(room) == 2 and chain.roster.room_generation(shared) == 0


def test_only_members_of_an_epoch_may_seal_its_keys():
    chain = Chain()
    bob, carol = chain.join(), chain.join()
    chain.add(chain.owner, Remove(carol.public, False))
    chain.add(chain.owner, Rekey(1, 0, b"prev"))
    roster = chain.roster
    assert roster.member_during(carol.public, 0) and not roster.member_during(carol.public, 1)
    assert roster.member_during(bob.public, 0) and roster.member_during(bob.public, 1)
    assert not roster.member_during(Key().public, 0)
    assert roster.generation == 0  # a new epoch starts at generation 0


def test_a_sealed_key_names_its_space_room_epoch_and_generation():
    plain = roomkeys.sealed_key("space", "room", 0, 3, bytes(32))
    assert roomkeys.open_sealed_key(plain, "space", "room", 0).generation == 3
    for relabelled in (("space", "room", 1), ("space", "other", 0), ("other", "room", 0)):
        with pytest.raises(roomkeys.KeyBindingError, match="relabelled"):
            roomkeys.open_sealed_key(plain, *relabelled)
    with pytest.raises(roomkeys.KeyBindingError):
        roomkeys.open_sealed_key(bytes(32), "space", "room", 0)  # a bare key, as before


def test_known_answers_for_sealed_keys_commitments_and_the_ratchet():
    """Pinned values (for a second implementation), and each recomputed from its definition."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = bytes(range(32))
    sealed = roomkeys.sealed_key("space0", "room0", 1, 2, key)
    assert sealed.hex() == (
        "96b373616c6f6e2f7365616c65642d6b65792f7631a6737061636530a5726f6f6d300102c420"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    )
    assert sealed == msgspec.msgpack.encode(["salon/sealed-key/v1", "space0", "room0", 1, 2, key])
    commit = roomkeys.key_commitment("space0", "room0", 1, 2, key)
    assert commit.hex() == "6e1831ebb9cee3f25025242332fd69c9be807fc5c04036c18b078abea7deac8f"
    assert (
        commit
        == hashlib.sha256(
            b"salon/room-key-commit/v1\x00" + msgspec.msgpack.encode(["space0", "room0", 1, 2, key])
        ).digest()
    )
    next_key = roomkeys.ratchet(key, "space0", "room0", 1, 3)
    assert next_key.hex() == "dbb9052c1504e6a4b75104a9d96f6652247e3c897a08f38f2c6ae3d466fc7c60"
    info = b"salon/room-key-ratchet/v1\x00" + msgspec.msgpack.encode(["space0", "room0", 1, 3])
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    assert next_key == hkdf.derive(key)
    two = roomkeys.advance(key, "space0", "room0", 1, 0, 2)
    assert two.hex() == "eb4ab9c50cbcb0dc9ed6cd98ce59d2934214f67e0f4f9fd43c05978c73bbf7a9"
    assert roomkeys.frame(3, b"box").hex() == "00000003626f78"
    assert roomkeys.unframe(bytes.fromhex("00000003626f78")) == (3, b"box")
    with pytest.raises(roomkeys.KeyBindingError):
        roomkeys.advance(key, "space0", "room0", 1, 2, 1)  # never backwards


# -- helpers ---------------------------------------------------------------------------------


def membership(person: SalonUser, space_id: str) -> Any:
    (m,) = [m for m in person.keystore().load().memberships if m.space_id == space_id]
    return m


def every_key(m: Any, space_id: str, room_id: str, generations: int = 8) -> list[bytes]:
    """Every key a device could try: each room key it holds, advanced to every later
    generation, and every space key."""
    keys = list(m.space_keys.values())
    for epoch, held in m.room_keys.get(room_id, {}).items():
        for g in range(held.generation, held.generation + generations):
            keys.append(roomkeys.advance(held.key, space_id, room_id, epoch, held.generation, g))
    return keys


def opens_any(
    db_path: Any, space_id: str, room_id: str, keys: Iterable[bytes], after: int = 0
) -> list[str]:
    """The texts of stored messages (seq > after) that any of ``keys`` decrypts."""
    rows = query(
        db_path,
        "SELECT seq, sender, client_id, epoch, ttl, box FROM messages"
        " WHERE space_id = ? AND room_id = ? AND seq > ? ORDER BY seq",
        space_id,
        room_id,
        after,
    )
    opened = []
    keys = list(keys)
    for _seq, sender, client_id, epoch, ttl, framed in rows:
        _generation, box = roomkeys.unframe(bytes(framed))
        header = chatcrypto.MessageHeader(
            space_id, room_id, epoch, bytes(sender), bytes(client_id), ttl
        )
        for key in keys:
            try:
                opened.append(chatcrypto.open_message(key, header, box).text)
            except VerificationError:
                continue
    return opened


def member_key(m: Any) -> bytes:
    return crypto.public_signing_key(m.signing_seed)


def box_key(m: Any) -> bytes:
    return crypto.public_box_key(m.box_secret)


@contextlib.asynccontextmanager
async def raw_session(person: SalonUser, space_id: str) -> AsyncIterator[SpaceSession]:
    """A modified client: authenticated and synced, but without the honest client's
    automatic key sharing (open_space would seal the right keys first)."""
    m = membership(person, space_id)
    conn = await Connection.open(m.server)
    try:
        statement = auth_statement(conn.origin, "member", space_id, conn.nonce)
        signature = crypto.sign(m.signing_seed, statement)
        await conn.request(
            Authenticate(conn.next_id(), space_id, member_key(m), signature), Welcome
        )
        session = SpaceSession(person.keystore(), m, conn)
        await session.sync()
        yield session
    finally:
        await conn.close()


# -- point 1: after a kick, neither a relabelling server nor the kicked member's key --------


async def test_relabelled_envelope_and_kicked_members_key_are_refused(app_server, user):
    srv = await app_server()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = await alice.ajson("space", "create", "Hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    await carol.ajson("join", created["link"], "--as", "Carol")
    room = await alice.ajson("room", "create", space_id, "general", "--kind", "chat")
    room_id = room["room_id"]
    await alice.arun("send", space_id, "general", "before the kick")
    await bob.arun("read", space_id, "general")
    await carol.arun("read", space_id, "general")
    kept = membership(carol, space_id)  # everything Carol's device holds, kept after the kick
    bob_m = membership(bob, space_id)
    assert set(bob_m.room_keys[room_id]) == {0}

    await alice.arun("kick", space_id, "Carol")
    await alice.arun("send", space_id, "general", "after the kick")  # Alice makes epoch 1

    # The server hides Alice's epoch-1 envelope from Bob and offers instead (a) Alice's
    # epoch-0 envelope relabelled as epoch 1 — the key Carol kept — or (b) a key Carol
    # chose, sealed to Bob by Carol's kept identity, correctly labelled for epoch 1.
    store = srv.store
    (old,) = [
        e for e in await store.envelopes(space_id, room_id, member_key(bob_m), 0) if e.epoch == 0
    ]
    relabelled = msgspec.structs.replace(old, epoch=1)
    chosen = Envelope(
        room_id,
        1,
        member_key(bob_m),
        member_key(kept),
        crypto.seal_key(
            kept.box_secret, box_key(bob_m), space_id, room_id, 1, 0, crypto.random_key()
        ),
    )
    membership_logic = srv.app[MEMBERSHIP]
    honest = membership_logic.envelopes
    offered: list[Envelope] = []

    async def served(space: str, member: bytes, scope: str, min_epoch: int) -> list[Envelope]:
        found = await honest(space, member, scope, min_epoch)
        if member == member_key(bob_m) and scope == room_id and offered:
            return [e for e in found if e.epoch != 1] + offered
        return found

    membership_logic.envelopes = served
    for attack, why in ((relabelled, "relabelled"), (chosen, "not a member in its epoch")):
        offered[:] = [attack]
        line = await bob.afail("send", space_id, "general", "Bob under a bad key?")
        assert "refused this room's key for epoch 1" in line and why in line, line
        assert 1 not in membership(bob, space_id).room_keys[room_id]
        result = await bob.arun("read", space_id, "general", "--json")
        assert [m["text"] for m in json.loads(result.stdout)] == ["before the kick"]
        assert "warning: message #2 is not shown: refused" in result.stderr

    # Served honestly again, nothing was lost: Bob refused (and dropped) what he was given,
    # so Alice's next command seals him the committed key again.
    offered.clear()
    await alice.arun("rooms", space_id)
    await bob.arun("send", space_id, "general", "Bob, after the kick")
    texts = [m["text"] for m in await bob.ajson("read", space_id, "general")]
    assert texts == ["before the kick", "after the kick", "Bob, after the kick"]

    # Carol decrypts nothing posted after the kick, with every key she ever held.
    candidates = every_key(kept, space_id, room_id)
    db = srv.data_dir / "salon.db"
    assert opens_any(db, space_id, room_id, candidates) == ["before the kick"]
    assert opens_any(db, space_id, room_id, candidates, after=1) == []


# -- point 1: a member who seals a key other than the committed one is caught ---------------


async def test_a_swapped_room_key_is_caught_and_named(app_server, user):
    srv = await app_server()
    alice, bob, dave = user("alice"), user("bob"), user("dave")
    created = await alice.ajson("space", "create", "Hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    room = await alice.ajson(
        "room", "create", space_id, "general", "--kind", "chat", "--history", "shared"
    )
    room_id = room["room_id"]
    await alice.arun("send", space_id, "general", "hello")
    await dave.ajson("join", created["link"], "--as", "Dave")

    # Bob (a modified client) races the honest members: he seals Dave a key of his own for
    # the room's committed epoch-0 key, through the real server (which cannot tell).
    bob_m = membership(bob, space_id)
    async with raw_session(bob, space_id) as session:
        conn = session.conn
        roster = session.verified
        dave_m = membership(dave, space_id)
        bogus = crypto.seal_key(
            bob_m.box_secret, box_key(dave_m), space_id, room_id, 0, 0, crypto.random_key()
        )
        holders = await conn.request(
            GetEnvelopeHolders(conn.next_id(), room_id, 0), EnvelopeHolders
        )
        assert member_key(dave_m) not in holders.recipients  # nobody honest sealed to Dave yet
        swapped = Envelope(room_id, roster.epoch, member_key(dave_m), member_key(bob_m), bogus)
        await conn.request(Append(conn.next_id(), [], [swapped]), Appended)
    result = await dave.arun("read", space_id, "general", "--json")
    assert json.loads(result.stdout) == []
    assert "different key than the one committed" in result.stderr, result.stderr
    assert fingerprint(member_key(bob_m)) in result.stderr  # and who sealed it
    assert (
        room_id not in membership(dave, space_id).room_keys
        or not membership(dave, space_id).room_keys[room_id]
    )
    # Dave refused Bob's key and dropped its envelope: the next command of a member who
    # holds the committed key seals it to him, and nothing is lost.
    await alice.arun("rooms", space_id)
    assert [m["text"] for m in await dave.ajson("read", space_id, "general")] == ["hello"]
    await dave.arun("send", space_id, "general", "in the same room as everyone")
    texts = [m["text"] for m in await alice.ajson("read", space_id, "general")]
    assert texts == ["hello", "in the same room as everyone"]


async def test_a_bogus_commitment_for_a_later_generation_is_named(app_server, user):
    """A member commits (first) a key for the generation a join started that does not derive
    from the epoch's key: every member who holds the real key sees the conflict and who made
    it; nobody encrypts under the bogus key."""
    srv = await app_server()
    alice, bob, dave = user("alice"), user("bob"), user("dave")
    created = await alice.ajson("space", "create", "Hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    room = await alice.ajson("room", "create", space_id, "general", "--kind", "chat")
    await alice.arun("send", space_id, "general", "hello")
    await dave.ajson("join", created["link"], "--as", "Dave")
    async with raw_session(bob, space_id) as session:
        roster = session.verified
        generation = roster.room_generation(room["room_id"])
        assert (room["room_id"], roster.epoch, generation) not in roster.room_keys
        bogus = RoomKey(room["room_id"], roster.epoch, generation, os.urandom(32))
        await session.append([bogus])
    line = await alice.afail("send", space_id, "general", "under which key?")
    assert "room key conflict" in line
    assert fingerprint(member_key(membership(bob, space_id))) in line
    # Nobody honest seals Dave the disowned key; kicking the member who made it (a new
    # epoch, a new key) repairs the room for everyone.
    assert not membership(dave, space_id).room_keys.get(room["room_id"])
    await alice.arun("kick", space_id, "Bob")
    await alice.arun("send", space_id, "general", "after Bob")
    assert [m["text"] for m in await dave.ajson("read", space_id, "general")] == ["after Bob"]


# -- point 9: history visibility is a setting of the room, enforced by keys ------------------


async def test_since_join_rooms_hide_history_from_joiners_and_shared_rooms_do_not(app_server, user):
    srv = await app_server()
    alice, bob, dave = user("alice"), user("bob"), user("dave")
    created = await alice.ajson("space", "create", "Hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    closed = await alice.ajson("room", "create", space_id, "closed", "--kind", "chat")
    shared = await alice.ajson(
        "room", "create", space_id, "open", "--kind", "chat", "--history", "shared"
    )
    assert (closed["history"], shared["history"]) == ("since-join", "shared")
    for room in ("closed", "open"):
        await alice.arun("send", space_id, room, f"{room}: before Dave")
        await bob.arun("send", space_id, room, f"{room}: Bob before Dave")

    await dave.ajson("join", created["link"], "--as", "Dave")
    await bob.arun("rooms", space_id)  # any key holder's command seals Dave his keys
    for room in ("closed", "open"):
        await alice.arun("send", space_id, room, f"{room}: after Dave")

    result = await dave.arun("read", space_id, "closed", "--json")
    assert [m["text"] for m in json.loads(result.stdout)] == ["closed: after Dave"]
    assert "2 message(s) are not readable" in result.stderr
    assert [m["text"] for m in await dave.ajson("read", space_id, "open")] == [
        "open: before Dave",
        "open: Bob before Dave",
        "open: after Dave",
    ]
    # Existing members advanced locally (no new envelopes) and read everything.
    assert len(await bob.ajson("read", space_id, "closed")) == 3
    await dave.arun("send", space_id, "closed", "closed: Dave")
    assert [m["text"] for m in await alice.ajson("read", space_id, "closed")][-1] == (
        "closed: Dave"
    )

    # At the crypto level: every key Dave's device holds for the closed room, at every
    # generation it can reach, opens nothing sent before his join.
    dave_m = membership(dave, space_id)
    held = dave_m.room_keys[closed["room_id"]][0]
    assert held.generation >= 1  # sealed at the generation his join started, not before
    db = srv.data_dir / "salon.db"
    candidates = every_key(dave_m, space_id, closed["room_id"])
    assert opens_any(db, space_id, closed["room_id"], candidates) == [
        "closed: after Dave",
        "closed: Dave",
    ]
    # In the shared room the epoch's key is the same for everyone (generation 0).
    assert dave_m.room_keys[shared["room_id"]][0].generation == 0


async def test_a_moderator_who_joined_this_epoch_creates_rooms_others_read(app_server, user):
    """Whoever makes a room's key for an epoch commits every generation of it, also older
    ones than its own join (it made them all): a moderator who joined after others creates a
    since-join room, and a member who joined before reads and writes in it."""
    srv = await app_server()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = await alice.ajson("space", "create", "Town hall", "--server", srv.url, "--as", "A")
    space = created["space_id"]
    await bob.arun("join", created["link"], "--as", "Bob")
    mod_link = await alice.ajson("invite", "create", space, "--role", "moderator")
    await carol.arun("join", mod_link["link"], "--as", "Carol")
    await carol.arun("room", "create", space, "corner", "--kind", "chat")
    await carol.arun("send", space, "corner", "from Carol")
    await bob.arun("send", space, "corner", "from Bob")
    for person in (alice, bob, carol):
        texts = [m["text"] for m in await person.ajson("read", space, "corner")]
        assert texts == ["from Carol", "from Bob"], texts
