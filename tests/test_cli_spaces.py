"""Issue 2's user flows, end to end: the real ``salon`` CLI against a real ``salon serve``.

Alice creates a space and invites; Bob (and friends) join with fresh identities; roles,
kicks, bans and leaving. Each test builds its own space on the module's shared server.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from conftest import SalonServer, SalonUser, stored_records

from client.core import crypto
from client.core.connection import Connection
from client.core.errors import ServerError, VerificationError
from client.core.invites import parse_invite_link
from client.core.keystore import SpaceMembership
from client.core.space import ProfileInfo, SealedSpaceKey
from protocol.errors import ErrorCode
from protocol.records import (
    Join,
    Profile,
    Record,
    Rekey,
    fingerprint,
    join_statement,
    record_hash,
    signing_bytes,
)
from protocol.wire import (
    Append,
    Appended,
    InviteOpened,
    Joined,
    JoinSpace,
    OpenInvite,
    auth_statement,
)
from spaces.services import MEMBERSHIP

STORAGE_ENGINES = ("sqlite", "postgresql")  # the server fixtures run on each (conftest.py)
# Every join costs two attempts against the per-address limit (open, then join) and this
# module joins a lot within a minute from one address; the limit itself is tested elsewhere.
SERVER_CONFIG = {"limits": {"join_attempts_per_minute_per_address": 1000}}

FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
INVITE_KEYS = {"invite_id", "link", "expires_at", "uses_left", "role"}


# -- helpers -----------------------------------------------------------------------------------


def create_space(owner: SalonUser, server: SalonServer, name: str, display: str) -> dict[str, Any]:
    created = owner.json("space", "create", name, "--server", server.url, "--as", display)
    assert set(created) == {"space_id", "name", "link"}
    assert created["name"] == name
    return created


def invite(owner: SalonUser, space_id: str, *options: str) -> dict[str, Any]:
    made = owner.json("invite", "create", space_id, *options)
    assert set(made) == INVITE_KEYS
    return made


def join(person: SalonUser, link: str, display: str) -> dict[str, Any]:
    joined = person.json("join", link, "--as", display)
    assert set(joined) == {"space_id", "name"}
    return joined


def members(person: SalonUser, space: str) -> dict[str, dict[str, Any]]:
    """display name -> {display_name, fingerprint, role}, checking the JSON shape."""
    rows = person.json("members", space)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == {"display_name", "fingerprint", "role"}
        assert FINGERPRINT.match(row["fingerprint"]), row
    by_name = {row["display_name"]: row for row in rows}
    assert len(by_name) == len(rows), rows
    return by_name


def roles(person: SalonUser, space: str) -> dict[str, str]:
    return {name: row["role"] for name, row in members(person, space).items()}


def membership(person: SalonUser, space_id: str) -> SpaceMembership:
    found = [m for m in person.keystore().load().memberships if m.space_id == space_id]
    assert len(found) == 1
    return found[0]


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def join_with_identity(m: SpaceMembership, link_text: str) -> None:
    """Join through ``link_text`` reusing an existing identity (``m``'s keys) — what a
    removed member's own client could attempt. Raises ServerError if the server refuses."""
    link = parse_invite_link(link_text)
    conn = await Connection.open(link.server)
    try:
        statement = auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
        invite_sig = crypto.sign(link.signing_seed, statement)
        opened = await conn.request(
            OpenInvite(conn.next_id(), link.invite_id, invite_sig), InviteOpened
        )
        space_id = opened.space_id
        member_key = crypto.public_signing_key(m.signing_seed)
        box_key = crypto.public_box_key(m.box_secret)
        join_sig = crypto.sign(
            link.signing_seed, join_statement(space_id, member_key, box_key, link.invite_id)
        )
        join = Join(link.invite_id, box_key, join_sig)
        unsigned = Record(
            space_id, opened.head_seq + 1, opened.head_hash, member_key, int(time.time()), join
        )
        record = msgspec.structs.replace(
            unsigned, sig=crypto.sign(m.signing_seed, signing_bytes(unsigned))
        )
        member_sig = crypto.sign(
            m.signing_seed, auth_statement(conn.origin, "member", space_id, conn.nonce)
        )
        joined = await conn.request(
            JoinSpace(conn.next_id(), link.invite_id, invite_sig, record, member_sig), Joined
        )
        plain = crypto.secretbox_open(link.seal_key, joined.seal.sealed)
        sealed = msgspec.msgpack.decode(plain, type=SealedSpaceKey)
        profile = crypto.secretbox(sealed.key, msgspec.msgpack.encode(ProfileInfo("Again")))
        unsigned = Record(
            space_id,
            record.seq + 1,
            record_hash(record),
            member_key,
            int(time.time()),
            Profile(sealed.epoch, profile),
        )
        signed_profile = msgspec.structs.replace(
            unsigned, sig=crypto.sign(m.signing_seed, signing_bytes(unsigned))
        )
        await conn.request(Append(conn.next_id(), [signed_profile]), Appended)
    finally:
        await conn.close()


# -- creating and inviting ---------------------------------------------------------------------


def test_create_space_prints_id_name_and_a_working_link(server, user):
    alice = user("alice")
    created = create_space(alice, server, "Town hall", "Alice")
    link = parse_invite_link(created["link"])
    assert link.server == server.url
    assert created["link"].startswith(f"{server.url}/join/{link.invite_id}#")

    assert alice.json("space", "list") == [
        {"space_id": created["space_id"], "name": "Town hall", "server": server.url}
    ]
    # Alice is the owner, shown by her display name, and SPACE may be the space's name.
    assert members(alice, "Town hall") == members(alice, created["space_id"])
    assert roles(alice, "Town hall") == {"Alice": "owner"}
    # The first invite is listed with its link (Alice made it).
    listed = alice.json("invite", "list", created["space_id"])
    assert [row["link"] for row in listed] == [created["link"]]

    # A second space shows up next to the first.
    other = create_space(alice, server, "Book club", "Ali")
    spaces = {row["space_id"]: row for row in alice.json("space", "list")}
    assert set(spaces) == {created["space_id"], other["space_id"]}
    assert spaces[other["space_id"]] == {
        "space_id": other["space_id"],
        "name": "Book club",
        "server": server.url,
    }


def test_invite_create_list_and_revoke(server, user):
    alice = user("alice")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]

    before = datetime.now(UTC)
    made = invite(alice, space_id, "--uses", "50", "--expires", "7d")
    assert made["uses_left"] == 50
    assert made["role"] == "member"
    assert made["link"].startswith(f"{server.url}/join/{made['invite_id']}#")
    expires = parse_iso(made["expires_at"])
    assert before + timedelta(days=7) - timedelta(seconds=5) <= expires
    assert expires <= datetime.now(UTC) + timedelta(days=7, seconds=5)

    mod = invite(alice, space_id, "--uses", "3", "--expires", "2h", "--role", "moderator")
    assert (mod["role"], mod["uses_left"]) == ("moderator", 3)

    listed = alice.json("invite", "list", space_id)
    assert isinstance(listed, list)
    by_id = {row["invite_id"]: row for row in listed}
    assert len(by_id) == 3  # the creation link, and these two
    for row in listed:
        assert set(row) >= INVITE_KEYS
    for made_row in (made, mod):
        row = by_id[made_row["invite_id"]]
        assert {key: row[key] for key in INVITE_KEYS} == made_row

    # Revoking takes an invite id; the list then shows it revoked.
    alice.run("invite", "revoke", space_id, made["invite_id"])
    listed = {row["invite_id"]: row for row in alice.json("invite", "list", space_id)}
    assert listed[made["invite_id"]].get("revoked") is True
    assert listed[mod["invite_id"]].get("revoked") is False
    # Revoking twice is a one-line error, not a second record.
    assert "revoked" in alice.fail("invite", "revoke", space_id, made["invite_id"])


