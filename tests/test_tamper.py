"""The server is not trusted for membership (DESIGN §1.3, issue 2).

Unit level: :class:`protocol.records.Roster` refuses every bad record with the right error
class. Integration level: a server whose SQLite file was altered, that drops or forks
history, or that inserts forged records; and an in-process server that *serves* altered
chains (so the client's own verification, not the server's, has to catch it).
"""

from __future__ import annotations

import copy
import os
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from conftest import SalonServer, SalonUser, assert_one_line_error, stored_records
from nacl.signing import SigningKey

from protocol.errors import ProtocolError
from protocol.records import (
    ChainConflict,
    Genesis,
    InviteCreate,
    InviteRevoke,
    Join,
    Leave,
    Profile,
    Record,
    RecordBody,
    RecordError,
    RecordForbidden,
    Rekey,
    Remove,
    RoleChange,
    Roster,
    SpaceMeta,
    decode_record,
    derive_space_id,
    encode_record,
    join_statement,
    record_hash,
    signing_bytes,
)
from spaces.services import MEMBERSHIP

# -- building chains by hand -----------------------------------------------------------------


class Key:
    """A member (or invite, or attacker) key pair."""

    def __init__(self) -> None:
        self.signing = SigningKey(os.urandom(32))
        self.public = bytes(self.signing.verify_key)
        self.box_key = os.urandom(32)  # stands in for an X25519 public key

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing.sign(message).signature)


def signed(author: Key, space_id: str, seq: int, prev: bytes, body: RecordBody) -> Record:
    unsigned = Record(space_id, seq, prev, author.public, int(time.time()), body)
    return msgspec.structs.replace(unsigned, sig=author.sign(signing_bytes(unsigned)))


class Chain:
    """A valid chain under construction, with the roster it describes kept in step."""

    def __init__(self) -> None:
        self.owner = Key()
        genesis = Genesis(self.owner.box_key, os.urandom(16))
        self.space_id = derive_space_id(self.owner.public, genesis)
        self.roster = Roster(self.space_id, self.owner.public)
        self.records: list[Record] = []
        self.add(self.owner, genesis)

    def make(self, author: Key, body: RecordBody) -> Record:
        """The next record (not applied): right seq and prev, signed by ``author``."""
        return signed(author, self.space_id, self.roster.head_seq + 1, self.roster.head_hash, body)

    def add(self, author: Key, body: RecordBody) -> Record:
        record = self.make(author, body)
        self.roster.apply(record)
        self.records.append(record)
        return record

    def refuses(self, record: Record, error: type[ProtocolError]) -> pytest.ExceptionInfo[Any]:
        """Assert the roster refuses ``record`` with ``error`` and is left as it was."""
        before = copy.deepcopy(self.roster)
        with pytest.raises(error) as info:
            self.roster.apply(record)
        # Same verdict from a full replay (what a client does), and nothing was applied.
        with pytest.raises(error):
            Roster.from_records(self.space_id, [*self.records, record])
        assert self.roster.head_seq == before.head_seq
        assert self.roster.members.keys() == before.members.keys()
        return info

    def invite(self, author: Key, role: str = "member", max_uses: int = 5) -> tuple[str, Key]:
        invite_id = os.urandom(8).hex()
        key = Key()
        expires = int(time.time()) + 3600
        self.add(author, InviteCreate(invite_id, key.public, role, expires, max_uses))  # type: ignore[arg-type]
        return invite_id, key

    def join_body(self, member: Key, invite_id: str, invite_key: Key) -> Join:
        statement = join_statement(self.space_id, member.public, member.box_key, invite_id)
        return Join(invite_id, member.box_key, invite_key.sign(statement))

    def join(self, role: str = "member") -> Key:
        invite_id, invite_key = self.invite(self.owner, role)
        member = Key()
        self.add(member, self.join_body(member, invite_id, invite_key))
        return member


# -- the rules, record by record -----------------------------------------------------------------


