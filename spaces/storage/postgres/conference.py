"""Conference bans on PostgreSQL (a :class:`~spaces.storage.interfaces.ConferenceStore`);
each write is its own committed statement."""

from __future__ import annotations

import msgspec

from protocol.conference_wire import CallAction
from spaces.storage.postgres.database import Database

_decoder = msgspec.msgpack.Decoder(CallAction)
_encoder = msgspec.msgpack.Encoder()


class PostgresConferenceStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def open(self) -> None:
        """Nothing of its own: the main store opens the shared database."""

    async def close(self) -> None:
        """Nothing of its own: the main store closes the shared database."""

    async def bans(self, space_id: str, room_id: str) -> dict[bytes, CallAction]:
        rows = await self.database.pool.fetch(
            "SELECT member, action FROM conference_bans WHERE space_id = $1 AND room_id = $2",
            space_id,
            room_id,
        )
        return {bytes(row[0]): _decoder.decode(bytes(row[1])) for row in rows}

    async def put_ban(self, space_id: str, room_id: str, ban: CallAction) -> None:
        await self.database.pool.execute(
            "INSERT INTO conference_bans (space_id, room_id, member, action)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (space_id, room_id, member)"
            " DO UPDATE SET action = excluded.action",
            space_id,
            room_id,
            ban.target,
            _encoder.encode(ban),
        )

    async def delete_ban(self, space_id: str, room_id: str, member: bytes) -> None:
        await self.database.pool.execute(
            "DELETE FROM conference_bans WHERE space_id = $1 AND room_id = $2 AND member = $3",
            space_id,
            room_id,
            member,
        )
