"""Issue 8, points 2 and 8: what a malicious *member* (and a server helping one) can do with
rekeys, and what opening an invite link gives away.

Point 2: a plain member cannot start a space-key epoch except to complete a departure; the
server refuses a rekey that does not seal the key to exactly the current members; a bad rekey
that gets through (wrong key, or a colluding server) is warned about and skipped, and the
next owner's or moderator's client repairs it. Point 8: opening an invite shows a preview and
nothing else; the space key comes only with a recorded Join; ``kick --ban`` revokes the links
the banned member may know unless ``--keep-links``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec
import pytest
from conftest import SalonUser, stored_records
from test_tamper import Chain

from client.core import crypto
from client.core.connection import Connection
from client.core.errors import ServerError
from client.core.invites import parse_invite_link
from client.core.keystore import SpaceMembership
from client.core.space import InvitePreview, SealedSpaceKey, chain
from protocol.errors import ErrorCode
from protocol.records import (
    Join,
    Leave,
    Record,
    RecordError,
    RecordForbidden,
    Rekey,
    Roster,
    join_statement,
    signing_bytes,
)
from protocol.wire import (
    Append,
    Appended,
    Authenticate,
    Envelope,
    GetRecords,
    InviteOpened,
    Joined,
    JoinSpace,
    OpenInvite,
    Records,
    Welcome,
    auth_statement,
)

LIMITS = {"limits": {"join_attempts_per_minute_per_address": 1000}}


# -- the rule, record by record ----------------------------------------------------------------


def test_only_the_roles_that_should_may_rekey():
    chain = Chain()
    bob, carol = chain.join(), chain.join()
    mod = chain.join("moderator")
    # A plain member, nobody gone: refused (this is how one member bricked a space).
    chain.refuses(chain.make(bob, Rekey(1, 0, b"x")), RecordForbidden)
    # Owners and moderators may rotate at any time.
    chain.add(mod, Rekey(1, 0, b"x"))
    chain.add(chain.owner, Rekey(2, 1, b"x"))
    # After a leave, whoever comes next completes it, a plain member included; once.
    chain.add(carol, Leave())
    assert chain.roster.may_rekey(bob.public)
    chain.refuses(chain.make(bob, Rekey(3, 3, b"x")), RecordError)  # prev_epoch below epoch
    chain.add(bob, Rekey(3, 1, b"x"))  # a repair may point past a bad epoch
    assert not chain.roster.may_rekey(bob.public)
    chain.refuses(chain.make(bob, Rekey(4, 3, b"x")), RecordForbidden)
    assert chain.roster.rekey_authors == {1: mod.public, 2: chain.owner.public, 3: bob.public}


def test_the_server_wants_one_rekey_last_with_one_envelope_per_member():
    from protocol.errors import InvalidMessage
    from spaces.membership import _check_rekey

    chain = Chain()
    bob = chain.join()
    chain.add(bob, Leave())
    rekey = chain.add(chain.owner, Rekey(1, 0, b"x"))
    owner = chain.owner.public

    def envelope(recipient: bytes, scope: str = "space") -> Envelope:
        return Envelope(scope, 1, recipient, owner, b"box")

    _check_rekey([rekey], chain.roster, [envelope(owner), envelope(owner, "room1")])
    refused = {
        "to nobody": ([rekey], []),
        "to a departed member": ([rekey], [envelope(owner), envelope(bob.public)]),
        "twice to one": ([rekey], [envelope(owner), envelope(owner)]),
        "not last": ([rekey, chain.records[-2]], [envelope(owner)]),
        "without a rekey": ([chain.records[-2]], [envelope(owner)]),
    }
    for what, (records, envelopes) in refused.items():
        with pytest.raises(InvalidMessage):
            _check_rekey(records, chain.roster, envelopes)
            pytest.fail(what)


# -- a member's modified client against the real server ----------------------------------------


def membership(person: SalonUser, space_id: str) -> SpaceMembership:
    (found,) = [m for m in person.keystore().load().memberships if m.space_id == space_id]
    return found


class RawMember:
    """A member's client that sends whatever it likes (Mallory's modified client)."""

    def __init__(self, m: SpaceMembership, conn: Connection) -> None:
        self.m, self.conn = m, conn
        self.key = crypto.public_signing_key(m.signing_seed)

    @classmethod
    async def connect(cls, person: SalonUser, space_id: str) -> RawMember:
        m = membership(person, space_id)
        conn = await Connection.open(m.server)
        statement = auth_statement(conn.origin, "member", space_id, conn.nonce)
        signature = crypto.sign(m.signing_seed, statement)
        key = crypto.public_signing_key(m.signing_seed)
        await conn.request(Authenticate(conn.next_id(), space_id, key, signature), Welcome)
        return cls(m, conn)

    async def roster(self) -> Roster:
        reply = await self.conn.request(GetRecords(self.conn.next_id()), Records)
        return Roster.from_records(self.m.space_id, reply.records)

    async def bogus_rekey(self, recipients: str = "all") -> None:
        """A Rekey whose key does not unlock the previous one, sealed to ``recipients``:
        ``all`` current members, ``nobody``, or ``all-but-one``."""
        roster = await self.roster()
        bad_key = crypto.random_key()
        rekey = Rekey(roster.epoch + 1, roster.epoch, crypto.secretbox(bad_key, os.urandom(32)))
        records = chain(self.m, self.m.space_id, roster, [rekey])
        members = list(roster.members.values())
        if recipients == "nobody":
            members = []
        elif recipients == "all-but-one":
            others = [m for m in members if m.key != self.key]
            members = [*others[1:], roster.members[self.key]]
        envelopes = [
            Envelope(
                "space",
                rekey.epoch,
                member.key,
                self.key,
                crypto.seal_key(
                    self.m.box_secret,
                    member.box_key,
                    self.m.space_id,
                    "space",
                    rekey.epoch,
                    0,
                    bad_key,
                ),
            )
            for member in members
        ]
        await self.conn.request(Append(self.conn.next_id(), records, envelopes), Appended)


async def town(srv: Any, user: Any) -> tuple[str, str, SalonUser, SalonUser, SalonUser, SalonUser]:
    """Alice's space with Bob, Mallory and Dave as plain members."""
    alice, bob, mallory, dave = user("alice"), user("bob"), user("mallory"), user("dave")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    for person, name in ((bob, "Bob"), (mallory, "Mallory"), (dave, "Dave")):
        await person.ajson("join", created["link"], "--as", name)
    return created["space_id"], created["link"], alice, bob, mallory, dave


