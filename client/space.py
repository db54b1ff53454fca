"""A member's view of one space: connect, verify the roster, hold the space keys, act.

:class:`SpaceSession` is the SDK the CLI (and later the chat and call clients) build on.
Everything it shows has been verified here: the record chain from the founding key, that
the server did not rewrite history we saw before, and every key envelope it opens.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import msgspec

from client import crypto
from client.connection import Connection, check_server_url
from client.errors import ServerError, UsageError, VerificationError
from client.invites import InviteLink, new_invite_link, parse_invite_link
from client.keystore import Keystore, KeystoreData, SpaceMembership
from protocol.errors import ErrorCode, ProtocolError
from protocol.records import (
    Genesis,
    InviteCreate,
    InviteRevoke,
    Join,
    Leave,
    Profile,
    Record,
    RecordBody,
    Rekey,
    Remove,
    Role,
    RoleChange,
    Roster,
    SpaceMeta,
    derive_space_id,
    fingerprint,
    join_statement,
    record_hash,
    signing_bytes,
)
from protocol.wire import (
    Append,
    Appended,
    Authenticate,
    CreateSpace,
    Done,
    Envelope,
    Envelopes,
    GetEnvelopes,
    GetRecords,
    InviteOpened,
    Invites,
    InviteSeal,
    InviteStatus,
    JoinSpace,
    ListInvites,
    OpenInvite,
    PutSeals,
    Records,
    Welcome,
    auth_statement,
)

SPACE_SCOPE = "space"
APPEND_RETRIES = 5


class SpaceInfo(msgspec.Struct):
    name: str
    description: str = ""


class ProfileInfo(msgspec.Struct):
    display_name: str
    avatar: bytes | None = None


class SealedSpaceKey(msgspec.Struct):
    space_id: str
    epoch: int
    key: bytes


@dataclass(frozen=True)
class MemberView:
    key: bytes
    display_name: str
    fingerprint: str
    role: Role


@dataclass(frozen=True)
class InviteView:
    status: InviteStatus
    link: str | None  # known only to the identity that created it


def _encode(value: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(value)


def _sign(m: SpaceMembership, space_id: str, seq: int, prev: bytes, body: RecordBody) -> Record:
    author = crypto.public_signing_key(m.signing_seed)
    unsigned = Record(space_id, seq, prev, author, int(time.time()), body)
    return msgspec.structs.replace(
        unsigned, sig=crypto.sign(m.signing_seed, signing_bytes(unsigned))
    )


def chain(
    m: SpaceMembership, space_id: str, head: Roster | None, bodies: Sequence[RecordBody]
) -> list[Record]:
    """Sign ``bodies`` as records extending ``head`` (None: a brand-new chain)."""
    seq = head.head_seq + 1 if head else 0
    prev = head.head_hash if head else bytes(32)
    records = []
    for body in bodies:
        record = _sign(m, space_id, seq, prev, body)
        records.append(record)
        seq, prev = seq + 1, record_hash(record)
    return records


def seal_invite(link: InviteLink, space_id: str, epoch: int, key: bytes) -> InviteSeal:
    payload = _encode(SealedSpaceKey(space_id, epoch, key))
    return InviteSeal(link.invite_id, epoch, crypto.secretbox(link.seal_key, payload))


def _new_membership(server: str, display_name: str) -> SpaceMembership:
    return SpaceMembership(
        space_id="",
        server=server,
        name="",
        display_name=display_name,
        signing_seed=crypto.random_key(),
        box_secret=crypto.random_key(),
    )


def _forget(data: KeystoreData, m: SpaceMembership) -> None:
    data.memberships = [
        x
        for x in data.memberships
        if not (x.space_id == m.space_id and x.signing_seed == m.signing_seed)
    ]


def _rename(data: KeystoreData, m: SpaceMembership) -> None:
    for stored in data.memberships:
        if stored.space_id == m.space_id and stored.signing_seed == m.signing_seed:
            stored.display_name = m.display_name


def default_display_name() -> str:
    return f"Guest {secrets.randbelow(9000) + 1000}"


class SpaceSession:
    """An authenticated connection for one membership. Use :func:`open_space`."""

    def __init__(self, keystore: Keystore, membership: SpaceMembership, conn: Connection) -> None:
        self.keystore = keystore
        self.m = membership
        self.conn = conn
        self.roster: Roster | None = None
        self.records: list[Record] = []
        # Room keys derived and checked this session: (room id, epoch, generation) -> key.
        self.room_key_cache: dict[tuple[str, int, int], bytes] = {}
        # Room key envelopes refused this session: (room id, epoch) -> why (shown to the user).
        self.refused_keys: dict[tuple[str, int], str] = {}

    @property
    def space_id(self) -> str:
        return self.m.space_id

    @property
    def member_key(self) -> bytes:
        return crypto.public_signing_key(self.m.signing_seed)

    @property
    def verified(self) -> Roster:
        if self.roster is None:
            raise VerificationError("the roster has not been verified yet")
        return self.roster

    # -- keeping in step with the server ---------------------------------------------------------

    async def sync(self) -> Roster:
        """Fetch and verify the whole chain, collect space keys, rotate if someone left."""
        reply = await self.conn.request(GetRecords(self.conn.next_id()), Records)
        roster = self._verify(reply.records)
        await self._collect_space_keys(roster)
        self._remember()
        if roster.needs_rekey and self.member_key in roster.members:
            await self.append([])  # append() adds the Rekey record
        else:
            await self._refresh_stale_invites()
        return self.verified

    async def _refresh_stale_invites(self) -> None:
        """Re-seal our live invites that still carry an older space key (after a leave or a
        removal someone else handled), so those links keep working."""
        roster = self.verified
        me = roster.members.get(self.member_key)
        if me is None or me.role == "member" or roster.epoch not in self.m.space_keys:
            return
        live = self._reseal_invites(roster, roster.epoch, self.m.space_keys[roster.epoch])
        if not live:
            return
        reply = await self.conn.request(ListInvites(self.conn.next_id()), Invites)
        stale = {s.invite_id for s in reply.invites if 0 <= s.seal_epoch < roster.epoch}
        seals = [seal for seal in live if seal.invite_id in stale]
        if seals:
            await self.conn.request(PutSeals(self.conn.next_id(), seals), Done)

    def _verify(self, records: list[Record]) -> Roster:
        try:
            roster = Roster.from_records(self.space_id, records)
        except ProtocolError as exc:
            raise VerificationError(
                f"the server's roster for this space fails verification: {exc.message}"
            ) from None
        m = self.m
        if m.head_seq >= 0 and (
            len(records) <= m.head_seq or record_hash(records[m.head_seq]) != m.head_hash
        ):
            raise VerificationError(
                "the server rewrote this space's history (it differs from what this device "
                "verified before); refusing it"
            )
        self.roster, self.records = roster, records
        return roster

    async def _collect_space_keys(self, roster: Roster) -> None:
        keys = self.m.space_keys
        if roster.epoch not in keys and self.member_key in roster.members:
            known = [e for e in keys if e <= roster.epoch]
            reply = await self.conn.request(
                GetEnvelopes(self.conn.next_id(), SPACE_SCOPE, max(known, default=-1) + 1),
                Envelopes,
            )
            for envelope in reply.envelopes:
                self._open_space_envelope(roster, envelope)
        # Walk back: each rekey record carries the previous key under the new one.
        for epoch in sorted(keys, reverse=True):
            while epoch > 0 and epoch - 1 not in keys and epoch in roster.rekeys:
                prev = crypto.secretbox_open(keys[epoch], roster.rekeys[epoch].prev_box, "a key")
                keys[epoch - 1] = prev
                epoch -= 1

    def _open_space_envelope(self, roster: Roster, envelope: Envelope) -> None:
        sender_box = roster.box_keys.get(envelope.sender)
        if sender_box is None or envelope.epoch not in roster.rekeys:
            return  # not from anyone we know, or for an epoch the chain never made
        if not roster.member_during(envelope.sender, envelope.epoch):
            return  # sealed by someone who was no member in that epoch (a removed member)
        sealed = crypto.open_key(
            self.m.box_secret, sender_box, envelope.box, self.space_id, SPACE_SCOPE, envelope.epoch
        )
        if sealed.generation != 0:
            raise VerificationError("a sealed space key claims a key generation")
        key = sealed.key
        previous = self.m.space_keys.get(envelope.epoch - 1)
        if previous is not None:
            # Bind the envelope to the signed rekey record: the new key must unlock the old.
            inner = crypto.secretbox_open(key, roster.rekeys[envelope.epoch].prev_box, "a key")
            if inner != previous:
                raise VerificationError("a sealed space key does not match the rekey record")
        self.m.space_keys[envelope.epoch] = key

    def _remember(self) -> None:
        """Persist the verified head, keys and names for the next command."""
        roster = self.verified
        m = self.m
        m.head_seq, m.head_hash = roster.head_seq, roster.head_hash
        with contextlib.suppress(VerificationError):
            m.name = self.space_info().name

        def save(data: KeystoreData) -> None:
            for i, stored in enumerate(data.memberships):
                if stored.space_id == m.space_id and stored.signing_seed == m.signing_seed:
                    stored.space_keys.update(m.space_keys)
                    stored.invite_secrets.update(m.invite_secrets)
                    for room_id, keys in m.room_keys.items():
                        kept = stored.room_keys.setdefault(room_id, {})
                        for epoch, held in keys.items():  # keep the oldest generation
                            if epoch not in kept or held.generation < kept[epoch].generation:
                                kept[epoch] = held
                    stored.state.update(m.state)
                    if m.head_seq >= stored.head_seq:
                        stored.head_seq, stored.head_hash = m.head_seq, m.head_hash
                    stored.name = m.name
                    data.memberships[i] = stored
                    return

        self.keystore.update(save)

    # -- reading -------------------------------------------------------------------------------

    def space_key(self, epoch: int) -> bytes:
        key = self.m.space_keys.get(epoch)
        if key is None:
            raise VerificationError(f"this device has no space key for epoch {epoch}")
        return key

    def space_info(self) -> SpaceInfo:
        meta = self.verified.meta
        if meta is None:
            return SpaceInfo(name=self.space_id)
        plain = crypto.secretbox_open(self.space_key(meta.epoch), meta.box, "the space's name")
        return msgspec.msgpack.decode(plain, type=SpaceInfo)

    def profile(self, key: bytes) -> ProfileInfo:
        member = self.verified.members.get(key)
        if member is None or member.profile is None:
            return ProfileInfo(display_name="(no profile)")
        profile = member.profile
        try:
            plain = crypto.secretbox_open(self.space_key(profile.epoch), profile.box, "a profile")
            return msgspec.msgpack.decode(plain, type=ProfileInfo)
        except (VerificationError, msgspec.DecodeError):
            return ProfileInfo(display_name="(unreadable profile)")

    def members(self) -> list[MemberView]:
        views = [
            MemberView(key, self.profile(key).display_name, fingerprint(key), member.role)
            for key, member in self.verified.members.items()
        ]
        rank = {"owner": 0, "moderator": 1, "member": 2}
        return sorted(views, key=lambda v: (rank[v.role], v.display_name.lower(), v.fingerprint))

    def resolve_member(self, query: str) -> MemberView:
        """A member by fingerprint prefix (4+ hex digits) or exact display name."""
        members = self.members()
        q = query.strip().lower()
        matches = [v for v in members if len(q) >= 4 and v.fingerprint.startswith(q)]
        if not matches:
            matches = [v for v in members if v.display_name.lower() == q]
        if not matches:
            raise UsageError(f"no member {query!r} in this space (see 'salon members')")
        if len(matches) > 1:
            raise UsageError(f"{query!r} matches several members; use a fingerprint prefix")
        return matches[0]

    # -- writing -------------------------------------------------------------------------------

    async def append(
        self,
        make_bodies: Callable[[Roster], Sequence[RecordBody]] | Sequence[RecordBody],
        seals: Callable[[Roster], Sequence[InviteSeal]] | None = None,
        *,
        envelopes: Callable[[Roster], Sequence[Envelope]] | None = None,
        resync: bool = True,
    ) -> Roster:
        """Sign and append records on the current head, retrying if someone else got there
        first. Adds a Rekey (with envelopes and fresh invite seals) whenever the records
        leave a departed member holding the current space key."""
        for _ in range(APPEND_RETRIES):
            roster = self.verified
            bodies = list(make_bodies(roster) if callable(make_bodies) else make_bodies)
            scratch = Roster.from_records(self.space_id, self.records)
            records = chain(self.m, self.space_id, roster, bodies)
            for record in records:
                scratch.apply(record)
            sealed: list[Envelope] = []
            new_key: tuple[int, bytes] | None = None
            if scratch.needs_rekey and self.member_key in scratch.members:
                new_key = (scratch.epoch + 1, crypto.random_key())
                rekey = Rekey(
                    new_key[0],
                    crypto.secretbox(new_key[1], self.space_key(scratch.epoch)),
                )
                records += chain(self.m, self.space_id, scratch, [rekey])
                scratch.apply(records[-1])
                sealed = [
                    Envelope(
                        SPACE_SCOPE,
                        new_key[0],
                        member.key,
                        self.member_key,
                        crypto.seal_key(
                            self.m.box_secret,
                            member.box_key,
                            self.space_id,
                            SPACE_SCOPE,
                            new_key[0],
                            0,
                            new_key[1],
                        ),
                    )
                    for member in scratch.members.values()
                ]
            if new_key is not None:
                self.m.space_keys[new_key[0]] = new_key[1]
            if envelopes is not None:
                sealed += envelopes(scratch)
            all_seals = {s.invite_id: s for s in (seals(scratch) if seals else [])}
            if new_key is not None:
                for seal in self._reseal_invites(scratch, new_key[0], new_key[1]):
                    all_seals[seal.invite_id] = seal
            try:
                await self.conn.request(
                    Append(self.conn.next_id(), records, sealed, list(all_seals.values())),
                    Appended,
                )
            except ServerError as exc:
                if exc.code != ErrorCode.CONFLICT:
                    raise
                await self.sync()
                continue
            if not resync:
                return scratch
            await self.sync()
            return self.verified
        raise ServerError("conflict", "the space is changing too fast; try again")

    def _reseal_invites(self, roster: Roster, epoch: int, key: bytes) -> list[InviteSeal]:
        seals = []
        for invite_id, secret in self.m.invite_secrets.items():
            invite = roster.invites.get(invite_id)
            if invite is None or invite_id in roster.revoked:
                continue
            if invite.expires_at <= time.time():
                continue
            link = InviteLink(self.m.server, invite_id, secret)
            seals.append(seal_invite(link, self.space_id, epoch, key))
        return seals

    async def create_invite(self, uses: int, expires_in: int, role: Role) -> InviteLink:
        link = new_invite_link(self.m.server)
        body = InviteCreate(
            link.invite_id, link.invite_key, role, int(time.time()) + expires_in, uses
        )
        self.m.invite_secrets[link.invite_id] = link.secret
        await self.append(
            [body], lambda r: [seal_invite(link, self.space_id, r.epoch, self.space_key(r.epoch))]
        )
        return link

    async def invites(self) -> list[InviteView]:
        reply = await self.conn.request(ListInvites(self.conn.next_id()), Invites)
        views = []
        for status in reply.invites:
            secret = self.m.invite_secrets.get(status.invite_id)
            link = str(InviteLink(self.m.server, status.invite_id, secret)) if secret else None
            views.append(InviteView(status, link))
        return views

    async def revoke_invite(self, invite_id: str) -> None:
        roster = self.verified
        matches = [i for i in roster.invites if i == invite_id or i.startswith(invite_id)]
        if len(matches) != 1:
            raise UsageError(f"no invite {invite_id!r} in this space (see 'salon invite list')")
        if matches[0] in roster.revoked:
            raise UsageError(f"invite {matches[0]} is already revoked")
        await self.append([InviteRevoke(matches[0])])

    async def set_profile(self, display_name: str | None, avatar: bytes | bool | None) -> None:
        """Publish a new profile. ``avatar``: JPEG bytes, None to remove, True to keep."""
        current = self.profile(self.member_key)
        info = ProfileInfo(
            display_name or current.display_name,
            current.avatar if avatar is True else avatar or None,
        )

        def bodies(roster: Roster) -> list[RecordBody]:
            box = crypto.secretbox(self.space_key(roster.epoch), _encode(info))
            return [Profile(roster.epoch, box)]

        await self.append(bodies)
        self.m.display_name = info.display_name
        self.keystore.update(lambda data: _rename(data, self.m))

    async def set_role(self, member: MemberView, role: Role) -> None:
        await self.append([RoleChange(member.key, role)])

    async def kick(self, member: MemberView, ban: bool) -> None:
        await self.append([Remove(member.key, ban)])

    async def leave(self) -> None:
        """Leave the space and forget this identity (the server ends the session)."""
        await self.append([Leave()], resync=False)
        self.keystore.update(lambda data: _forget(data, self.m))

    async def close(self) -> None:
        await self.conn.close()


# -- entry points ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_space(
    keystore: Keystore, membership: SpaceMembership
) -> AsyncIterator[SpaceSession]:
    """Connect, authenticate and verify one membership."""
    conn = await Connection.open(membership.server)
    try:
        key = crypto.public_signing_key(membership.signing_seed)
        statement = auth_statement(conn.origin, "member", membership.space_id, conn.nonce)
        try:
            await conn.request(
                Authenticate(
                    conn.next_id(),
                    membership.space_id,
                    key,
                    crypto.sign(membership.signing_seed, statement),
                ),
                Welcome,
            )
        except ServerError as exc:
            if exc.code == ErrorCode.UNAUTHENTICATED:
                raise ServerError(exc.code, f"{exc} (space {membership.space_id})") from None
            raise
        session = SpaceSession(keystore, membership, conn)
        await session.sync()
        from client.rooms import share_room_keys  # rooms build on this module

        await share_room_keys(session)
        yield session
    finally:
        await conn.close()


async def create_space(
    keystore: Keystore,
    server: str,
    name: str,
    display_name: str,
    uses: int,
    expires_in: int,
    creation_token: str = "",
) -> tuple[SpaceMembership, InviteLink]:
    """Create a space owned by a fresh identity, with a first invite link."""
    m = _new_membership(check_server_url(server), display_name)
    genesis = Genesis(crypto.public_box_key(m.box_secret), secrets.token_bytes(16))
    space_id = derive_space_id(crypto.public_signing_key(m.signing_seed), genesis)
    space_key = crypto.random_key()
    link = new_invite_link(m.server)
    bodies: list[RecordBody] = [
        genesis,
        SpaceMeta(0, crypto.secretbox(space_key, _encode(SpaceInfo(name)))),
        Profile(0, crypto.secretbox(space_key, _encode(ProfileInfo(display_name)))),
        InviteCreate(
            link.invite_id, link.invite_key, "member", int(time.time()) + expires_in, uses
        ),
    ]
    records = chain(m, space_id, None, bodies)
    m.space_id, m.name = space_id, name
    m.space_keys = {0: space_key}
    m.invite_secrets = {link.invite_id: link.secret}
    conn = await Connection.open(m.server)
    try:
        statement = auth_statement(conn.origin, "create", space_id, conn.nonce)
        await conn.request(
            CreateSpace(
                conn.next_id(),
                records,
                [seal_invite(link, space_id, 0, space_key)],
                crypto.sign(m.signing_seed, statement),
                creation_token,
            ),
            Welcome,
        )
    finally:
        await conn.close()
    m.head_seq, m.head_hash = records[-1].seq, record_hash(records[-1])
    keystore.update(lambda data: data.memberships.append(m))
    return m, link


async def join_space(keystore: Keystore, link_text: str, display_name: str) -> SpaceMembership:
    """Join through an invite link with a fresh identity; returns the stored membership."""
    link = parse_invite_link(link_text)
    m = _new_membership(link.server, display_name)
    conn = await Connection.open(link.server)
    try:
        statement = auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
        invite_sig = crypto.sign(link.signing_seed, statement)
        opened = await conn.request(
            OpenInvite(conn.next_id(), link.invite_id, invite_sig), InviteOpened
        )
        space_id = opened.space_id
        for existing in keystore.load().memberships:
            if existing.space_id == space_id:
                raise UsageError(f"you are already in {existing.name!r} as {existing.display_name}")
        try:
            roster = Roster.from_records(space_id, opened.records)
        except ProtocolError as exc:
            raise VerificationError(
                f"the space's roster fails verification: {exc.message}"
            ) from None
        invite = roster.invites.get(link.invite_id)
        if invite is None or invite.invite_key != link.invite_key:
            raise VerificationError("the server answered for a different invite")
        plain = crypto.secretbox_open(link.seal_key, opened.seal.sealed, "the invite")
        sealed = msgspec.msgpack.decode(plain, type=SealedSpaceKey)
        if sealed.space_id != space_id or sealed.epoch != roster.epoch:
            raise VerificationError("the invite's key belongs to another space or epoch")
        m.space_id = space_id
        m.space_keys = {sealed.epoch: sealed.key}
        member_key = crypto.public_signing_key(m.signing_seed)
        box_key = crypto.public_box_key(m.box_secret)
        join = Join(
            link.invite_id,
            box_key,
            crypto.sign(
                link.signing_seed, join_statement(space_id, member_key, box_key, link.invite_id)
            ),
        )
        profile = Profile(
            roster.epoch, crypto.secretbox(sealed.key, _encode(ProfileInfo(display_name)))
        )
        records = chain(m, space_id, roster, [join, profile])
        await conn.request(
            JoinSpace(
                conn.next_id(),
                link.invite_id,
                invite_sig,
                records,
                crypto.sign(
                    m.signing_seed, auth_statement(conn.origin, "member", space_id, conn.nonce)
                ),
            ),
            Welcome,
        )
    finally:
        await conn.close()
    session = SpaceSession(keystore, m, conn)
    for record in records:
        roster.apply(record)
    session.roster, session.records = roster, opened.records + records
    await session._collect_space_keys(roster)  # walk back to older epochs' keys
    m.head_seq, m.head_hash = roster.head_seq, roster.head_hash
    m.name = session.space_info().name
    keystore.update(lambda data: data.memberships.append(m))
    return m
