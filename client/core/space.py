"""A member's view of one space: connect, verify the roster, hold the space keys, act.

:class:`SpaceSession` is the SDK the CLI (and later the chat and call clients) build on.
Everything it shows has been verified here: the record chain from the founding key, that
the server did not rewrite history we saw before, and every key envelope it opens.

The verified roster is cached in the keystore beside the verified head; a command fetches
only the records after that head (page by page) and verifies them on top of it, so its cost
does not grow with the chain. The first new record must link to the cached head's hash, so
a server cannot swap the history this device already verified.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import msgspec

from client.core import crypto
from client.core.connection import Connection, check_server_url
from client.core.errors import ServerError, UsageError, VerificationError
from client.core.invites import InviteLink, new_invite_link, parse_invite_link
from client.core.keystore import Keystore, KeystoreData, SpaceMembership
from protocol.errors import ErrorCode, ProtocolError
from protocol.forks import FORK_WARNING
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
    Rekey,
    Remove,
    Role,
    RoleChange,
    Roster,
    SpaceMeta,
    decode_roster,
    derive_space_id,
    encode_roster,
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
    Joined,
    JoinSpace,
    ListInvites,
    OpenInvite,
    PutSeals,
    Records,
    Welcome,
    auth_statement,
)

log = logging.getLogger(__name__)
SPACE_SCOPE = "space"
APPEND_RETRIES = 5
INVITE_KEY = "invite-key"  # SpaceMembership.state: the joining invite's key, until checked
INVITE_KEY_REFUSED = (
    "the invite carried a space key that this space's chain does not hold for the epoch of "
    "your join (the server, or someone else who has the link, swapped it, or served an "
    "outdated one); you are on the member list but can read nothing until an owner or "
    "moderator rekeys"
)


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


class PendingInviteKey(msgspec.Struct):
    """The key a joining invite carried, kept until a verified chain shows it (keystore)."""

    sealed: SealedSpaceKey
    join_seq: int


class InvitePreview(msgspec.Struct):
    """What whoever opens an invite link may see before joining (the join screen): sealed
    under the link's preview key, so the server cannot read it."""

    space_id: str
    name: str
    description: str
    inviter: str  # the inviting member's display name


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


def seal_invite(
    link: InviteLink,
    space_id: str,
    epoch: int,
    key: bytes,
    preview: InvitePreview,
    nonces: tuple[bytes, bytes] | None = None,
) -> InviteSeal:
    """``nonces`` (seal, preview) only for known-answer vectors; otherwise random."""
    payload = _encode(SealedSpaceKey(space_id, epoch, key))
    seal_nonce, preview_nonce = nonces if nonces is not None else (None, None)
    return InviteSeal(
        link.invite_id,
        epoch,
        crypto.secretbox(link.seal_key, payload, seal_nonce),
        crypto.secretbox(link.preview_key, _encode(preview), preview_nonce),
    )