def rekeys(srv: Any, space_id: str) -> list[tuple[int, int, bytes]]:
    """(epoch, prev_epoch, author) of every rekey on the server's chain."""
    return [
        (r.body.epoch, r.body.prev_epoch, r.author)
        for r in stored_records(srv.data_dir / "salon.db", space_id)
        if isinstance(r.body, Rekey)
    ]


async def test_a_plain_member_cannot_brick_the_space(app_server, user):
    srv = await app_server(LIMITS)
    space_id, _, alice, bob, mallory, dave = await town(srv, user)
    raw = await RawMember.connect(mallory, space_id)
    try:
        # Nobody left: a plain member's rekey is refused outright.
        with pytest.raises(ServerError) as refused:
            await raw.bogus_rekey()
        assert refused.value.code == ErrorCode.FORBIDDEN
        await dave.arun("leave", space_id)  # Dave's client does not rekey; the next one will
        # Mallory gets there first. Sealed to nobody, or to all but one: refused.
        for recipients in ("nobody", "all-but-one"):
            with pytest.raises(ServerError) as refused:
                await raw.bogus_rekey(recipients)
            assert refused.value.code == ErrorCode.INVALID_MESSAGE
            assert "every current member" in str(refused.value)
        # Sealed to everyone, but the key does not match the record: the server cannot tell.
        await raw.bogus_rekey()
    finally:
        await raw.conn.close()
    assert [e for e, _, _ in rekeys(srv, space_id)] == [1]

    # Bob's client warns about it and carries on (it used to fail every command from now on).
    result = await bob.arun("members", space_id, "--json")
    assert {m["display_name"] for m in msgspec.json.decode(result.stdout)} == {
        "Alice",
        "Bob",
        "Mallory",
    }
    assert "warning:" in result.stderr and "epoch 1" in result.stderr, result.stderr
    assert "does not match its rekey record" in result.stderr
    assert 1 not in membership(bob, space_id).space_keys

    # Kicks still work: Alice's client repairs the epoch first, then bans Mallory.
    kicked = await alice.arun("kick", space_id, "Mallory", "--ban")
    assert "warning:" in kicked.stderr and "Banned Mallory" in kicked.stderr
    mallory_key = membership(mallory, space_id).signing_seed
    alice_key = crypto.public_signing_key(membership(alice, space_id).signing_seed)
    assert rekeys(srv, space_id) == [
        (1, 0, crypto.public_signing_key(mallory_key)),
        (2, 0, alice_key),  # the repair chains from the last good key, past epoch 1
        (3, 2, alice_key),  # the ban
    ]
    # Bob is whole again: no warning, the current key, and he can publish at that epoch.
    result = await bob.arun("profile", space_id, "--as", "Robert")
    assert "warning" not in result.stderr, result.stderr
    assert {0, 2, 3} <= set(membership(bob, space_id).space_keys)
    assert {m["display_name"] for m in await alice.ajson("members", space_id)} == {
        "Alice",
        "Robert",
    }