def test_a_valid_chain_replays_to_the_same_roster():
    chain = Chain()
    bob = chain.join()
    mod = chain.join("moderator")
    chain.add(chain.owner, RoleChange(bob.public, "moderator"))
    chain.add(chain.owner, Remove(bob.public, ban=False))
    assert chain.roster.needs_rekey
    chain.add(chain.owner, Rekey(1, 0, b"x" * 40))
    assert not chain.roster.needs_rekey

    replayed = Roster.from_records(chain.space_id, chain.records)
    assert replayed.head_hash == chain.roster.head_hash == record_hash(chain.records[-1])
    assert {k: m.role for k, m in replayed.members.items()} == {
        chain.owner.public: "owner",
        mod.public: "moderator",
    }
    assert replayed.epoch == 1
    assert replayed.departed == {bob.public: False}


def test_forged_signature():
    chain = Chain()
    record = chain.make(chain.owner, InviteRevoke("nothing"))
    bad_sig = bytes([record.sig[0] ^ 1]) + record.sig[1:]
    chain.refuses(msgspec.structs.replace(record, sig=bad_sig), RecordError)
    chain.refuses(msgspec.structs.replace(record, sig=b""), RecordError)


def test_record_signed_by_someone_else_than_its_author():
    chain = Chain()
    mallory = Key()
    body = RoleChange(mallory.public, "owner")
    unsigned = Record(chain.space_id, 1, chain.roster.head_hash, chain.owner.public, 0, body)
    forged = msgspec.structs.replace(unsigned, sig=mallory.sign(signing_bytes(unsigned)))
    chain.refuses(forged, RecordError)


def test_body_changed_after_signing():
    chain = Chain()
    bob = chain.join()
    record = chain.make(chain.owner, RoleChange(bob.public, "moderator"))
    escalated = msgspec.structs.replace(record, body=RoleChange(bob.public, "owner"))
    chain.refuses(escalated, RecordError)
    later = msgspec.structs.replace(record, created_at=record.created_at + 1)
    chain.refuses(later, RecordError)


def test_wrong_prev_hash_and_seq():
    chain = Chain()
    chain.join()
    body = InviteRevoke("x")
    head, seq = chain.roster.head_hash, chain.roster.head_seq + 1
    wrong_prev = signed(chain.owner, chain.space_id, seq, bytes(32), body)
    chain.refuses(wrong_prev, ChainConflict)
    stale_prev = signed(chain.owner, chain.space_id, seq, record_hash(chain.records[0]), body)
    chain.refuses(stale_prev, ChainConflict)
    gap = signed(chain.owner, chain.space_id, seq + 1, head, body)
    chain.refuses(gap, ChainConflict)
    replay = chain.records[-1]
    chain.refuses(replay, ChainConflict)


def test_records_of_another_space_or_without_genesis():
    chain, other = Chain(), Chain()
    moved = signed(chain.owner, other.space_id, 1, chain.roster.head_hash, InviteRevoke("x"))
    chain.refuses(moved, RecordError)
    with pytest.raises(RecordError):
        Roster.from_records(other.space_id, chain.records)  # genesis does not match the id
    with pytest.raises(RecordError):
        Roster.from_records(chain.space_id, [])
    second_genesis = chain.make(chain.owner, Genesis(os.urandom(32), os.urandom(16)))
    chain.refuses(second_genesis, RecordError)


def test_non_member_records():
    chain = Chain()
    mallory = Key()
    chain.refuses(chain.make(mallory, RoleChange(mallory.public, "owner")), RecordForbidden)
    chain.refuses(chain.make(mallory, Profile(0, b"box")), RecordForbidden)
    chain.refuses(chain.make(mallory, Remove(chain.owner.public, ban=True)), RecordForbidden)


