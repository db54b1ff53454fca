"""The storage seams: what the server needs from a database, as Protocols.

Three stores, one database: :class:`Store` (spaces, their record chains, invite seals and key
envelopes), :class:`ChatStore` (messages with expiry, stories) and :class:`ConferenceStore`
(conference bans). :class:`Stores` holds one of each, built once at start-up from
``[storage] url`` (:func:`spaces.storage.engines.stores_for`) and handed to the app, which
opens them in that order (the main store applies the engine's numbered migrations first) and
closes them in reverse. Engines: :mod:`spaces.storage.sqlite` (embedded, the default) and
:mod:`spaces.storage.postgres` (one database that several instances may share).

Every implementation keeps the same transactional meaning: every method that writes commits
before it returns (acknowledged means durable).

Chat stores, in particular:

- :meth:`ChatStore.append_messages` is one transaction for a whole batch (group commit) and
  returns only after it is durable; each room's sequence is assigned inside that
  transaction, gap-free, and a (space, room, sender, client id) seen before returns the first
  message instead of a new one;
- :meth:`ChatStore.delete_expired` leaves no copy of the deleted bytes in the database's
  files (SQLite: ``secure_delete`` and a truncating WAL checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from protocol.chat_wire import ChatMessage, StoryInfo, StoryPartName
from protocol.conference_wire import CallAction
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Envelope, InviteSeal
from spaces.events import Events, LocalEvents


class StorageError(ProtocolError):
    """The database failed or is not open (answered to clients as ``storage``)."""

    code = ErrorCode.STORAGE


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (answered as ``unavailable``: try again; the
    server reconnects by itself, and what it acknowledged before is kept)."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str = "the server cannot reach its database right now; try again"):
        super().__init__(message)


class StoredRecord(NamedTuple):
    seq: int
    hash: bytes
    data: bytes


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def healthy(self) -> bool:
        """Whether the database answers a trivial query now (``/health``); never raises."""
        ...

    async def space_exists(self, space_id: str) -> bool: ...

    async def load_records(self, space_id: str, after: int = -1, limit: int = -1) -> list[bytes]:
        """Encoded records with seq > after, in order; at most ``limit`` (-1: all)."""
        ...

    async def append(
        self,
        space_id: str,
        records: Sequence[StoredRecord],
        *,
        envelopes: Sequence[Envelope] = (),
        seals: Sequence[InviteSeal] = (),
        create: bool = False,
    ) -> None:
        """Atomically add records (creating the space first if ``create``), envelopes (an
        existing envelope for the same scope, epoch and recipient is kept) and invite seals
        (insert or replace). Raises protocol.errors.Conflict if a seq is taken."""
        ...

    async def invite_seal(self, invite_id: str) -> tuple[str, InviteSeal] | None:
        """(space id, seal) of an invite, or None."""
        ...

    async def invite_epochs(self, space_id: str) -> dict[str, int]:
        """invite id -> epoch of its stored seal, for the invites that still have one."""
        ...

    async def put_seals(self, space_id: str, seals: Sequence[InviteSeal]) -> None: ...

    async def wipe_invite_seals(self, invite_ids: Sequence[str]) -> None:
        """Erase the seals of invites that can no longer be used (expired, used up,
        revoked) so the sealed space key is gone for good; the invite id stays known so a
        late joiner hears why the link no longer works."""
        ...

    async def envelope_holders(self, space_id: str, scope: str, epoch: int) -> set[bytes]:
        """Recipients that have an envelope for (scope, epoch)."""
        ...

    async def envelopes(
        self, space_id: str, scope: str, recipient: bytes, min_epoch: int = 0
    ) -> list[Envelope]: ...

    async def drop_envelope(self, space_id: str, scope: str, epoch: int, recipient: bytes) -> None:
        """Delete the envelope of (scope, epoch) sealed to ``recipient``, if any."""
        ...


class NewMessage(NamedTuple):
    space_id: str
    room_id: str
    sender: bytes
    client_id: bytes
    epoch: int
    ttl: int  # as sent (0 = room default)
    lifetime: int  # effective seconds until expiry; 0 = keep
    box: bytes


class Committed(NamedTuple):
    message: ChatMessage
    duplicate: bool  # the client id was committed before: this is that first message


class NewStory(NamedTuple):
    space_id: str
    story_id: str
    room_id: str
    sender: bytes
    epoch: int
    ttl: int
    meta: bytes
    thumb: bytes
    image: bytes


class ChatStore(Protocol):
    async def open(self) -> None:
        """Open after the main store has applied migrations."""
        ...

    async def close(self) -> None: ...

    async def append_messages(self, batch: Sequence[NewMessage], now: float) -> list[Committed]:
        """Commit a batch in one transaction; results in the batch's order."""
        ...

    async def find_message(
        self, space_id: str, room_id: str, sender: bytes, client_id: bytes
    ) -> ChatMessage | None: ...

    async def messages(
        self, space_id: str, room_id: str, after: int, limit: int, now: float
    ) -> tuple[list[ChatMessage], int]:
        """Unexpired messages with seq > after (at most ``limit``, in order) and the room's
        last assigned seq (0 if none)."""
        ...

    async def add_story(self, story: NewStory, now: float) -> tuple[StoryInfo, bool]:
        """Commit a story; (info, duplicate). A story id taken by another sender or space
        raises protocol.errors.Conflict."""
        ...

    async def stories(self, space_id: str, room_id: str, now: float) -> list[StoryInfo]:
        """Unexpired stories of a room, newest first."""
        ...

    async def story(self, space_id: str, story_id: str, now: float) -> StoryInfo | None: ...

    async def story_part(
        self, space_id: str, story_id: str, part: StoryPartName, offset: int, length: int
    ) -> bytes: ...

    async def delete_expired(self, now: float) -> int:
        """Delete expired messages and stories for good; returns how many."""
        ...