async def test_a_colluding_server_cannot_brick_it_either(app_server, user, monkeypatch):
    """The server lets Mallory's rekey through sealed to herself only: the others warn, go
    on, and the owner's next command repairs."""
    srv = await app_server(LIMITS)
    space_id, _, alice, bob, mallory, dave = await town(srv, user)
    await dave.arun("leave", space_id)
    monkeypatch.setattr("spaces.membership._check_rekey", lambda *args: None)
    raw = await RawMember.connect(mallory, space_id)
    try:
        roster = await raw.roster()
        rekey = Rekey(1, 0, crypto.secretbox(crypto.random_key(), os.urandom(32)))
        records = chain(raw.m, space_id, roster, [rekey])
        await raw.conn.request(Append(raw.conn.next_id(), records, []), Appended)
    finally:
        await raw.conn.close()
    monkeypatch.undo()

    result = await bob.arun("members", space_id)
    assert "epoch 1" in result.stderr and "was not sealed to us" in result.stderr
    await alice.arun("members", space_id)  # repairs
    assert [(e, p) for e, p, _ in rekeys(srv, space_id)] == [(1, 0), (2, 0)]
    result = await bob.arun("members", space_id)
    assert "warning" not in result.stderr
    assert 2 in membership(bob, space_id).space_keys


# -- invites -------------------------------------------------------------------------------------


async def open_raw(link_text: str) -> tuple[Connection, InviteOpened, bytes]:
    link = parse_invite_link(link_text)
    conn = await Connection.open(link.server)
    statement = auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
    invite_sig = crypto.sign(link.signing_seed, statement)
    opened = await conn.request(
        OpenInvite(conn.next_id(), link.invite_id, invite_sig), InviteOpened
    )
    return conn, opened, invite_sig


def stored_seal(srv: Any, invite_id: str) -> bytes:
    import sqlite3

    db = sqlite3.connect(f"file:{srv.data_dir / 'salon.db'}?mode=ro", uri=True)
    try:
        (row,) = db.execute("SELECT sealed FROM invites WHERE invite_id = ?", (invite_id,))
    finally:
        db.close()
    return bytes(row[0])


async def test_opening_an_invite_reveals_no_key_no_chain_and_uses_nothing(app_server, user):
    srv = await app_server(LIMITS)
    alice = user("alice")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    space_id, link = created["space_id"], parse_invite_link(created["link"])
    space_key = membership(alice, space_id).space_keys[0]
    chain_before = stored_records(srv.data_dir / "salon.db", space_id)

    for _ in range(3):  # opening again and again consumes nothing
        conn, opened, _ = await open_raw(created["link"])
        await conn.close()
        sent = msgspec.msgpack.encode(opened)
        # No record of the chain, no sealed space key, nothing that opens to the key.
        assert stored_seal(srv, link.invite_id) not in sent
        for record in chain_before:
            assert record.sig not in sent
        assert space_key not in sent
        for key in (link.seal_key, link.preview_key):
            for value in msgspec.structs.astuple(opened):
                if isinstance(value, bytes) and len(value) > 40:
                    try:
                        plain = crypto.secretbox_open(key, value)
                    except Exception:
                        continue
                    assert space_key not in plain
        # What the join screen needs, readable with the link only.
        preview = msgspec.msgpack.decode(
            crypto.secretbox_open(link.preview_key, opened.preview), type=InvitePreview
        )
        assert (preview.space_id, preview.name, preview.inviter) == (space_id, "Town", "Alice")
        assert opened.role == "member"

    # The CLI shows the same preview, and joins nothing.
    carol = user("carol")
    shown = await carol.ajson("join", created["link"], "--preview")
    assert (shown["name"], shown["inviter"], shown["role"]) == ("Town", "Alice", "member")
    assert await carol.ajson("space", "list") == []

    assert stored_records(srv.data_dir / "salon.db", space_id) == chain_before
    (listed,) = await alice.ajson("invite", "list", space_id)
    assert listed["uses_left"] == 25