def test_member_trying_to_kick_or_demote_the_owner():
    chain = Chain()
    bob, carol = chain.join(), chain.join()
    chain.refuses(chain.make(bob, Remove(chain.owner.public, ban=False)), RecordForbidden)
    chain.refuses(chain.make(bob, Remove(carol.public, ban=False)), RecordForbidden)  # a peer
    chain.refuses(chain.make(bob, RoleChange(chain.owner.public, "member")), RecordForbidden)
    chain.refuses(chain.make(bob, RoleChange(bob.public, "owner")), RecordForbidden)
    mod = chain.join("moderator")
    chain.refuses(chain.make(mod, Remove(chain.owner.public, ban=False)), RecordForbidden)
    chain.refuses(chain.make(mod, RoleChange(bob.public, "owner")), RecordForbidden)
    chain.add(mod, Remove(bob.public, ban=False))  # below the moderator: allowed


def test_member_creating_or_revoking_an_invite():
    chain = Chain()
    bob = chain.join()
    invite = InviteCreate("bobsinvite", Key().public, "member", int(time.time()) + 60, 1)
    chain.refuses(chain.make(bob, invite), RecordForbidden)
    invite_id, _ = chain.invite(chain.owner)
    chain.refuses(chain.make(bob, InviteRevoke(invite_id)), RecordForbidden)
    chain.refuses(chain.make(bob, SpaceMeta(0, b"renamed")), RecordForbidden)
    # Nobody may hand out ownership by link, nor a moderator invite above itself.
    owner_invite = msgspec.structs.replace(invite, role="owner")
    chain.refuses(chain.make(chain.owner, owner_invite), RecordForbidden)
    unusable = msgspec.structs.replace(invite, max_uses=0)
    chain.refuses(chain.make(chain.owner, unusable), RecordForbidden)


def test_join_without_a_valid_invite_signature():
    chain = Chain()
    invite_id, invite_key = chain.invite(chain.owner)
    joiner = Key()
    good = chain.join_body(joiner, invite_id, invite_key)
    unsigned = msgspec.structs.replace(good, invite_sig=b"")
    chain.refuses(chain.make(joiner, unsigned), RecordForbidden)
    by_joiner = chain.join_body(joiner, invite_id, joiner)  # signed by the wrong key
    chain.refuses(chain.make(joiner, by_joiner), RecordForbidden)
    # An invite signature admits one member key: someone else cannot reuse it.
    thief = Key()
    stolen = Join(invite_id, thief.box_key, good.invite_sig)
    chain.refuses(chain.make(thief, stolen), RecordForbidden)
    unknown = chain.join_body(joiner, "noinvite", invite_key)
    chain.refuses(chain.make(joiner, unknown), RecordForbidden)
    chain.add(joiner, good)
    chain.refuses(chain.make(joiner, good), RecordForbidden)  # already a member


def test_invite_used_beyond_max_uses():
    chain = Chain()
    invite_id, invite_key = chain.invite(chain.owner, max_uses=2)
    for _ in range(2):
        member = Key()
        chain.add(member, chain.join_body(member, invite_id, invite_key))
    late = Key()
    chain.refuses(chain.make(late, chain.join_body(late, invite_id, invite_key)), RecordForbidden)


def test_revoked_invite():
    chain = Chain()
    invite_id, invite_key = chain.invite(chain.owner)
    chain.add(chain.owner, InviteRevoke(invite_id))
    late = Key()
    chain.refuses(chain.make(late, chain.join_body(late, invite_id, invite_key)), RecordForbidden)


def test_banned_key_rejoining():
    chain = Chain()
    eve, frank = chain.join(), chain.join()
    chain.add(chain.owner, Remove(eve.public, ban=True))
    chain.add(chain.owner, Remove(frank.public, ban=False))
    invite_id, invite_key = chain.invite(chain.owner)
    chain.refuses(chain.make(eve, chain.join_body(eve, invite_id, invite_key)), RecordForbidden)
    chain.refuses(chain.make(eve, Profile(0, b"box")), RecordForbidden)  # no longer a member
    chain.add(frank, chain.join_body(frank, invite_id, invite_key))  # kicked, not banned


def test_last_owner_cannot_leave_others_behind():
    chain = Chain()
    bob = chain.join()
    chain.refuses(chain.make(chain.owner, Leave()), RecordForbidden)
    chain.add(bob, Leave())
    chain.add(chain.owner, Leave())  # alone now: allowed
    assert chain.roster.members == {}