def open_preview(link: InviteLink, space_id: str, preview: bytes) -> InvitePreview:
    plain = crypto.secretbox_open(link.preview_key, preview, "the invite's preview")
    try:
        opened = msgspec.msgpack.decode(plain, type=InvitePreview)
    except msgspec.DecodeError:
        raise VerificationError("the invite's preview is malformed") from None
    if opened.space_id != space_id:
        raise VerificationError("the invite's preview belongs to another space")
    return opened


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
        self.warnings: list[str] = []  # what was skipped as bad (also logged), once each
        self._bad: set[int] = set()  # space-key epochs found bad
        self._proven: dict[int, bytes] = {}  # older record hashes proven by load_hash
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

    def hash_at(self, seq: int) -> bytes | None:
        """The hash of record ``seq`` of the chain this device verified, if known here: the
        roster keeps recent hashes and checkpoints (``Roster.hashes``), and :meth:`load_hash`
        proves others. Fork checks (:mod:`protocol.forks`) compare the head references
        other members sign with it, so it must only ever answer from verified records."""
        known = self.verified.hashes.get(seq)
        return known if known is not None else self._proven.get(seq)

    async def load_hash(self, seq: int) -> None:
        """Make :meth:`hash_at` answer for ``seq`` (at or below our head): fetch the records
        from ``seq`` up to the next hash the roster keeps and check that they link to it, so
        the server cannot substitute a record the chain we verified does not hold. The cost
        is bounded by ``HASH_CHECKPOINT`` records, whatever the chain's length."""
        roster = self.verified
        if not 0 <= seq <= roster.head_seq or self.hash_at(seq) is not None:
            return
        anchor = min(k for k in roster.hashes if k > seq)  # the head is always kept
        fetched: list[Record] = []
        while len(fetched) < anchor - seq + 1:
            after = seq - 1 + len(fetched)
            reply = await self.conn.request(GetRecords(self.conn.next_id(), after), Records)
            if not reply.records:
                break
            fetched += reply.records[: anchor - seq + 1 - len(fetched)]
        hashes = [record_hash(r) for r in fetched]
        linked = (
            len(fetched) == anchor - seq + 1
            and all(r.seq == seq + i for i, r in enumerate(fetched))
            and all(fetched[i + 1].prev == hashes[i] for i in range(len(fetched) - 1))
            and hashes[-1] == roster.hashes[anchor]
        )
        if not linked:
            self.warn(
                f"the server could not show roster record #{seq} of the chain this device "
                f"verified: {FORK_WARNING}"
            )
            return
        self._proven.update(zip(range(seq, anchor + 1), hashes, strict=True))

    # -- keeping in step with the server ---------------------------------------------------------

    async def sync(self) -> Roster:
        """Fetch and verify the records after our verified head, collect space keys, rotate
        if someone left."""
        roster = await self._fetch_chain()
        if not self._take_invite_key(roster):
            self.warn(INVITE_KEY_REFUSED)
        await self._collect_space_keys(roster)
        self._remember()
        if self._should_rekey(roster):
            await self.append([])  # append() adds the Rekey record
        else:
            await self._refresh_stale_invites()
        me = self.verified.members.get(self.member_key)
        if (
            me is not None
            and me.profile is None
            and self.m.display_name
            and any(e <= self.verified.epoch for e in self.m.space_keys)
        ):
            # A joiner publishes its profile once it holds the space key, that is after the
            # join (and again here if that step was interrupted).
            await self._publish_profile(ProfileInfo(self.m.display_name))
        return self.verified

    def _take_invite_key(self, roster: Roster) -> bool:
        """Take the space key our join's invite carried once a verified chain shows it is
        the space's key of its epoch (see :func:`key_fits_chain`); False if it was refused."""
        pending = self.m.state.get(INVITE_KEY)
        if not pending:
            return True
        self.m.state[INVITE_KEY] = b""  # decided once (state entries are merged, not removed)
        invite = msgspec.msgpack.decode(pending, type=PendingInviteKey)
        sealed = invite.sealed
        # The key of the epoch our join was made in: an older one (a seal the server kept
        # from before a removal) is one the removed member holds too.
        if invite.join_seq > roster.head_seq or sealed.epoch != roster.epoch_at(invite.join_seq):
            return False
        if not key_fits_chain(roster, sealed.epoch, sealed.key):
            return False
        self.m.space_keys.setdefault(sealed.epoch, sealed.key)
        return True

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

    def _base(self) -> Roster | None:
        """Where verification starts: this session's roster, else the roster cached with the
        remembered head (None: from the genesis, e.g. if the cache is missing)."""
        if self.roster is not None:
            return self.roster.copy()
        m = self.m
        if not m.roster or m.head_seq < 0:
            return None
        try:
            cached = decode_roster(m.roster)
        except ProtocolError:
            return None
        if (cached.space_id, cached.head_seq, cached.head_hash) != (
            m.space_id,
            m.head_seq,
            m.head_hash,
        ):
            return None
        return cached

    async def _fetch_chain(self) -> Roster:
        """Page through the records after our head, verifying each on top of it. Refuses a
        continuation that does not link to our head, a server head behind ours, and (when
        nothing is new) a server head that is ours by seq but not by hash."""
        roster = self._base()
        while True:
            after = roster.head_seq if roster is not None else -1
            reply = await self.conn.request(GetRecords(self.conn.next_id(), after), Records)
            roster = self._extend(roster, reply.records)
            if reply.head_seq < self.m.head_seq:
                raise _rewritten()
            if not reply.records:
                if reply.head_seq < roster.head_seq:
                    raise _rewritten()  # the server dropped records we verified
                if reply.head_seq > roster.head_seq:
                    raise VerificationError(
                        "the server claims records after our head but does not send them"
                    )
                if reply.head_hash != roster.head_hash:
                    raise _rewritten()
                break
            if roster.head_seq >= reply.head_seq:
                if roster.head_seq == reply.head_seq and reply.head_hash != roster.head_hash:
                    raise _rewritten()
                break
        self.roster = roster
        return roster

    def _extend(self, roster: Roster | None, records: list[Record]) -> Roster:
        m = self.m
        try:
            for record in records:
                if roster is None:
                    roster = Roster.from_records(self.space_id, [record])
                elif record is records[0] and roster.head_seq >= 0:
                    try:
                        roster.apply(record)
                    except ChainConflict:
                        raise _rewritten() from None
                else:
                    roster.apply(record)
                if roster.head_seq == m.head_seq and roster.head_hash != m.head_hash:
                    raise _rewritten()
        except ProtocolError as exc:
            raise VerificationError(
                f"the server's roster for this space fails verification: {exc.message}"
            ) from None
        if roster is None:
            raise VerificationError("the server sent an empty chain for this space")
        return roster

    async def _collect_space_keys(self, roster: Roster) -> None:
        """Open our envelopes for epochs we lack, then walk back through the rekey records.
        A bad envelope or rekey (from a malicious member or server) is warned about and
        skipped, never fatal: a later honest rekey repairs the space (see _should_rekey)."""
        keys = self.m.space_keys
        # The epochs between the current one and the newest key we hold, following each
        # rekey's prev_epoch (so an epoch a repair stepped over is not fetched again).
        wanted: set[int] = set()
        epoch = roster.epoch
        while epoch not in keys and epoch in roster.rekeys:
            wanted.add(epoch)
            epoch = roster.rekeys[epoch].prev_epoch
        if wanted and self.member_key in roster.members:
            reply = await self.conn.request(
                GetEnvelopes(self.conn.next_id(), SPACE_SCOPE, min(wanted)), Envelopes
            )
            # Oldest first, so each new key can be checked against the one before it.
            for envelope in sorted(reply.envelopes, key=lambda e: e.epoch):
                if envelope.epoch in wanted:
                    self._open_space_envelope(roster, envelope)
            epoch = roster.epoch
            if epoch not in keys and epoch not in self._bad:
                self._bad_rekey(roster, epoch, "was not sealed to us")
        # Walk back: each rekey record carries the key of its prev_epoch under the new one.
        for epoch in sorted(keys, reverse=True):
            while epoch in roster.rekeys and roster.rekeys[epoch].prev_epoch not in keys:
                rekey = roster.rekeys[epoch]
                try:
                    keys[rekey.prev_epoch] = crypto.secretbox_open(
                        keys[epoch], rekey.prev_box, "a key"
                    )
                except VerificationError:
                    self._bad_rekey(roster, epoch, "does not carry the previous key")
                    break
                epoch = rekey.prev_epoch

    def _open_space_envelope(self, roster: Roster, envelope: Envelope) -> None:
        epoch = envelope.epoch
        rekey = roster.rekeys.get(epoch)
        if rekey is None or epoch in self.m.space_keys or envelope.recipient != self.member_key:
            return  # for an epoch the chain never made, or one we hold
        if envelope.sender != roster.rekey_authors[epoch]:
            self._bad_rekey(roster, epoch, "came with an envelope from someone else")
            return
        try:
            # The sealed plaintext names (space, "space", epoch): a relabelled envelope fails.
            sealed = crypto.open_key(
                self.m.box_secret,
                roster.box_keys[envelope.sender],
                envelope.box,
                self.space_id,
                SPACE_SCOPE,
                epoch,
            )
        except VerificationError as exc:
            self._bad_rekey(roster, epoch, f"was sealed to us so that it does not open ({exc})")
            return
        if sealed.generation != 0:
            self._bad_rekey(roster, epoch, "claims a key generation")
            return
        key = sealed.key
        previous = self.m.space_keys.get(rekey.prev_epoch)
        if previous is not None:
            # Bind the envelope to the signed rekey record: the new key must unlock the old.
            try:
                inner = crypto.secretbox_open(key, rekey.prev_box, "a key")
            except VerificationError:
                inner = b""
            if inner != previous:
                self._bad_rekey(roster, epoch, "does not match its rekey record")
                return
        self.m.space_keys[epoch] = key

    def _bad_rekey(self, roster: Roster, epoch: int, why: str) -> None:
        self._bad.add(epoch)
        author = fingerprint(roster.rekey_authors[epoch])
        self.warn(
            f"the space key of epoch {epoch} (rekey by {author}) {why}; skipped it until "
            "an owner or moderator rekeys"
        )

    def warn(self, text: str) -> None:
        """Report something skipped as bad (once per session): logged, and kept in
        ``warnings`` for the caller."""
        if text not in self.warnings:
            self.warnings.append(text)
            log.warning("%s", text)

    def _should_rekey(self, roster: Roster) -> bool:
        """Rekey after a departure, or to repair a current epoch whose key we could not get
        (a bad rekey), when the rules let us and we hold an older key to chain from."""
        keys = self.m.space_keys
        return (
            roster.may_rekey(self.member_key)
            and (roster.needs_rekey or roster.epoch not in keys)
            and any(e <= roster.epoch for e in keys)
        )

    def _remember(self) -> None:
        """Persist the verified head, keys and names for the next command."""
        roster = self.verified
        m = self.m
        m.head_seq, m.head_hash = roster.head_seq, roster.head_hash
        m.roster = encode_roster(roster)
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
                        stored.roster = m.roster
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
            scratch = roster.copy()
            records = chain(self.m, self.space_id, roster, bodies)
            try:
                for record in records:
                    scratch.apply(record)
            except ProtocolError as exc:
                # The refusal the server would answer (e.g. over the profile quota), made here.
                raise ServerError(exc.code, exc.message) from None
            sealed: list[Envelope] = []
            new_key: tuple[int, bytes] | None = None
            if self._should_rekey(scratch):
                new_key = (scratch.epoch + 1, crypto.random_key())
                # Chain from the newest key we hold: the current one, or (repairing a bad
                # rekey) the last good one before it.
                prev_epoch = max(e for e in self.m.space_keys if e <= scratch.epoch)
                rekey = Rekey(
                    new_key[0],
                    prev_epoch,
                    crypto.secretbox(new_key[1], self.space_key(prev_epoch)),
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
            if not records and not sealed and not all_seals:
                # Nothing left to do: e.g. a rekey we raced another member for, which
                # they made first (the retry's sync saw it).
                return self.verified
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

    def invite_preview(self) -> InvitePreview:
        """The join screen of this member's invite links: the space's name and ours."""
        try:
            info = self.space_info()
        except VerificationError:
            info = SpaceInfo(name="")
        return InvitePreview(self.space_id, info.name, info.description, self.m.display_name)

    def _reseal_invites(self, roster: Roster, epoch: int, key: bytes) -> list[InviteSeal]:
        seals = []
        preview = self.invite_preview()
        for invite_id, secret in self.m.invite_secrets.items():
            invite = roster.invites.get(invite_id)
            if invite is None or invite_id in roster.revoked:
                continue
            if invite.expires_at <= time.time():
                continue
            link = InviteLink(self.m.server, invite_id, secret)
            seals.append(seal_invite(link, self.space_id, epoch, key, preview))
        return seals

    async def create_invite(self, uses: int, expires_in: int, role: Role) -> InviteLink:
        link = new_invite_link(self.m.server)
        body = InviteCreate(
            link.invite_id, link.invite_key, role, int(time.time()) + expires_in, uses
        )
        self.m.invite_secrets[link.invite_id] = link.secret
        preview = self.invite_preview()
        await self.append(
            [body],
            lambda r: [seal_invite(link, self.space_id, r.epoch, self.space_key(r.epoch), preview)],
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

        await self._publish_profile(info)
        self.m.display_name = info.display_name
        self.keystore.update(lambda data: _rename(data, self.m))

    async def _publish_profile(self, info: ProfileInfo) -> None:
        def bodies(roster: Roster) -> list[RecordBody]:
            # The newest space key we hold: the current one unless a bad rekey withheld it.
            epoch = max((e for e in self.m.space_keys if e <= roster.epoch), default=-1)
            box = crypto.secretbox(self.space_key(epoch), _encode(info))
            return [Profile(epoch, box)]

        await self.append(bodies)

    async def set_role(self, member: MemberView, role: Role) -> None:
        await self.append([RoleChange(member.key, role)])

    async def kick(self, member: MemberView, ban: bool, keep_links: bool = False) -> list[str]:
        """Remove a member (the append rekeys). A ban also revokes, unless ``keep_links``,
        the live links the banned member may know: every multi-use link, and every link
        they made. Returns the ids of the revoked links."""
        revoked: list[str] = []

        def bodies(roster: Roster) -> list[RecordBody]:
            revoked[:] = [] if not ban or keep_links else links_known_to(roster, member.key)
            return [Remove(member.key, ban), *(InviteRevoke(i) for i in revoked)]

        await self.append(bodies)
        return revoked

    async def leave(self) -> None:
        """Leave the space and forget this identity (the server ends the session)."""
        await self.append([Leave()], resync=False)
        self.keystore.update(lambda data: _forget(data, self.m))

    async def close(self) -> None:
        await self.conn.close()

    async def reconnect(self) -> None:
        """A new connection to the membership's server (any instance behind its address),
        authenticated and synced; after this, :attr:`conn` is the new one and the old one
        is closed. Raises (the old connection kept) if the server cannot be reached."""
        conn = await Connection.open(self.m.server)
        try:
            await _authenticate(conn, self.m)
        except BaseException:
            await conn.close()
            raise
        old, self.conn = self.conn, conn
        await old.close()
        await self.sync()


def links_known_to(roster: Roster, member: bytes, now: float | None = None) -> list[str]:
    """Live invites a member may have seen while in the space: multi-use links (shared
    where members read them) and the links that member made."""
    now = time.time() if now is None else now
    return [
        invite_id
        for invite_id, invite in roster.invites.items()
        if invite_id not in roster.revoked
        and invite.expires_at > now
        and roster.invite_uses.get(invite_id, 0) < invite.max_uses
        and (invite.max_uses > 1 or roster.invite_authors.get(invite_id) == member)
    ]


# -- entry points ------------------------------------------------------------------------------


async def _authenticate(conn: Connection, membership: SpaceMembership) -> None:
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


@contextlib.asynccontextmanager
async def open_space(
    keystore: Keystore, membership: SpaceMembership
) -> AsyncIterator[SpaceSession]:
    """Connect, authenticate and verify one membership."""
    conn = await Connection.open(membership.server)
    session: SpaceSession | None = None
    try:
        await _authenticate(conn, membership)
        session = SpaceSession(keystore, membership, conn)
        await session.sync()
        from client.core.rooms import share_room_keys  # rooms build on this module

        await share_room_keys(session)
        yield session
    finally:
        await conn.close()
        if session is not None and session.conn is not conn:  # it reconnected
            await session.conn.close()


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
                [
                    seal_invite(
                        link,
                        space_id,
                        0,
                        space_key,
                        InvitePreview(space_id, name, "", display_name),
                    )
                ],
                crypto.sign(m.signing_seed, statement),
                creation_token,
            ),
            Welcome,
        )
    finally:
        await conn.close()
    m.head_seq, m.head_hash = records[-1].seq, record_hash(records[-1])
    m.roster = encode_roster(Roster.from_records(space_id, records))
    keystore.update(lambda data: data.memberships.append(m))
    return m, link


