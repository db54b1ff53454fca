"""Member requests on a space's chain: records, appends, invites, key envelopes and seals.

Each route only unpacks the request, calls :class:`~spaces.membership.Membership` and packs
the answer.
"""

from __future__ import annotations

import msgspec

from protocol.wire import (
    Append,
    Appended,
    Done,
    DropEnvelope,
    EnvelopeHolders,
    Envelopes,
    GetEnvelopeHolders,
    GetEnvelopes,
    GetRecords,
    Invites,
    ListInvites,
    PutSeals,
    Records,
)
from spaces.services import MEMBERSHIP, Caller, Route


async def get_records(caller: Caller, message: GetRecords) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    (await m.roster(caller.space_id)).active(caller.member)
    page, roster = await m.records_page(caller.space_id, message.after)
    return Records(message.id, page, roster.head_seq, roster.head_hash)


async def append(caller: Caller, message: Append) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    head = await m.append(
        caller.space_id, caller.member, message.records, message.envelopes, message.seals
    )
    return Appended(message.id, head)


async def list_invites(caller: Caller, message: ListInvites) -> msgspec.Struct:
    statuses = await caller.app[MEMBERSHIP].invite_statuses(caller.space_id, caller.member)
    return Invites(message.id, statuses)


async def get_envelopes(caller: Caller, message: GetEnvelopes) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    found = await m.envelopes(caller.space_id, caller.member, message.scope, message.min_epoch)
    return Envelopes(message.id, found)


async def drop_envelope(caller: Caller, message: DropEnvelope) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    await m.drop_envelope(caller.space_id, caller.member, message.scope, message.epoch)
    return Done(message.id)


async def envelope_holders(caller: Caller, message: GetEnvelopeHolders) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    holders = await m.envelope_holders(caller.space_id, caller.member, message.scope, message.epoch)
    return EnvelopeHolders(message.id, sorted(holders))


async def put_seals(caller: Caller, message: PutSeals) -> msgspec.Struct:
    await caller.app[MEMBERSHIP].put_seals(caller.space_id, caller.member, message.seals)
    return Done(message.id)


MEMBERSHIP_ROUTES: dict[type, Route] = {
    GetRecords: get_records,
    Append: append,
    ListInvites: list_invites,
    GetEnvelopes: get_envelopes,
    GetEnvelopeHolders: envelope_holders,
    DropEnvelope: drop_envelope,
    PutSeals: put_seals,
}
