"""Bounded cost of the record chain (issue 8, point 6).

- Roster rules every client applies: body size caps (``too_large``) and a per-member profile
  quota over signed time (``rate_limited``); the server adds token buckets per member.
- ``GetRecords`` is paged and answers with the server's head; a client keeps its verified
  roster in the keystore and fetches only what follows its cached head, refusing a
  continuation that does not link to it (a fork) or a head behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from nacl.signing import SigningKey

from client.core import crypto
from client.core.errors import ServerError
from client.core.keystore import SpaceMembership
from client.core.space import ProfileInfo, chain, open_space
from protocol.errors import ErrorCode, ProtocolError
from protocol.records import (
    MAX_PROFILE_BOX,
    PROFILE_QUOTA,
    PROFILE_WINDOW,
    Genesis,
    InviteCreate,
    Join,
    Leave,
    Profile,
    Record,
    RecordBody,
    RecordRateLimited,
    RecordTooLarge,
    RoleChange,
    RoomCreate,
    RoomGrant,
    Roster,
    decode_roster,
    derive_space_id,
    encode_roster,
    join_statement,
    record_hash,
    signing_bytes,
)
from protocol.wire import Append, Appended
from spaces.services import MEMBERSHIP

# -- roster rules (sans-I/O) ----------------------------------------------------------------------


class Key:
    def __init__(self) -> None:
        self.signing = SigningKey.generate()
        self.public = bytes(self.signing.verify_key)
        self.box_key = crypto.public_box_key(crypto.random_key())


class Chain:
    """A chain built record by record through the same Roster rules the clients use."""

    def __init__(self) -> None:
        self.owner = Key()
        genesis = Genesis(self.owner.box_key, b"n" * 16)
        self.space_id = derive_space_id(self.owner.public, genesis)
        self.records: list[Record] = []
        self.roster = Roster(self.space_id, self.owner.public)
        self.add(self.owner, genesis)

    def make(self, author: Key, body: RecordBody, created_at: int = 1_000_000) -> Record:
        prev = record_hash(self.records[-1]) if self.records else bytes(32)
        unsigned = Record(self.space_id, len(self.records), prev, author.public, created_at, body)
        sig = author.signing.sign(signing_bytes(unsigned)).signature
        return msgspec.structs.replace(unsigned, sig=sig)

    def add(self, author: Key, body: RecordBody, created_at: int = 1_000_000) -> Record:
        record = self.make(author, body, created_at)
        self.roster.apply(record)
        self.records.append(record)
        return record

    def join(self) -> Key:
        member, invite = Key(), Key()
        invite_id = f"invite{len(self.records):04d}"
        self.add(self.owner, InviteCreate(invite_id, invite.public, "member", 2**40, 1))
        statement = join_statement(self.space_id, member.public, member.box_key, invite_id)
        sig = invite.signing.sign(statement).signature
        self.add(member, Join(invite_id, member.box_key, sig))
        return member


def test_profile_quota_is_a_roster_rule():
    chain_ = Chain()
    mallory = chain_.join()
    t = 1_000_000
    for i in range(PROFILE_QUOTA):
        chain_.add(mallory, Profile(0, b"p" * 40), t + i)
    flood = chain_.make(mallory, Profile(0, b"p" * 40), t + PROFILE_QUOTA)
    with pytest.raises(RecordRateLimited) as caught:
        Roster.from_records(chain_.space_id, [*chain_.records, flood])
    assert caught.value.code == ErrorCode.RATE_LIMITED
    # Backdating does not help: the window counts times on both sides.
    backdated = chain_.make(mallory, Profile(0, b"p" * 40), t - 10)
    with pytest.raises(RecordRateLimited):
        chain_.roster.copy().apply(backdated)
    # Others are unaffected, and Mallory may change it again an hour later.
    chain_.add(chain_.owner, Profile(0, b"o" * 40), t + PROFILE_QUOTA)
    chain_.add(mallory, Profile(0, b"p" * 40), t + PROFILE_QUOTA + PROFILE_WINDOW + 1)


@pytest.mark.parametrize(
    "body",
    [
        Profile(0, b"x" * (MAX_PROFILE_BOX + 1)),
        RoomCreate("room-id-1", "chat", 0, b"n" * 2000),
    ],
    ids=["profile", "room-name"],
)
def test_oversized_bodies_are_refused(body):
    chain_ = Chain()
    record = chain_.make(chain_.owner, body)
    with pytest.raises(RecordTooLarge) as caught:
        Roster.from_records(chain_.space_id, [*chain_.records, record])
    assert caught.value.code == ErrorCode.TOO_LARGE


def test_cached_roster_keeps_every_field_and_the_posting_history():
    chain_ = Chain()
    bob = chain_.join()
    carol = chain_.join()
    chain_.add(chain_.owner, RoomCreate("channel-1", "channel", 0, b"name"))
    chain_.add(chain_.owner, RoomGrant("channel-1", bob.public, True))
    granted = chain_.roster.head_seq
    chain_.add(bob, Profile(0, b"bob"))
    chain_.add(chain_.owner, RoomGrant("channel-1", bob.public, False))
    chain_.add(chain_.owner, RoleChange(carol.public, "moderator"))
    promoted = chain_.roster.head_seq
    chain_.add(bob, Leave())

    cached = decode_roster(encode_roster(chain_.roster))
    assert cached == chain_.roster
    assert cached == Roster.from_records(chain_.space_id, chain_.records)
    # Posts signed at older heads are judged by the rights of that head.
    assert cached.at(granted).may_post("channel-1", bob.public)
    assert not cached.at(granted - 1).may_post("channel-1", bob.public)
    assert not cached.at(cached.head_seq).may_post("channel-1", bob.public)
    assert not cached.at(promoted - 1).may_post("channel-1", carol.public)
    assert cached.at(promoted).may_post("channel-1", carol.public)
    assert cached.at(cached.head_seq + 1) is None
    assert cached.former_profiles[bob.public] == Profile(0, b"bob")
    with pytest.raises(ProtocolError):
        decode_roster(b"\x01garbage")


# -- a server that serves a rewritten continuation -------------------------------------------------


async def start_space(app_server: Any, user: Any, config: dict[str, Any] | None = None):
    srv = await app_server(config)
    alice, bob = user("alice"), user("bob")
    created = await alice.ajson(
        "space", "create", "Town hall", "--server", srv.url, "--as", "Alice"
    )
    space_id = created["space_id"]
    await bob.ajson("join", created["link"], "--as", "Bob")
    await alice.arun("role", space_id, "Bob", "moderator")
    assert len(await bob.ajson("members", space_id)) == 2
    return srv, alice, bob, created, space_id


def forked(records: list[Record], extra: int) -> list[Record]:
    """The true chain without its head, then ``1 + extra`` valid-looking records by a key
    that forks off at the head's seq (the server's alternative history)."""
    mallory = Key()
    fork = list(records[:-1])
    for _ in range(1 + extra):
        last = fork[-1]
        unsigned = Record(
            last.space_id, last.seq + 1, record_hash(last), mallory.public, 1, Leave()
        )
        fork.append(
            msgspec.structs.replace(
                unsigned, sig=mallory.signing.sign(signing_bytes(unsigned)).signature
            )
        )
    return fork


def serve(app: Any, answer: Callable[[list[Record], int], tuple[list[Record], int, bytes]]) -> None:
    """GetRecords answers ``answer(true chain, after)`` = (page, head seq, head hash)."""
    membership = app[MEMBERSHIP]
    true_records = membership.records

    async def records_page(space_id: str, after: int = -1) -> tuple[list[Record], Any]:
        page, head_seq, head_hash = answer(list(await true_records(space_id)), after)
        return page, SimpleNamespace(head_seq=head_seq, head_hash=head_hash)

    membership.records_page = records_page


def longer_fork(rs: list[Record], after: int) -> tuple[list[Record], int, bytes]:
    fork = forked(rs, extra=2)
    return fork[after + 1 :], fork[-1].seq, record_hash(fork[-1])


def same_length_fork(rs: list[Record], after: int) -> tuple[list[Record], int, bytes]:
    fork = forked(rs, extra=0)
    return fork[after + 1 :], fork[-1].seq, record_hash(fork[-1])


def dropped_head(rs: list[Record], after: int) -> tuple[list[Record], int, bytes]:
    return [], rs[-2].seq, record_hash(rs[-2])


def withheld(rs: list[Record], after: int) -> tuple[list[Record], int, bytes]:
    return [], rs[-1].seq + 5, record_hash(rs[-1])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (longer_fork, "rewrote"),
        (same_length_fork, "rewrote"),
        (dropped_head, "rewrote"),
        (withheld, "does not send"),
    ],
    ids=["longer-fork", "same-length-fork", "dropped-head", "withheld"],
)
async def test_client_refuses_a_continuation_that_is_not_its_head(
    app_server, user, answer, expected
):
    srv, alice, bob, _created, space_id = await start_space(app_server, user)
    serve(srv.app, answer)
    for person in (alice, bob):
        line = await person.afail("members", space_id)
        assert expected in line, line
    # Served honestly again, the space and the cached rosters are intact.
    vars(srv.app[MEMBERSHIP]).pop("records_page")
    assert len(await bob.ajson("members", space_id)) == 2


async def test_commands_fetch_only_what_follows_the_cached_head(app_server, user):
    srv, _alice, bob, created, space_id = await start_space(
        app_server, user, {"limits": {"records_page_max": 2}}
    )
    membership = srv.app[MEMBERSHIP]
    honest = membership.records_page
    served: list[tuple[int, int]] = []

    async def counting(space_id_: str, after: int = -1) -> tuple[list[Record], Roster]:
        page, roster = await honest(space_id_, after)
        served.append((after, len(page)))
        return page, roster

    membership.records_page = counting
    # A newcomer verifies the whole chain (it has no trust anchor yet), page by page.
    carol = user("carol")
    await carol.ajson("join", created["link"], "--as", "Carol")
    served.clear()
    assert len(await carol.ajson("members", space_id)) == 3
    head = (await membership.roster(space_id)).head_seq
    assert served == [(head, 0)]
    # Bob last saw the chain two records ago: he gets exactly those, in pages of two.
    served.clear()
    assert len(await bob.ajson("members", space_id)) == 3
    assert served == [(head - 2, 2), (head, 0)] or served == [(head - 2, 2)]
    assert sum(n for _, n in served) == 2


# -- a member flooding the chain ------------------------------------------------------------------


async def mallory_session(srv: Any, user: Any, link: str):
    mallory = user("mallory")
    await mallory.ajson("join", link, "--as", "Mallory")
    keystore = mallory.keystore()
    (membership,) = keystore.load().memberships
    assert isinstance(membership, SpaceMembership)
    return keystore, membership


@pytest.mark.parametrize(
    ("config", "accepted", "message"),
    [
        # the server's token bucket (burst 10; her join carried one profile already)
        ({}, 9, "too many profile changes"),
        (
            {"limits": {"profile_burst_per_member": 1000}},
            PROFILE_QUOTA - 1,  # her join carried one profile already
            f"at most {PROFILE_QUOTA} profile changes",  # the roster rule, server-side too
        ),
    ],
    ids=["server-policy", "roster-rule"],
)
async def test_member_flooding_profiles_hits_the_quota(app_server, user, config, accepted, message):
    srv, alice, bob, created, space_id = await start_space(app_server, user, config)
    keystore, membership = await mallory_session(srv, user, created["link"])
    async with open_space(keystore, membership) as session:
        # A modified client: raw appends, no local checks.
        async def append_profile(box: bytes) -> None:
            roster = session.verified
            records = chain(session.m, space_id, roster, [Profile(roster.epoch, box)])
            await session.conn.request(Append(session.conn.next_id(), records), Appended)
            session.roster = roster.copy()
            session.roster.apply(records[0])

        def box(name: str) -> bytes:
            info = msgspec.msgpack.encode(ProfileInfo(name))
            return crypto.secretbox(session.space_key(session.verified.epoch), info)

        for i in range(accepted):
            await append_profile(box(f"Mallory {i}"))
        with pytest.raises(ServerError) as caught:
            await append_profile(box("Mallory flood"))
        assert caught.value.code == ErrorCode.RATE_LIMITED
        assert message in str(caught.value)
        # An oversized profile is refused as too large, whatever the quotas.
        with pytest.raises(ServerError) as caught:
            await append_profile(b"x" * (MAX_PROFILE_BOX + 1))
        assert caught.value.code == ErrorCode.TOO_LARGE
        if config:  # the honest client refuses to go over the roster's quota itself
            with pytest.raises(ServerError) as caught:
                await session.set_profile("Mallory again", True)
            assert caught.value.code == ErrorCode.RATE_LIMITED
    # The others are unaffected: they read the space and post as usual.
    names = {m["display_name"] for m in await alice.ajson("members", space_id)}
    assert names == {"Alice", "Bob", f"Mallory {accepted - 1}"}
    await bob.arun("room", "create", space_id, "lobby", "--kind", "chat")
    await bob.arun("send", space_id, "lobby", "still fine")
    await bob.arun("profile", space_id, "--as", "Bobby")