class ConferenceStore(Protocol):
    """Conference bans: a call's live state is kept in memory; only bans outlive a call."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def bans(self, space_id: str, room_id: str) -> dict[bytes, CallAction]:
        """Banned member key -> the host's signed ban, for one room."""
        ...

    async def put_ban(self, space_id: str, room_id: str, ban: CallAction) -> None: ...

    async def delete_ban(self, space_id: str, room_id: str, member: bytes) -> None: ...


@dataclass(frozen=True)
class Stores:
    """One database's stores, opened in this order (``spaces`` migrates) and closed in
    reverse; and its events bus (:mod:`spaces.events`), which the app starts once the
    services have subscribed and stops before the stores close."""

    spaces: Store
    chat: ChatStore
    conference: ConferenceStore
    events: Events = field(default_factory=LocalEvents)
    # What this engine raises when its database cannot be reached (a lost connection, a
    # server shutting down): requests that meet one are answered ``unavailable``.
    unreachable: tuple[type[BaseException], ...] = ()

    def unavailable(self, exc: BaseException) -> StorageUnavailable | None:
        """``exc`` as the ``unavailable`` answer, if it says the database is unreachable."""
        if isinstance(exc, StorageUnavailable):
            return exc
        if self.unreachable and isinstance(exc, self.unreachable):
            return StorageUnavailable()
        return None

    async def open(self) -> None:
        await self.spaces.open()
        try:
            await self.chat.open()
            try:
                await self.conference.open()
            except BaseException:
                await self.chat.close()
                raise
        except BaseException:
            await self.spaces.close()
            raise

    async def close(self) -> None:
        try:
            await self.conference.close()
            await self.chat.close()
        finally:
            await self.spaces.close()


class StoryStaging(Protocol):
    """Story images on their way in, chunk by chunk, until posted (then they go to the
    :class:`ChatStore`). One upload in progress per member of a space; what may be staged
    is bounded per space and for the server. Async, so that an engine could keep them in a
    database; today's (:mod:`spaces.storage.staging`) keeps them in the instance's memory —
    an upload rides one connection, and a client whose connection drops uploads again."""

    async def add_chunk(
        self, space_id: str, member: bytes, story_id: str, offset: int, data: bytes, now: float
    ) -> int:
        """Stage ``data`` at ``offset`` (0 starts the member's upload afresh); the bytes
        staged so far. Raises Conflict (out of order), TooLarge or RateLimited (a budget)."""
        ...

    async def upload(self, space_id: str, member: bytes, story_id: str) -> bytes | None:
        """The member's staged bytes of ``story_id``, or None if that is not its upload."""
        ...

    async def discard(self, space_id: str, member: bytes, story_id: str, size: int) -> None:
        """Forget the member's upload of ``story_id`` if it still holds ``size`` bytes
        (posted; a new upload started meanwhile stays)."""
        ...

    async def drop_idle(self, now: float) -> None:
        """Forget uploads idle, or in progress, for too long."""
        ...