def test_rekey_must_go_one_epoch_up():
    chain = Chain()
    chain.refuses(chain.make(chain.owner, Rekey(2, 1, b"x")), RecordError)
    chain.refuses(chain.make(chain.owner, Profile(1, b"box")), RecordError)  # unknown epoch
    chain.refuses(chain.make(chain.owner, Rekey(1, 1, b"x")), RecordError)  # prev not below
    chain.add(chain.owner, Rekey(1, 0, b"x"))
    chain.refuses(chain.make(chain.owner, Rekey(1, 0, b"x")), RecordError)


def test_every_byte_flip_of_a_join_is_refused():
    chain = Chain()
    invite_id, invite_key = chain.invite(chain.owner)
    joiner = Key()
    record = chain.make(joiner, chain.join_body(joiner, invite_id, invite_key))
    data = encode_record(record)
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[i] ^= flip
            try:
                bad = decode_record(bytes(damaged))
            except (RecordError, UnicodeDecodeError):  # see test_decode_record_bad_utf8
                continue
            with pytest.raises(ProtocolError):
                Roster.from_records(chain.space_id, [*chain.records, bad])
    Roster.from_records(chain.space_id, [*chain.records, record])  # the intact one is fine


def test_decode_record_bad_utf8():
    chain = Chain()
    data = encode_record(chain.records[0])
    space_id = chain.space_id.encode()
    with pytest.raises(RecordError):
        decode_record(data.replace(space_id, b"\xff" + space_id[1:]))


# -- a server whose files were altered -------------------------------------------------------------


def tamper_db(db_path: Path, change: Callable[[sqlite3.Connection], None]) -> None:
    db = sqlite3.connect(db_path)
    try:
        with db:
            change(db)
    finally:
        db.close()


def rewrite_record(db: sqlite3.Connection, space_id: str, seq: int, record: Record) -> None:
    data = encode_record(record)
    db.execute(
        "UPDATE records SET data = ?, hash = ? WHERE space_id = ? AND seq = ?",
        (data, record_hash(record), space_id, seq),
    )


def insert_record(db: sqlite3.Connection, record: Record) -> None:
    db.execute(
        "INSERT INTO records (space_id, seq, hash, data) VALUES (?, ?, ?, ?)",
        (record.space_id, record.seq, record_hash(record), encode_record(record)),
    )


@dataclass
class Hall:
    server: SalonServer
    alice: SalonUser
    bob: SalonUser
    space_id: str
    link: str