async def test_the_key_comes_only_with_a_recorded_join(app_server, user):
    srv = await app_server(LIMITS)
    alice = user("alice")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    made = await alice.ajson("invite", "create", space_id, "--uses", "1")
    link = parse_invite_link(made["link"])

    conn, opened, invite_sig = await open_raw(made["link"])
    try:
        seed, box_secret = crypto.random_key(), crypto.random_key()
        member, box_key = crypto.public_signing_key(seed), crypto.public_box_key(box_secret)
        statement = join_statement(space_id, member, box_key, link.invite_id)
        join = Join(link.invite_id, box_key, crypto.sign(link.signing_seed, statement))
        unsigned = Record(
            space_id, opened.head_seq + 1, opened.head_hash, member, int(time.time()), join
        )
        record = msgspec.structs.replace(unsigned, sig=crypto.sign(seed, signing_bytes(unsigned)))
        member_sig = crypto.sign(seed, auth_statement(conn.origin, "member", space_id, conn.nonce))
        joined = await conn.request(
            JoinSpace(conn.next_id(), link.invite_id, invite_sig, record, member_sig), Joined
        )
    finally:
        await conn.close()
    sealed = msgspec.msgpack.decode(
        crypto.secretbox_open(link.seal_key, joined.seal.sealed), type=SealedSpaceKey
    )
    assert sealed.key == membership(alice, space_id).space_keys[0]
    # The join is on the chain, every member sees it, and the link's one use is gone.
    assert stored_records(srv.data_dir / "salon.db", space_id)[-1] == record
    rows = await alice.ajson("members", space_id)
    assert len(rows) == 2 and "(no profile)" in {r["display_name"] for r in rows}
    listed = {r["invite_id"]: r for r in await alice.ajson("invite", "list", space_id)}
    assert listed[link.invite_id]["uses_left"] == 0
    assert "used up" in await user("carol").afail("join", made["link"])


async def test_kick_ban_revokes_the_links_the_member_may_know(app_server, user):
    srv = await app_server(LIMITS)
    alice, mallory, eve = user("alice"), user("mallory"), user("eve")
    created = await alice.ajson("space", "create", "Town", "--server", srv.url, "--as", "Alice")
    space_id = created["space_id"]
    first = parse_invite_link(created["link"]).invite_id  # 25 uses
    mod_link = await alice.ajson("invite", "create", space_id, "--uses", "1", "--role", "moderator")
    await mallory.ajson("join", mod_link["link"], "--as", "Mallory")
    multi = (await alice.ajson("invite", "create", space_id, "--uses", "5"))["invite_id"]
    single = (await alice.ajson("invite", "create", space_id, "--uses", "1"))["invite_id"]
    mallorys = await mallory.ajson("invite", "create", space_id, "--uses", "1")
    await eve.ajson("join", created["link"], "--as", "Eve")

    # --keep-links: Eve is banned, every link stays.
    kept = await alice.arun("kick", space_id, "Eve", "--ban", "--keep-links")
    assert "Revoked" not in kept.stderr
    assert not any(r["revoked"] for r in await alice.ajson("invite", "list", space_id))

    result = await alice.arun("kick", space_id, "Mallory", "--ban")
    revoked = {
        line.split()[3].rstrip(".") for line in result.stderr.splitlines() if "Revoked" in line
    }
    # Every live multi-use link and Mallory's own; not Alice's unused single-use link (nor
    # the used-up one Mallory came in with).
    assert revoked == {first, multi, mallorys["invite_id"]}
    listed = {r["invite_id"]: r["revoked"] for r in await alice.ajson("invite", "list", space_id)}
    assert {i for i, r in listed.items() if r} == revoked
    # With a fresh identity, the links Mallory knew no longer admit her.
    for link in (created["link"], mallorys["link"]):
        assert "revoked" in await user("mallory2").afail("join", link)
    assert single in listed and not listed[single]