def test_invite_create_with_qr_prints_a_qr_block(server, user):
    alice = user("alice")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    out = alice.run("invite", "create", space_id, "--uses", "5", "--qr").stdout
    links = [line for line in out.splitlines() if line.startswith(f"{server.url}/join/")]
    assert len(links) == 1
    parse_invite_link(links[0])
    qr_lines = [line for line in out.splitlines() if line and set(line) <= set("█▀▄ ")]
    assert len(qr_lines) >= 10, out
    assert len({len(line) for line in qr_lines}) == 1, "QR rows should form a square block"


# -- joining, members, roles ---------------------------------------------------------------------


def test_join_members_and_space_list(server, user):
    alice, bob = user("alice"), user("bob")
    created = create_space(alice, server, "Town hall", "Alice")
    space_id = created["space_id"]
    made = invite(alice, space_id, "--uses", "50", "--expires", "7d")

    assert join(bob, made["link"], "Bob") == {"space_id": space_id, "name": "Town hall"}
    assert bob.json("space", "list") == [
        {"space_id": space_id, "name": "Town hall", "server": server.url}
    ]

    seen_by_alice = members(alice, space_id)
    seen_by_bob = members(bob, "Town hall")
    assert seen_by_alice == seen_by_bob
    assert {n: r["role"] for n, r in seen_by_alice.items()} == {"Alice": "owner", "Bob": "member"}
    # Each membership is its own key: Alice's and Bob's fingerprints differ, and match
    # the keys in their keystores.
    alice_key = crypto.public_signing_key(membership(alice, space_id).signing_seed)
    bob_key = crypto.public_signing_key(membership(bob, space_id).signing_seed)
    assert seen_by_alice["Alice"]["fingerprint"] == fingerprint(alice_key)
    assert seen_by_alice["Bob"]["fingerprint"] == fingerprint(bob_key)
    # The table output (no --json) shows the same people.
    table = bob.run("members", space_id).stdout
    assert "Alice" in table and "Bob (you)" in table and "owner" in table

    # A join uses one of the invite's uses.
    listed = {row["invite_id"]: row for row in alice.json("invite", "list", space_id)}
    assert listed[made["invite_id"]]["uses_left"] == 49


