"""Every message of the WebSocket protocol, in one place (DESIGN §3).

Frames are binary MessagePack. Each message is a tagged msgspec struct, so decoding validates
types and shapes and a bad frame becomes an ``invalid_message`` error naming the bad field.
Requests carry an ``id`` that the response echoes; events carry none.

Flow: the server sends :class:`Challenge`; the client's first request is one of
:class:`CreateSpace`, :class:`Authenticate`, :class:`OpenInvite` or :class:`JoinSpace`, each
signing the challenge with :func:`auth_statement`; afterwards the session is bound to one
membership and may send the member requests.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.chat_wire import (
    FetchMessages,
    FetchStoryPart,
    ListStories,
    Messages,
    MessagesAdded,
    MessageSent,
    PostStory,
    SendMessage,
    Stories,
    StoryChunkStored,
    StoryPart,
    StoryPosted,
    UploadStoryChunk,
)
from protocol.conference_wire import (
    ActInCall,
    CallEnded,
    CallInfo,
    CallJoined,
    CallSignal,
    CallSpeaker,
    CallUpdate,
    GetCall,
    JoinCall,
    LeaveCall,
    SendCallSignal,
    SfuAnswer,
    SfuOffer,
    SfuReconnect,
    SfuView,
)
from protocol.ice_wire import GetIceServers, IceServers
from protocol.labels import AUTH_DOMAIN
from protocol.records import Record

PROTOCOL_VERSION: Final = 1
_encoder = msgspec.msgpack.Encoder()


def auth_statement(origin: str, purpose: str, subject: str, nonce: bytes) -> bytes:
    """What a client signs to answer a challenge, bound to server, purpose and subject."""
    return AUTH_DOMAIN + _encoder.encode((origin, purpose, subject, nonce))


class Envelope(msgspec.Struct, frozen=True):
    """A key sealed (crypto_box) from one member to another for (scope, epoch). The clear
    fields are routing only: the sealed plaintext (protocol.roomkeys.SealedKey) repeats space,
    scope, epoch and the key's generation, and recipients check them on open."""

    scope: str
    epoch: int
    recipient: bytes
    sender: bytes
    box: bytes


class InviteSeal(msgspec.Struct, frozen=True):
    """What an invite's creator stores for joiners, both under keys derived from the link's
    secret: ``preview`` (what the join screen shows, given to whoever opens the link) and
    ``sealed`` (the space key, given only with a recorded join)."""

    invite_id: str
    epoch: int
    sealed: bytes  # secretbox(invite seal key, SealedSpaceKey)
    preview: bytes  # secretbox(invite preview key, InvitePreview)


class InviteStatus(msgspec.Struct, frozen=True):
    invite_id: str
    role: str
    expires_at: int
    max_uses: int
    uses: int
    revoked: bool
    seal_epoch: int = -1  # space-key epoch of the stored seal; -1: no usable seal


# -- client to server: authentication (first message) ---------------------------------------


class CreateSpace(msgspec.Struct, tag="create_space", frozen=True):
    id: int
    records: list[Record]
    seals: list[InviteSeal]
    signature: bytes  # founder key over auth_statement(origin, "create", space_id, nonce)
    creation_token: str = ""


class Authenticate(msgspec.Struct, tag="auth", frozen=True):
    id: int
    space_id: str
    member_key: bytes
    signature: bytes  # member key over auth_statement(origin, "member", space_id, nonce)


class OpenInvite(msgspec.Struct, tag="open_invite", frozen=True):
    id: int
    invite_id: str
    signature: bytes  # invite key over auth_statement(origin, "invite", invite_id, nonce)


class JoinSpace(msgspec.Struct, tag="join_space", frozen=True):
    """Join: the server appends ``record`` (a Join, on the head InviteOpened gave), which uses
    up one use of the invite, and only then answers with the space key's seal (Joined)."""

    id: int
    invite_id: str
    invite_signature: bytes  # as in OpenInvite
    record: Record  # the Join record
    signature: bytes  # new member key over auth_statement(origin, "member", space_id, nonce)


# -- client to server: member requests -------------------------------------------------------


class GetRecords(msgspec.Struct, tag="get_records", frozen=True):
    """Records with seq > ``after``, one bounded page (see :class:`Records`). A client asks
    from its cached verified head; the first record must then link to that head's hash."""

    id: int
    after: int = -1


class Append(msgspec.Struct, tag="append", frozen=True):
    id: int
    records: list[Record]
    envelopes: list[Envelope] = []
    seals: list[InviteSeal] = []


class ListInvites(msgspec.Struct, tag="list_invites", frozen=True):
    id: int


