"""Chat and story storage on PostgreSQL (a :class:`~spaces.storage.interfaces.ChatStore`).

A batch of messages (group commit) is one transaction. Several server instances may write to
one room: each transaction first locks the rows of its rooms in ``room_seqs`` (in a fixed
order, so two batches never deadlock), and only then looks for retried client ids and assigns
sequences — so sequences stay gap-free and a retry sent through another instance still finds
the first message.

Expired rows are deleted; PostgreSQL keeps a deleted row's bytes in the table's pages until
VACUUM reclaims them (autovacuum does, eventually; the README says what to configure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from protocol.chat_wire import ChatMessage, StoryInfo, StoryPartName
from protocol.errors import Conflict
from spaces.events import MESSAGES
from spaces.storage.interfaces import Committed, NewMessage, NewStory
from spaces.storage.postgres.database import Database
from spaces.storage.rows import message_from_row, story_from_row

_MESSAGE_COLUMNS: Final = "seq, sender, client_id, epoch, ttl, sent_at, expires_at, box"
_PRIOR_COLUMNS: Final = "m.space_id, m.room_id, " + ", ".join(
    "m." + column for column in _MESSAGE_COLUMNS.split(", ")
)
_STORY_COLUMNS: Final = (
    "story_id, room_id, sender, epoch, ttl, posted_at, expires_at, meta,"
    " octet_length(image), octet_length(thumb)"
)


class PostgresChatStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def open(self) -> None:
        """Nothing of its own: the main store opens the shared database."""

    async def close(self) -> None:
        """Nothing of its own: the main store closes the shared database."""

    # -- messages ------------------------------------------------------------------------------

    async def append_messages(self, batch: Sequence[NewMessage], now: float) -> list[Committed]:
        if not batch:
            return []
        rooms = sorted({(new.space_id, new.room_id) for new in batch})
        try:
            async with self.database.pool.acquire() as conn, conn.transaction():
                last: dict[tuple[str, str], int] = {}
                first: dict[tuple[str, str], int] = {}
                for room in rooms:  # lock each room's counter, in a fixed order
                    last[room] = int(
                        await conn.fetchval(
                            "INSERT INTO room_seqs (space_id, room_id, last_seq)"
                            " VALUES ($1, $2, 0) ON CONFLICT (space_id, room_id)"
                            " DO UPDATE SET last_seq = room_seqs.last_seq RETURNING last_seq",
                            *room,
                        )
                    )
                    first[room] = last[room] + 1
                prior = await self._priors(conn, batch)
                results: list[Committed] = []
                fresh: dict[tuple[str, str, bytes, bytes], ChatMessage] = {}
                rows = []
                for new in batch:
                    key = (new.space_id, new.room_id, new.sender, new.client_id)
                    seen = fresh.get(key) or prior.get(key)
                    if seen is not None:
                        results.append(Committed(seen, True))
                        continue
                    room = (new.space_id, new.room_id)
                    last[room] += 1
                    expires_at = now + new.lifetime if new.lifetime > 0 else None
                    message = ChatMessage(
                        last[room], new.sender, new.client_id, new.epoch, new.ttl, now,
                        expires_at, new.box,
                    )  # fmt: skip
                    fresh[key] = message
                    rows.append(
                        (
                            new.space_id, new.room_id, message.seq, new.sender, new.client_id,
                            new.epoch, new.ttl, now, expires_at, new.box,
                        )
                    )  # fmt: skip
                    results.append(Committed(message, False))
                if rows:
                    await conn.executemany(
                        "INSERT INTO messages (space_id, room_id, seq, sender, client_id, epoch,"
                        " ttl, sent_at, expires_at, box)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        rows,
                    )
                    await conn.executemany(
                        "UPDATE room_seqs SET last_seq = $3 WHERE space_id = $1 AND room_id = $2",
                        [(space_id, room_id, seq) for (space_id, room_id), seq in last.items()],
                    )
                for room, seq in last.items():
                    if seq >= first[room]:
                        await self.database.notify(conn, MESSAGES, [*room, first[room], seq])
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"conflicting message write: {exc}") from None
        return results

    @staticmethod
    async def _priors(
        conn: asyncpg.Connection, batch: Sequence[NewMessage]
    ) -> dict[tuple[str, str, bytes, bytes], ChatMessage]:
        """The messages already committed under the batch's client ids."""
        rows = await conn.fetch(
            f"SELECT {_PRIOR_COLUMNS}"
            " FROM messages m JOIN unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[])"
            " AS k(space_id, room_id, client_id, sender)"
            " ON m.space_id = k.space_id AND m.room_id = k.room_id"
            " AND m.client_id = k.client_id AND m.sender = k.sender",
            [n.space_id for n in batch],
            [n.room_id for n in batch],
            [n.client_id for n in batch],
            [n.sender for n in batch],
        )
        found = {}
        for row in rows:
            message = message_from_row(row[2:])
            found[(str(row[0]), str(row[1]), message.sender, message.client_id)] = message
        return found

    async def find_message(
        self, space_id: str, room_id: str, sender: bytes, client_id: bytes
    ) -> ChatMessage | None:
        row = await self.database.pool.fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            " WHERE space_id = $1 AND room_id = $2 AND client_id = $3 AND sender = $4",
            space_id,
            room_id,
            client_id,
            sender,
        )
        return None if row is None else message_from_row(row)

    async def messages(
        self, space_id: str, room_id: str, after: int, limit: int, now: float
    ) -> tuple[list[ChatMessage], int]:
        async with (
            self.database.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),  # one snapshot
        ):
            rows = await conn.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE space_id = $1 AND room_id = $2"
                " AND seq > $3 AND (expires_at IS NULL OR expires_at > $4) ORDER BY seq LIMIT $5",
                space_id,
                room_id,
                after,
                now,
                limit,
            )
            last = await conn.fetchval(
                "SELECT last_seq FROM room_seqs WHERE space_id = $1 AND room_id = $2",
                space_id,
                room_id,
            )
        return [message_from_row(r) for r in rows], int(last or 0)

    # -- stories -------------------------------------------------------------------------------

    async def add_story(self, story: NewStory, now: float) -> tuple[StoryInfo, bool]:
        async with self.database.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO stories (story_id, space_id, room_id, sender, epoch, ttl,"
                " posted_at, expires_at, meta, thumb, image)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (story_id) DO NOTHING RETURNING 1",
                story.story_id,
                story.space_id,
                story.room_id,
                story.sender,
                story.epoch,
                story.ttl,
                now,
                now + story.ttl,
                story.meta,
                story.thumb,
                story.image,
            )
            if inserted is None:
                row = await conn.fetchrow(
                    f"SELECT {_STORY_COLUMNS}, space_id FROM stories WHERE story_id = $1",
                    story.story_id,
                )
                assert row is not None  # never deleted inside this transaction's snapshot
                if str(row[10]) != story.space_id or bytes(row[2]) != story.sender:
                    raise Conflict("this story id is taken")
                return story_from_row(row), True
        info = StoryInfo(
            story.story_id,
            story.room_id,
            story.sender,
            story.epoch,
            story.ttl,
            now,
            now + story.ttl,
            story.meta,
            len(story.image),
            len(story.thumb),
        )
        return info, False

    async def stories(self, space_id: str, room_id: str, now: float) -> list[StoryInfo]:
        rows = await self.database.pool.fetch(
            f"SELECT {_STORY_COLUMNS} FROM stories WHERE space_id = $1 AND room_id = $2"
            " AND expires_at > $3 ORDER BY posted_at DESC, story_id",
            space_id,
            room_id,
            now,
        )
        return [story_from_row(r) for r in rows]

    async def story(self, space_id: str, story_id: str, now: float) -> StoryInfo | None:
        row = await self.database.pool.fetchrow(
            f"SELECT {_STORY_COLUMNS} FROM stories WHERE space_id = $1 AND story_id = $2"
            " AND expires_at > $3",
            space_id,
            story_id,
            now,
        )
        return None if row is None else story_from_row(row)

    async def story_part(
        self, space_id: str, story_id: str, part: StoryPartName, offset: int, length: int
    ) -> bytes:
        column = {"image": "image", "thumb": "thumb"}[part]
        # substring() on an uncompressed, out-of-line bytea reads just the chunk.
        data = await self.database.pool.fetchval(
            f"SELECT substring({column} FROM $3 FOR $4) FROM stories"
            " WHERE space_id = $1 AND story_id = $2",
            space_id,
            story_id,
            offset + 1,
            length,
        )
        return b"" if data is None else bytes(data)

    # -- expiry --------------------------------------------------------------------------------

    async def delete_expired(self, now: float) -> int:
        async with self.database.pool.acquire() as conn, conn.transaction():
            messages = await conn.execute(
                "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= $1", now
            )
            stories = await conn.execute("DELETE FROM stories WHERE expires_at <= $1", now)
        return _count(messages) + _count(stories)


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