def test_role_changes(server, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = create_space(alice, server, "Town hall", "Alice")
    space_id = created["space_id"]
    join(bob, created["link"], "Bob")
    join(carol, created["link"], "Carol")

    alice.run("role", space_id, "Bob", "moderator")
    assert roles(bob, space_id) == {"Alice": "owner", "Bob": "moderator", "Carol": "member"}

    # As a moderator Bob may invite (up to his own role), and manage members below him...
    made = invite(bob, space_id, "--uses", "2", "--role", "moderator")
    assert made["role"] == "moderator"
    assert "moderator" in roles(alice, space_id).values()
    # ...but not grant ownership or touch the owner.
    bob.fail("role", space_id, "Carol", "owner")
    bob.fail("role", space_id, "Alice", "member")

    # Promote by fingerprint prefix, demote by name.
    carol_fp = members(alice, space_id)["Carol"]["fingerprint"]
    bob.run("role", space_id, carol_fp[:8], "moderator")
    assert roles(carol, space_id)["Carol"] == "moderator"
    alice.run("role", space_id, "bob", "member")
    assert roles(carol, space_id) == {"Alice": "owner", "Bob": "member", "Carol": "moderator"}


def test_moderator_invite_grants_moderator_role(server, user):
    alice, mia = user("alice"), user("mia")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id, "--uses", "1", "--role", "moderator")
    join(mia, made["link"], "Mia")
    assert roles(alice, space_id) == {"Alice": "owner", "Mia": "moderator"}
    # And the role is real: Mia can invite.
    invite(mia, space_id, "--uses", "1")


# -- invite limits: uses, expiry, revocation -----------------------------------------------------


def test_single_use_invite_works_once(server, user):
    alice, carol, dave = user("alice"), user("carol"), user("dave")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id, "--uses", "1")
    join(carol, made["link"], "Carol")
    dave.fail("join", made["link"], "--as", "Dave")
    assert dave.json("space", "list") == []
    assert set(roles(alice, space_id)) == {"Alice", "Carol"}


def test_used_up_link_says_used_up(server, user):
    alice, carol, dave = user("alice"), user("carol"), user("dave")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id, "--uses", "1")
    join(carol, made["link"], "Carol")
    assert "used up" in dave.fail("join", made["link"], "--as", "Dave")


def test_expired_invite_says_expired(server, user):
    alice, erin = user("alice"), user("erin")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id, "--expires", "1s")
    wait = parse_iso(made["expires_at"]).timestamp() - time.time()
    time.sleep(max(0.0, wait) + 0.2)
    assert "expired" in erin.fail("join", made["link"], "--as", "Erin")
    assert erin.json("space", "list") == []


async def test_expired_invite_says_expired_after_the_sweep(app_server, user):
    srv = await app_server()
    alice, erin = user("alice"), user("erin")
    created = await alice.ajson("space", "create", "Town hall", "--server", srv.url)
    membership = srv.app[MEMBERSHIP]
    membership.clock = lambda: time.time() + 30 * 86400  # a month later
    assert await membership.sweep_expired_invites() == 1
    assert "expired" in await erin.afail("join", created["link"], "--as", "Erin")


def test_revoked_link_no_longer_admits(server, user):
    alice, frank = user("alice"), user("frank")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id)
    alice.run("invite", "revoke", space_id, made["invite_id"])
    frank.fail("join", made["link"], "--as", "Frank")
    assert roles(alice, space_id) == {"Alice": "owner"}