def start_hall(make_server: Callable[..., SalonServer], user: Callable[..., SalonUser]) -> Hall:
    """Alice's space with Bob as moderator and Carol as member (so Bob's promotion is not
    the last record). Bob has seen it all; Alice last saw it before Carol joined."""
    srv = make_server()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = alice.json("space", "create", "Town hall", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    bob.json("join", created["link"], "--as", "Bob")
    alice.run("role", space_id, "Bob", "moderator")
    carol.json("join", created["link"], "--as", "Carol")
    bob.json("members", space_id)
    return Hall(srv, alice, bob, space_id, created["link"])


def health(srv: SalonServer) -> int:
    with urllib.request.urlopen(f"{srv.url}/health", timeout=10) as response:
        return int(response.status)


def escalate_role(records: list[Record]) -> tuple[int, Record]:
    """The role change, rewritten to grant ownership (its signature kept)."""
    (seq,) = [r.seq for r in records if isinstance(r.body, RoleChange)]
    record = records[seq]
    assert isinstance(record.body, RoleChange) and record.body.role == "moderator"
    body = msgspec.structs.replace(record.body, role="owner")
    return seq, msgspec.structs.replace(record, body=body)


def forged_record(records: list[Record], body_for: Callable[[Key], RecordBody]) -> Record:
    """A record by a key that never joined, on the chain's true head."""
    mallory = Key()
    last = records[-1]
    return signed(mallory, last.space_id, last.seq + 1, record_hash(last), body_for(mallory))


def ghost_join(records: list[Record]) -> Callable[[Key], RecordBody]:
    """A Join naming a real invite but signed by a key that is not that invite's."""
    invite_id = next(r.body.invite_id for r in records if isinstance(r.body, InviteCreate))

    def body(mallory: Key) -> RecordBody:
        statement = join_statement(records[0].space_id, mallory.public, mallory.box_key, invite_id)
        return Join(invite_id, mallory.box_key, mallory.sign(statement))

    return body


@pytest.mark.parametrize("how", ["escalate-role", "flip-byte"])
def test_altered_record_in_the_database(make_server, user, how):
    hall = start_hall(make_server, user)
    dan = user("dan")
    other = dan.json("space", "create", "Elsewhere", "--server", hall.server.url)["space_id"]
    hall.server.stop()

    records = stored_records(hall.server.db_path, hall.space_id)
    if how == "escalate-role":
        seq, altered = escalate_role(records)
        tamper_db(hall.server.db_path, lambda db: rewrite_record(db, hall.space_id, seq, altered))
    else:
        # One bit inside the signed body of Bob's profile (a record in the middle).
        bob = next(r.author for r in records if isinstance(r.body, Join))
        (profile,) = [r for r in records if r.author == bob and isinstance(r.body, Profile)]
        assert isinstance(profile.body, Profile) and profile.seq < records[-1].seq
        data = bytearray(encode_record(profile))
        data[data.index(profile.body.box) + 20] ^= 0x01

        def flip(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE records SET data = ? WHERE space_id = ? AND seq = ?",
                (bytes(data), hall.space_id, profile.seq),
            )

        tamper_db(hall.server.db_path, flip)
    hall.server.restart()

    for person in (hall.bob, hall.alice):
        line = person.fail("members", hall.space_id)
        assert "signature" in line or "verif" in line, line
    # The server keeps serving, and other spaces are unaffected.
    assert health(hall.server) == 200
    assert len(dan.json("members", other)) == 1


def test_server_dropping_the_last_records(make_server, user):
    hall = start_hall(make_server, user)
    hall.server.stop()
    last_seq = stored_records(hall.server.db_path, hall.space_id)[-1].seq
    tamper_db(
        hall.server.db_path,
        lambda db: db.execute(
            "DELETE FROM records WHERE space_id = ? AND seq >= ?", (hall.space_id, last_seq - 1)
        ),
    )
    hall.server.restart()
    # Carol's join and profile are gone. The shorter chain is valid on its own, but Bob saw
    # more of it before; Alice last looked before Carol came, so nothing she saw changed.
    assert "rewrote" in hall.bob.fail("members", hall.space_id)
    assert {r["display_name"] for r in hall.alice.json("members", hall.space_id)} == {
        "Alice",
        "Bob",
    }


def test_server_forking_history(make_server, user):
    hall = start_hall(make_server, user)
    hall.server.stop()
    records = stored_records(hall.server.db_path, hall.space_id)
    tamper_db(
        hall.server.db_path,
        lambda db: db.execute(
            "DELETE FROM records WHERE space_id = ? AND seq >= ?",
            (hall.space_id, records[-1].seq - 1),
        ),
    )
    hall.server.restart()
    # Someone else joins in Carol's place: a valid chain, as long as before, but another one.
    user("mallory").json("join", hall.link, "--as", "Carol")
    forked = stored_records(hall.server.db_path, hall.space_id)
    assert len(forked) == len(records) and forked[-1] != records[-1]
    assert "rewrote" in hall.bob.fail("members", hall.space_id)


@pytest.mark.parametrize("forgery", ["self-promotion", "ghost-join"])
def test_forged_record_inserted_by_the_server(make_server, user, forgery):
    hall = start_hall(make_server, user)
    hall.server.stop()
    records = stored_records(hall.server.db_path, hall.space_id)
    if forgery == "self-promotion":
        forged = forged_record(records, lambda m: RoleChange(m.public, "owner"))
    else:
        forged = forged_record(records, ghost_join(records))
    tamper_db(hall.server.db_path, lambda db: insert_record(db, forged))
    hall.server.restart()
    for person in (hall.alice, hall.bob):
        person.fail("members", hall.space_id)
    assert health(hall.server) == 200


# -- a server that serves altered chains (the client must catch it alone) --------------------------


def serve_altered(app: Any, alter: Callable[[list[Record]], list[Record]] | None) -> None:
    """Make the in-process server answer every records request (GetRecords) with
    ``alter(true chain)`` (None: the truth again), while it keeps validating appends against
    the true chain."""
    membership = app[MEMBERSHIP]
    vars(membership).pop("records", None)  # back to the class's honest methods
    vars(membership).pop("records_page", None)
    if alter is None:
        return
    true_records = membership.records

    async def records(space_id: str, after: int = -1) -> list[Record]:
        chain = await true_records(space_id)
        return alter(list(chain))[after + 1 :]

    async def records_page(space_id: str, after: int = -1) -> tuple[list[Record], Any]:
        chain = alter(list(await true_records(space_id)))
        head = SimpleNamespace(head_seq=chain[-1].seq, head_hash=record_hash(chain[-1]))
        return chain[after + 1 :], head

    membership.records = records
    membership.records_page = records_page


def escalated_chain(records: list[Record]) -> list[Record]:
    seq, altered = escalate_role(records)
    records[seq] = altered
    return records


def dropped_member_chain(records: list[Record]) -> list[Record]:
    """Bob's join and profile cut out of the middle (relinking would need signatures)."""
    first_join = next(i for i, r in enumerate(records) if isinstance(r.body, Join))
    return records[:first_join] + records[first_join + 2 :]


ALTERATIONS: dict[str, Callable[[list[Record]], list[Record]]] = {
    "escalated-role": escalated_chain,
    "forged-promotion": lambda rs: [
        *rs,
        forged_record(rs, lambda m: RoleChange(m.public, "owner")),
    ],
    "ghost-member": lambda rs: [*rs, forged_record(rs, ghost_join(rs))],
    "hidden-member": dropped_member_chain,
    "reordered": lambda rs: [rs[0], rs[2], rs[1], *rs[3:]],
}
# What a member who verified the true chain before sees. Members fetch only what follows
# their cached, verified head: a forged continuation fails verification, a changed head is a
# rewrite; a change strictly inside the past they verified never reaches them (None: they keep
# their verified view). Newcomers verify from the genesis and refuse every one of them.
MEMBER_SEES: dict[str, str | None] = {
    "escalated-role": "rewrote",  # the role change is the head
    "forged-promotion": "fails verification",
    "ghost-member": "fails verification",
    "hidden-member": None,  # a hole in the past; the head is still the true one
    "reordered": None,
}


async def test_client_refuses_an_altered_chain(app_server, user):
    srv = await app_server()
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = await alice.ajson(
        "space", "create", "Town hall", "--server", srv.url, "--as", "Alice"
    )
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    await alice.arun("role", space_id, "Bob", "moderator")
    assert len(await bob.ajson("members", space_id)) == 2  # honest so far

    for name, alteration in ALTERATIONS.items():
        serve_altered(srv.app, alteration)
        for person in (alice, bob):
            expected = MEMBER_SEES[name]
            if expected is None:
                assert len(await person.ajson("members", space_id)) == 2, name
                continue
            result = await person.arun("members", space_id, check=False)
            assert result.returncode != 0, (name, result.stdout)
            line = assert_one_line_error(result)
            assert expected in line, (name, line)
    # A newcomer sees no chain before joining; once joined, it is served the altered chain
    # and refuses it like any member (the join itself is recorded and kept).
    line = await carol.afail("join", created["link"], "--as", "Carol")
    assert "fails verification" in line, line
    assert [s["space_id"] for s in await carol.ajson("space", "list")] == [space_id]
    # Served honestly again, the space is intact for everyone, Carol's profile included.
    serve_altered(srv.app, None)
    assert len(await bob.ajson("members", space_id)) == 3
    names = {m["display_name"] for m in await carol.ajson("members", space_id)}
    assert names == {"Alice", "Bob", "Carol"}
