"""Spaces, invites, joins and the record chain: the server's membership logic.

No HTTP here: the WebSocket edge (:mod:`spaces.handlers.session`) authenticates a session and calls
these methods with already-decoded messages. Every record goes through the same
:class:`~protocol.records.Roster` rules the clients apply, so the server refuses what an honest
client would refuse; clients still verify everything themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from protocol.errors import (
    Conflict,
    ErrorCode,
    Expired,
    Forbidden,
    InvalidMessage,
    NotFound,
    ProtocolError,
    RateLimited,
    Revoked,
    TooLarge,
    Unauthenticated,
    UsedUp,
)
from protocol.records import (
    Genesis,
    InviteCreate,
    Join,
    Leave,
    Profile,
    Record,
    RecordError,
    Rekey,
    Remove,
    RoomKey,
    Roster,
    decode_record,
    derive_space_id,
    encode_record,
    record_hash,
    verify_signature,
)
from protocol.wire import (
    Envelope,
    InviteSeal,
    InviteStatus,
    RecordAdded,
    SessionClosed,
)
from spaces.config import Config
from spaces.hub import Hub
from spaces.limits import KeyedLimiter
from spaces.storage.interfaces import Store, StoredRecord

log = logging.getLogger(__name__)
SPACE_SCOPE = "space"


class Stale(ProtocolError):
    code = ErrorCode.STALE


@dataclass(frozen=True)
class OpenedInvite:
    space_id: str
    invite: InviteCreate
    seal: InviteSeal
    roster: Roster


class Membership:
    def __init__(
        self, store: Store, config: Config, hub: Hub, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.config = config
        self.hub = hub
        self.clock = clock
        self._rosters: dict[str, Roster] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        limits = config.limits
        # Per (space, member): records of any kind, and profile changes (the chain every
        # client fetches must not grow at one member's whim; see also the roster's quota).
        self._record_limiter = KeyedLimiter(
            limits.records_per_minute_per_member / 60, limits.record_burst_per_member, clock
        )
        self._profile_limiter = KeyedLimiter(
            limits.profiles_per_hour_per_member / 3600, limits.profile_burst_per_member, clock
        )

    def _lock(self, space_id: str) -> asyncio.Lock:
        return self._locks.setdefault(space_id, asyncio.Lock())

    async def roster(self, space_id: str) -> Roster:
        """The verified roster of a space, loaded from storage on first use."""
        roster = self._rosters.get(space_id)
        if roster is not None:
            return roster
        async with self._lock(space_id):
            if space_id in self._rosters:
                return self._rosters[space_id]
            stored = await self.store.load_records(space_id)
            if not stored:
                # Forget the lock: anyone may name any space id, and each would stay.
                self._locks.pop(space_id, None)
                raise NotFound("no such space")
            records = [decode_record(data) for data in stored]
            roster = Roster.from_records(space_id, records)
            self._rosters[space_id] = roster
            return roster

    async def records(self, space_id: str, after: int = -1) -> list[Record]:
        """Every record with seq > after (for a newcomer, who verifies from the genesis)."""
        await self.roster(space_id)
        return [decode_record(data) for data in await self.store.load_records(space_id, after)]

    async def records_page(self, space_id: str, after: int = -1) -> tuple[list[Record], Roster]:
        """One bounded page of the records with seq > after, and the roster (for its head):
        at most ``records_page_max`` records and about ``records_page_bytes`` bytes, but at
        least one record when there are any."""
        await self.roster(space_id)
        limits = self.config.limits
        page: list[Record] = []
        size = 0
        for data in await self.store.load_records(space_id, after, limits.records_page_max):
            size += len(data)
            if page and size > limits.records_page_bytes:
                break
            page.append(decode_record(data))
        # The roster as of after the read, so its head is normally at or past the page's end
        # (an append committing during the read can leave it one batch behind; clients
        # accept a page that runs past the head they were told).
        return page, self._rosters[space_id]

    # -- creation ------------------------------------------------------------------------------

    async def create_space(
        self, records: Sequence[Record], seals: Sequence[InviteSeal], token: str
    ) -> Roster:
        spaces = self.config.spaces
        if not spaces.allow_create and token not in spaces.creation_tokens:
            raise Forbidden("this server needs a creation token to create spaces")
        self._check_sizes(records, (), seals)
        if not records or not isinstance(records[0].body, Genesis):
            raise InvalidMessage("a new space starts with its genesis record")
        genesis = records[0]
        assert isinstance(genesis.body, Genesis)
        space_id = derive_space_id(genesis.author, genesis.body)
        if await self.store.space_exists(space_id):
            raise InvalidMessage("this space exists already")
        roster = Roster(space_id=space_id, founder=genesis.author)
        for record in records:
            roster.apply(record)
        self._check_seals(roster, seals)
        async with self._lock(space_id):
            await self.store.append(
                space_id, [self._stored(r) for r in records], seals=seals, create=True
            )
            self._rosters[space_id] = roster
        log.info("space created (%d records)", len(records))
        return roster

    # -- invites and joins ---------------------------------------------------------------------

    async def open_invite(self, invite_id: str, statement: bytes, sig: bytes) -> OpenedInvite:
        """Look up a usable invite, signed for by its invite key; raises Unauthenticated/
        NotFound/Revoked/Expired/UsedUp/Stale. The signature is checked first: the invite
        id travels in the URL's path, and whoever has only that learns nothing of the
        link's state (nor that the membership changed since it was made)."""
        found = await self.store.invite_seal(invite_id)
        if found is None:
            raise NotFound("unknown invite link")
        space_id, seal = found
        roster = await self.roster(space_id)
        if seal.epoch > roster.epoch or invite_id not in roster.invites:
            # Made or sealed through another instance, whose event is on its way.
            await self._catch_up(space_id)
            roster = await self.roster(space_id)
        invite = roster.invites.get(invite_id)
        if invite is None:
            raise NotFound("unknown invite link")
        if not verify_signature(invite.invite_key, statement, sig):
            raise Unauthenticated("the invite signature does not match this link")
        if invite_id in roster.revoked:
            raise Revoked("this invite link was revoked")
        if invite.expires_at <= self.clock():
            raise Expired("this invite link has expired")
        if roster.invite_uses.get(invite_id, 0) >= invite.max_uses:
            raise UsedUp("this invite link has been used up")
        if seal.epoch != roster.epoch or not seal.sealed:
            raise Stale(
                "this invite link predates a membership change and no moderator has refreshed "
                "it yet; ask for a new link"
            )
        return OpenedInvite(space_id, invite, seal, roster)

    async def join(self, opened: OpenedInvite, record: Record) -> bytes:
        """Append a joiner's Join record (using up one use of the invite); returns the new
        member key. Only after this may the invite's seal (the space key) be handed out."""
        join = record.body
        if not isinstance(join, Join):
            raise InvalidMessage("a join sends its join record")
        if join.invite_id != opened.invite.invite_id:
            raise InvalidMessage("join record names another invite")
        if opened.roster.departed.get(record.author):
            raise Forbidden("you are banned from this space")
        await self.append(opened.space_id, record.author, [record], allow_join=True)
        return record.author

    # -- appends -------------------------------------------------------------------------------

    async def append(
        self,
        space_id: str,
        author: bytes,
        records: Sequence[Record],
        envelopes: Sequence[Envelope] = (),
        seals: Sequence[InviteSeal] = (),
        *,
        allow_join: bool = False,
    ) -> int:
        """Validate and durably append records by ``author``; returns the new head seq."""
        self._check_sizes(records, envelopes, seals)
        if not records and not envelopes and not seals:
            raise InvalidMessage("nothing to append")
        roster = await self.roster(space_id)
        if records and records[0].seq > roster.head_seq + 1:
            await self._catch_up(space_id)  # the author saw records another instance added
        async with self._lock(space_id):
            roster = self._rosters[space_id]
            for record in records:
                if record.author != author:
                    raise Forbidden("records must be signed by the session's member")
                if isinstance(record.body, Join) and not allow_join:
                    raise InvalidMessage("joins go through an invite")
            if not allow_join:
                roster.active(author)
            self._check_clock(records)
            # Validate on a scratch copy: a bad record in the batch must change nothing.
            scratch = roster.copy()
            for record in records:
                scratch.apply(record)
            _check_rekey(records, scratch, envelopes)
            started = {
                (r.body.room_id, r.body.epoch)
                for r in records
                if isinstance(r.body, RoomKey)
                and (r.body.room_id, r.body.epoch) not in roster.room_key_epochs
            }
            await self._check_envelopes(space_id, scratch, author, envelopes, started)
            self._check_seals(scratch, seals)
            self._take_quotas(space_id, author, records)
            try:
                await self.store.append(
                    space_id, [self._stored(r) for r in records], envelopes=envelopes, seals=seals
                )
            except Conflict:
                # Another instance appended first (its event is on its way): catch up, so
                # the author's retry is checked against the chain as it now stands.
                behind = True
            else:
                behind = False
                self._rosters[space_id] = scratch
        if behind:
            await self._catch_up(space_id)
            raise Conflict("the space changed meanwhile; sync and try again")
        await self._announce(space_id, records)
        await self._forget_dead_invites(scratch, records)
        return scratch.head_seq

    # -- other instances (spaces.events) ---------------------------------------------------------

    async def remote_records(self, args: list[str | int]) -> None:
        """Another instance appended records to a space up to ``head_seq``: bring the cached
        roster up to date from the store and announce the new records here."""
        space_id, head_seq = str(args[0]), int(args[1])
        roster = self._rosters.get(space_id)
        if roster is not None and roster.head_seq < head_seq:
            await self._catch_up(space_id)

    async def resync(self) -> None:
        """Events may have been missed: catch every cached roster up with the store."""
        for space_id in list(self._rosters):
            await self._catch_up(space_id)

    async def _catch_up(self, space_id: str) -> list[Record]:
        """Apply (and announce) the records stored after the cached roster's head."""
        async with self._lock(space_id):
            roster = self._rosters.get(space_id)
            if roster is None:
                return []
            stored = await self.store.load_records(space_id, roster.head_seq)
            records = [decode_record(data) for data in stored]
            if records:
                scratch = roster.copy()
                for record in records:
                    scratch.apply(record)
                self._rosters[space_id] = scratch
        if records:
            await self._announce(space_id, records)
        return records

    async def _announce(self, space_id: str, records: Sequence[Record]) -> None:
        for record in records:
            self.hub.publish(space_id, RecordAdded(record))
            body = record.body
            if isinstance(body, Remove):
                reason = "banned" if body.ban else "removed"
                self.hub.close_member(space_id, body.member, SessionClosed(reason))
            elif isinstance(body, Leave):
                self.hub.close_member(space_id, record.author, SessionClosed("left"))

    async def _forget_dead_invites(self, roster: Roster, records: Sequence[Record]) -> None:
        """Drop the seals of invites that can no longer be used, so nothing lingers."""
        touched = {r.body.invite_id for r in records if hasattr(r.body, "invite_id")}
        dead = [
            invite_id
            for invite_id in touched
            if invite_id in roster.revoked
            or roster.invite_uses.get(invite_id, 0) >= roster.invites[invite_id].max_uses
        ]
        await self.store.wipe_invite_seals(dead)

    async def sweep_expired_invites(self) -> int:
        now = self.clock()
        dead = [
            invite_id
            for roster in self._rosters.values()
            for invite_id, invite in roster.invites.items()
            if invite.expires_at <= now
        ]
        await self.store.wipe_invite_seals(dead)
        return len(dead)

    def _check_clock(self, records: Sequence[Record]) -> None:
        """Signed times near our clock, so the roster's profile quota (over signed times)
        is a real rate."""
        now = self.clock()
        skew = self.config.limits.record_clock_skew_seconds
        for record in records:
            if abs(record.created_at - now) > skew:
                raise InvalidMessage(
                    f"record {record.seq} is signed with a time more than {skew} s from the "
                    "server's clock; check this device's clock"
                )

    def _take_quotas(self, space_id: str, author: bytes, records: Sequence[Record]) -> None:
        """Server policy on top of the roster's rules: token buckets per member for records
        and for profile changes (taken only for valid records)."""
        if not records:
            return
        key = f"{space_id}/{author.hex()}"
        profiles = sum(isinstance(r.body, Profile) for r in records)
        if profiles and not self._profile_limiter.allow(key, profiles):
            raise RateLimited("too many profile changes from this member; wait a while")
        if not self._record_limiter.allow(key, len(records)):
            raise RateLimited("too many records from this member; wait a minute")

    def _check_sizes(
        self,
        records: Sequence[Record],
        envelopes: Sequence[Envelope],
        seals: Sequence[InviteSeal],
    ) -> None:
        limits = self.config.limits
        if len(records) + len(seals) > limits.max_records_per_append:
            raise TooLarge(f"at most {limits.max_records_per_append} records per request")
        if len(envelopes) > limits.max_envelopes_per_append:
            raise TooLarge(f"at most {limits.max_envelopes_per_append} envelopes per request")
        for record in records:
            if len(encode_record(record)) > limits.max_record_bytes:
                raise TooLarge(f"a record is larger than {limits.max_record_bytes} bytes")

    async def _check_envelopes(
        self,
        space_id: str,
        roster: Roster,
        sender: bytes,
        envelopes: Sequence[Envelope],
        started: Set[tuple[str, int]] = frozenset(),
    ) -> None:
        """Envelopes carry the current epoch's key of the space or of a room. A room key
        is sealed only once some member committed to it on the chain (a RoomKey record, in
        this append or before): clients accept only the committed key, so the server needs
        no first-sealer rule of its own. The first commitment of a room's key in an epoch
        (``started``) comes with the key sealed to every member who holds no envelope for
        that room and epoch: first commitments win, so one shared with nobody would lock the
        room for the whole epoch (later generations are derived by every holder)."""
        for room_id, epoch in started:
            holders = await self.store.envelope_holders(space_id, room_id, epoch)
            holders |= {e.recipient for e in envelopes if (e.scope, e.epoch) == (room_id, epoch)}
            if not holders >= set(roster.members):
                raise InvalidMessage(
                    "a room key commitment must come with the key sealed to every member "
                    f"who lacks it ({len(set(roster.members) - holders)} missing)"
                )
        for envelope in envelopes:
            if envelope.sender != sender:
                raise Forbidden("envelopes must come from the session's member")
            if envelope.recipient not in roster.members:
                raise InvalidMessage("envelope for someone who is not a member")
            if envelope.epoch != roster.epoch:
                raise InvalidMessage("key envelopes must be for the current epoch")
            if envelope.scope == SPACE_SCOPE:
                continue  # checked with the rekey they travel with (_check_rekey)
            if envelope.scope not in roster.rooms:
                raise InvalidMessage("envelope for an unknown room")
            if (envelope.scope, envelope.epoch) not in roster.room_key_epochs:
                raise InvalidMessage("envelope for a room key nobody committed to")

    @staticmethod
    def _check_seals(roster: Roster, seals: Sequence[InviteSeal]) -> None:
        for seal in seals:
            if seal.invite_id not in roster.invites:
                raise InvalidMessage("seal for an unknown invite")
            if seal.epoch != roster.epoch:
                raise InvalidMessage("invite seals must carry the current space key")

    async def invite_statuses(self, space_id: str, member: bytes) -> list[InviteStatus]:
        roster = await self.roster(space_id)
        if roster.active(member).role == "member":
            raise Forbidden("only owners and moderators can list invites")
        epochs = await self.store.invite_epochs(space_id)
        return [
            InviteStatus(
                invite_id=invite.invite_id,
                role=invite.role,
                expires_at=invite.expires_at,
                max_uses=invite.max_uses,
                uses=roster.invite_uses.get(invite.invite_id, 0),
                revoked=invite.invite_id in roster.revoked,
                seal_epoch=epochs.get(invite.invite_id, -1),
            )
            for invite in roster.invites.values()
        ]

    async def put_seals(self, space_id: str, member: bytes, seals: Sequence[InviteSeal]) -> None:
        roster = await self.roster(space_id)
        if roster.active(member).role == "member":
            raise Forbidden("only owners and moderators can refresh invites")
        self._check_sizes((), (), seals)
        self._check_seals(roster, seals)
        await self.store.put_seals(space_id, seals)

    async def envelope_holders(
        self, space_id: str, member: bytes, scope: str, epoch: int
    ) -> set[bytes]:
        roster = await self.roster(space_id)
        roster.active(member)
        return await self.store.envelope_holders(space_id, scope, epoch)

    async def drop_envelope(self, space_id: str, member: bytes, scope: str, epoch: int) -> None:
        """A member refuses its own envelope (it affects nobody else's keys)."""
        roster = await self.roster(space_id)
        roster.active(member)
        await self.store.drop_envelope(space_id, scope, epoch, member)

    async def envelopes(
        self, space_id: str, member: bytes, scope: str, min_epoch: int
    ) -> list[Envelope]:
        roster = await self.roster(space_id)
        roster.active(member)
        return await self.store.envelopes(space_id, scope, member, min_epoch)

    @staticmethod
    def _stored(record: Record) -> StoredRecord:
        return StoredRecord(record.seq, record_hash(record), encode_record(record))


def _check_rekey(records: Sequence[Record], roster: Roster, envelopes: Sequence[Envelope]) -> None:
    """Space-key envelopes travel only with the Rekey that makes their epoch, as the last
    record of the append, one envelope for every member after it and for nobody else: a
    rekey that leaves someone without the key would lock them out of the space."""
    rekeys = [i for i, r in enumerate(records) if isinstance(r.body, Rekey)]
    space = [e for e in envelopes if e.scope == SPACE_SCOPE]
    if not rekeys:
        if space:
            raise InvalidMessage("space-key envelopes travel only with a rekey")
        return
    if rekeys != [len(records) - 1]:
        raise InvalidMessage("a rekey is the last record of its append, and there is one")
    recipients = [e.recipient for e in space]
    expected = set(roster.members)
    if len(recipients) != len(set(recipients)) or set(recipients) != expected:
        missing = len(expected - set(recipients))
        raise InvalidMessage(
            "a rekey must seal the new space key once to every current member "
            f"({missing} missing, {len(set(recipients) - expected)} not members, "
            f"{len(recipients) - len(set(recipients))} duplicates)"
        )


__all__ = ["SPACE_SCOPE", "Membership", "OpenedInvite", "RecordError", "Stale"]