@dataclass(frozen=True)
class InviteView2:
    pass


async def preview_invite(link_text: str) -> tuple[InvitePreview, InviteOpened]:
    """What an invite link shows before joining (nothing is recorded, no use consumed)."""
    link = parse_invite_link(link_text)
    conn = await Connection.open(link.server)
    try:
        statement = auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
        opened = await conn.request(
            OpenInvite(conn.next_id(), link.invite_id, crypto.sign(link.signing_seed, statement)),
            InviteOpened,
        )
    finally:
        await conn.close()
    return open_preview(link, opened.space_id, opened.preview), opened


async def join_space(keystore: Keystore, link_text: str, display_name: str) -> SpaceMembership:
    """Join through an invite link with a fresh identity; returns the stored membership.

    Opening the link yields only the preview and the head; the space key comes with the
    recorded join. Then, as a member, this verifies the chain like any sync and publishes
    the profile (which needs the space key, so it follows the join)."""
    link = parse_invite_link(link_text)
    m = _new_membership(link.server, display_name)
    member_key = crypto.public_signing_key(m.signing_seed)
    box_key = crypto.public_box_key(m.box_secret)
    conn = await Connection.open(link.server)
    try:
        statement = auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
        invite_sig = crypto.sign(link.signing_seed, statement)
        for _ in range(APPEND_RETRIES):
            opened = await conn.request(
                OpenInvite(conn.next_id(), link.invite_id, invite_sig), InviteOpened
            )
            space_id = opened.space_id
            preview = open_preview(link, space_id, opened.preview)
            for existing in keystore.load().memberships:
                if existing.space_id == space_id:
                    raise UsageError(
                        f"you are already in {existing.name!r} as {existing.display_name}"
                    )
            statement = join_statement(space_id, member_key, box_key, link.invite_id)
            join = Join(link.invite_id, box_key, crypto.sign(link.signing_seed, statement))
            record = _sign(m, space_id, opened.head_seq + 1, opened.head_hash, join)
            member_sig = crypto.sign(
                m.signing_seed, auth_statement(conn.origin, "member", space_id, conn.nonce)
            )
            try:
                joined = await conn.request(
                    JoinSpace(conn.next_id(), link.invite_id, invite_sig, record, member_sig),
                    Joined,
                )
                break
            except ServerError as exc:
                if exc.code != ErrorCode.CONFLICT:
                    raise
        else:
            raise ServerError("conflict", "the space is changing too fast; try again")
        plain = crypto.secretbox_open(link.seal_key, joined.seal.sealed, "the invite")
        sealed = msgspec.msgpack.decode(plain, type=SealedSpaceKey)
        if joined.space_id != space_id or sealed.space_id != space_id:
            raise VerificationError("the invite's key belongs to another space")
        # The join is on the chain now: keep the identity even if what follows fails.
        m.space_id, m.name = space_id, preview.name
        # The seal is the server's to swap, with anyone who knows the link's secret: its key
        # waits until the sync below has verified the chain and found it there.
        m.state[INVITE_KEY] = _encode(PendingInviteKey(sealed, record.seq))
        keystore.update(lambda data: data.memberships.append(m))
        session = SpaceSession(keystore, m, conn)
        roster = await session._fetch_chain()
        await session.load_hash(record.seq)
        if session.hash_at(record.seq) != record_hash(record):
            raise VerificationError("the server's chain does not hold this join")
        if not session._take_invite_key(roster):
            session._remember()
            raise VerificationError(INVITE_KEY_REFUSED)
        await session.sync()  # verifies the chain, then publishes our profile
    finally:
        await conn.close()
    return m


def key_fits_chain(roster: Roster, epoch: int, key: bytes) -> bool:
    """Is ``key`` the space key of ``epoch`` by the verified chain? A later epoch's key opens
    the signed rekey record that began it (``prev_box``); epoch 0's opens the space's name
    (or, without one, a profile) sealed at epoch 0. An authenticated box opens under no other
    key, so whoever knows only an invite link cannot make one that passes."""
    if epoch > 0:
        rekey = roster.rekeys.get(epoch)
        boxes = [rekey.prev_box] if rekey is not None and epoch <= roster.epoch else []
    elif roster.meta is not None and roster.meta.epoch == 0:
        boxes = [roster.meta.box]
    else:
        profiles = [m.profile for m in roster.members.values()]
        boxes = [
            p.box
            for p in [*profiles, *roster.former_profiles.values()]
            if p is not None and p.epoch == 0
        ]
    for box in boxes:
        with contextlib.suppress(VerificationError):
            crypto.secretbox_open(key, box, "a key")
            return True
    return False


def _rewritten() -> VerificationError:
    return VerificationError(
        "the server rewrote this space's history (it differs from what this device "
        "verified before); refusing it"
    )