def test_revoked_link_says_revoked(server, user):
    alice, frank = user("alice"), user("frank")
    space_id = create_space(alice, server, "Town hall", "Alice")["space_id"]
    made = invite(alice, space_id)
    alice.run("invite", "revoke", space_id, made["invite_id"])
    assert "revoked" in frank.fail("join", made["link"], "--as", "Frank")


# -- kick, ban, leave ----------------------------------------------------------------------------


def test_kick_removes_and_rekeys(server, user):
    alice, bob, carol, dave = user("alice"), user("bob"), user("carol"), user("dave")
    created = create_space(alice, server, "Town hall", "Alice")
    space_id = created["space_id"]
    join(bob, created["link"], "Bob")
    join(carol, created["link"], "Carol")

    alice.run("kick", space_id, "Carol")

    # Carol's next command is a one-line error.
    assert "no longer a member" in carol.fail("members", space_id)
    # Everyone else still reads everyone's names (Bob needs the new space key for that).
    assert roles(alice, space_id) == {"Alice": "owner", "Bob": "member"}
    assert roles(bob, space_id) == {"Alice": "owner", "Bob": "member"}
    # The creation link was re-sealed with the new key, so it still admits people.
    join(dave, created["link"], "Dave")
    assert roles(bob, space_id) == {"Alice": "owner", "Bob": "member", "Dave": "member"}

    # Cryptographically: the chain moved to a new space-key epoch that Carol never got.
    records = stored_records(server.db_path, space_id)
    rekeys = [r.body for r in records if isinstance(r.body, Rekey)]
    assert [r.epoch for r in rekeys] == [1]
    carol_keys = membership(carol, space_id).space_keys
    assert set(carol_keys) == {0}
    dave_m = membership(dave, space_id)
    dave_key = crypto.public_signing_key(dave_m.signing_seed)
    (dave_profile,) = [
        r.body for r in records if r.author == dave_key and isinstance(r.body, Profile)
    ]
    assert dave_profile.epoch == 1
    # Data made at the new epoch opens with the new key (control)...
    assert b"Dave" in crypto.secretbox_open(dave_m.space_keys[1], dave_profile.box)
    # ...and with none of the keys Carol kept.
    for old_key in carol_keys.values():
        with pytest.raises(VerificationError):
            crypto.secretbox_open(old_key, dave_profile.box)
        with pytest.raises(VerificationError):
            crypto.secretbox_open(old_key, rekeys[0].prev_box)
    assert dave_m.space_keys[1] not in carol_keys.values()


def test_ban_blocks_the_identity(server, user):
    alice, eve, frank = user("alice"), user("eve"), user("frank")
    created = create_space(alice, server, "Town hall", "Alice")
    space_id = created["space_id"]
    join(eve, created["link"], "Eve")
    join(frank, created["link"], "Frank")
    eve_fp = members(alice, space_id)["Eve"]["fingerprint"]

    alice.run("kick", space_id, eve_fp[:6], "--ban")  # by fingerprint prefix
    alice.run("kick", space_id, "Frank")  # plain kick, for comparison

    assert "banned" in eve.fail("members", space_id)
    assert "no longer a member" in frank.fail("members", space_id)
    assert roles(alice, space_id) == {"Alice": "owner"}

    # With a fresh link, the banned identity still cannot come back...
    link = invite(alice, space_id, "--uses", "10")["link"]
    with pytest.raises(ServerError) as refused:
        asyncio.run(join_with_identity(membership(eve, space_id), link))
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert "banned" in str(refused.value)
    # ...while a kicked (not banned) identity may (which shows the attempt above was sound).
    asyncio.run(join_with_identity(membership(frank, space_id), link))
    assert set(roles(alice, space_id)) == {"Alice", "Again"}


def test_leave_forgets_the_membership(server, user):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    created = create_space(alice, server, "Town hall", "Alice")
    space_id = created["space_id"]
    join(bob, created["link"], "Bob")
    join(carol, created["link"], "Carol")

    bob.run("leave", space_id)
    assert bob.json("space", "list") == []
    assert "not in a space" in bob.fail("members", space_id)
    assert roles(carol, space_id) == {"Alice": "owner", "Carol": "member"}

    # The last owner cannot walk away from members; after handing over ownership she can.
    assert "owner" in alice.fail("leave", space_id)
    alice.run("role", space_id, "Carol", "owner")
    alice.run("leave", space_id)
    assert alice.json("space", "list") == []
    assert roles(carol, space_id) == {"Carol": "owner"}
