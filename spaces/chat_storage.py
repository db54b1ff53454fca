"""The storage seam of chat and stories, as a Protocol (like :mod:`spaces.storage`).

The embedded implementation is :mod:`spaces.chat_sqlite`. Another backend (PostgreSQL for
several nodes) must keep the same meaning:

- :meth:`ChatStore.append_messages` is one transaction for a whole batch (group commit) and
  returns only after it is durable; each room's sequence is assigned inside that
  transaction, gap-free, and a (space, room, sender, client id) seen before returns the first
  message instead of a new one;
- :meth:`ChatStore.delete_expired` leaves no copy of the deleted bytes in the database's
  files (SQLite: ``secure_delete`` and a truncating WAL checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from protocol.chat_wire import ChatMessage, StoryInfo, StoryPartName


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