class GetEnvelopes(msgspec.Struct, tag="get_envelopes", frozen=True):
    id: int
    scope: str
    min_epoch: int = 0


class GetEnvelopeHolders(msgspec.Struct, tag="get_envelope_holders", frozen=True):
    """Who already has an envelope for (scope, epoch): members lacking one need sealing."""

    id: int
    scope: str
    epoch: int


class DropEnvelope(msgspec.Struct, tag="drop_envelope", frozen=True):
    """The caller refuses its own envelope for (scope, epoch) — it failed the checks of
    protocol.roomkeys — and asks the server to delete it, so that members who hold the key
    see the caller lacks it and seal it again. Answered with Done."""

    id: int
    scope: str
    epoch: int


class PutSeals(msgspec.Struct, tag="put_seals", frozen=True):
    id: int
    seals: list[InviteSeal]


ClientMessage = (
    CreateSpace
    | Authenticate
    | OpenInvite
    | JoinSpace
    | GetRecords
    | Append
    | ListInvites
    | GetEnvelopes
    | GetEnvelopeHolders
    | DropEnvelope
    | PutSeals
    | SendMessage
    | FetchMessages
    | UploadStoryChunk
    | PostStory
    | ListStories
    | FetchStoryPart
    | GetCall
    | JoinCall
    | LeaveCall
    | ActInCall
    | SendCallSignal
    | SfuOffer
    | SfuView
    | GetIceServers
)
AUTH_REQUESTS: Final = (CreateSpace, Authenticate, OpenInvite, JoinSpace)


# -- server to client -------------------------------------------------------------------------


class Challenge(msgspec.Struct, tag="challenge", frozen=True):
    nonce: bytes
    origin: str
    version: int = PROTOCOL_VERSION


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    id: int
    space_id: str
    head_seq: int


class InviteOpened(msgspec.Struct, tag="invite_opened", frozen=True):
    """A usable invite, before joining: only what the join screen needs and the head a Join
    record must extend. No chain, no space key, and no use of the invite is consumed."""

    id: int
    space_id: str
    role: str  # the role the invite grants
    expires_at: int
    preview: bytes  # InviteSeal.preview
    head_seq: int
    head_hash: bytes


class Joined(msgspec.Struct, tag="joined", frozen=True):
    """The Join was appended: the session is bound to the new member, who gets the seal."""

    id: int
    space_id: str
    head_seq: int
    seal: InviteSeal


class Records(msgspec.Struct, tag="records", frozen=True):
    """One page of records after the asked seq, in order, and the server's current head.
    A page holds at least one record when there are any, and at most the server's page
    limits; the client asks again from its new head until it reaches ``head_seq``, then
    checks that its head hash equals ``head_hash``."""

    id: int
    records: list[Record]
    head_seq: int
    head_hash: bytes


class Appended(msgspec.Struct, tag="appended", frozen=True):
    id: int
    head_seq: int


class Invites(msgspec.Struct, tag="invites", frozen=True):
    id: int
    invites: list[InviteStatus]


class Envelopes(msgspec.Struct, tag="envelopes", frozen=True):
    id: int
    envelopes: list[Envelope]


class EnvelopeHolders(msgspec.Struct, tag="envelope_holders", frozen=True):
    id: int
    recipients: list[bytes]


class Done(msgspec.Struct, tag="done", frozen=True):
    id: int


class Error(msgspec.Struct, tag="error", frozen=True):
    id: int | None
    code: str
    message: str


class RecordAdded(msgspec.Struct, tag="record_added", frozen=True):
    """Event: a record was appended to this session's space."""

    record: Record


class SessionClosed(msgspec.Struct, tag="session_closed", frozen=True):
    """Event: the server ends this session (``removed``, ``banned``, ``shutdown``)."""

    reason: str


ServerMessage = (
    Challenge
    | Welcome
    | InviteOpened
    | Joined
    | Records
    | Appended
    | Invites
    | Envelopes
    | EnvelopeHolders
    | Done
    | Error
    | RecordAdded
    | SessionClosed
    | MessageSent
    | Messages
    | StoryChunkStored
    | StoryPosted
    | Stories
    | StoryPart
    | MessagesAdded
    | CallInfo
    | CallJoined
    | CallUpdate
    | CallSignal
    | CallEnded
    | SfuAnswer
    | CallSpeaker
    | SfuReconnect
    | IceServers
)

client_decoder = msgspec.msgpack.Decoder(ClientMessage)
server_decoder = msgspec.msgpack.Decoder(ServerMessage)
encoder = msgspec.msgpack.Encoder()
