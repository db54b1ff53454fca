"""Conference bans on SQLite (:class:`~spaces.storage.interfaces.ConferenceStore`).

A call's live state (seats, lobby, hands, lock) lives in memory and dies with the call; only
bans outlive it. :class:`SqliteConferenceStore` keeps them in the main SQLite file (migration
0003) over its own connection, so its single-statement writes never join another module's
open transaction; every write commits (``synchronous=FULL``) before it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiosqlite
import msgspec

from protocol.conference_wire import CallAction
from spaces.storage.interfaces import StorageError
from spaces.storage.sqlite.store import CONNECTION_PRAGMAS

SCHEMA_VERSION: Final = 3  # the migration that made conference_bans
_decoder = msgspec.msgpack.Decoder(CallAction)
_encoder = msgspec.msgpack.Encoder()


class SqliteConferenceStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("conference store is not open")
        return self._db

    async def open(self) -> None:
        # Autocommit: each statement below is its own durable transaction.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in CONNECTION_PRAGMAS:
            await self.db.execute(pragma)
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        if row is None or int(row[0]) < SCHEMA_VERSION:
            await self.close()
            raise StorageError("the database lacks the conference tables")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def bans(self, space_id: str, room_id: str) -> dict[bytes, CallAction]:
        async with self.db.execute(
            "SELECT member, action FROM conference_bans WHERE space_id = ? AND room_id = ?",
            (space_id, room_id),
        ) as cursor:
            rows = await cursor.fetchall()
        return {bytes(row[0]): _decoder.decode(bytes(row[1])) for row in rows}

    async def put_ban(self, space_id: str, room_id: str, ban: CallAction) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO conference_bans (space_id, room_id, member, action)"
            " VALUES (?, ?, ?, ?)",
            (space_id, room_id, ban.target, _encoder.encode(ban)),
        )

    async def delete_ban(self, space_id: str, room_id: str, member: bytes) -> None:
        await self.db.execute(
            "DELETE FROM conference_bans WHERE space_id = ? AND room_id = ? AND member = ?",
            (space_id, room_id, member),
        )
