"""The main :class:`~spaces.storage.interfaces.Store` on PostgreSQL: spaces, record chains,
invite seals and key envelopes. Opening it opens the shared :class:`Database` (and migrates);
closing it closes the database, so it is opened first and closed last (:class:`Stores`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from protocol.errors import Conflict
from protocol.wire import Envelope, InviteSeal
from spaces.events import RECORDS
from spaces.storage.interfaces import StoredRecord, Stores
from spaces.storage.postgres.database import UNREACHABLE, Database

_WRITE_SEAL = (
    "INSERT INTO invites (invite_id, space_id, epoch, sealed, preview) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (invite_id) DO UPDATE SET epoch = excluded.epoch,"
    " sealed = excluded.sealed, preview = excluded.preview"
    " WHERE invites.space_id = excluded.space_id"
)


class PostgresStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def healthy(self) -> bool:
        return await self.database.healthy()

    async def space_exists(self, space_id: str) -> bool:
        row = await self.database.pool.fetchval(
            "SELECT 1 FROM spaces WHERE space_id = $1", space_id
        )
        return row is not None

    async def load_records(self, space_id: str, after: int = -1, limit: int = -1) -> list[bytes]:
        rows = await self.database.pool.fetch(
            "SELECT data FROM records WHERE space_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            space_id,
            after,
            None if limit < 0 else limit,
        )
        return [bytes(row[0]) for row in rows]

    async def append(
        self,
        space_id: str,
        records: Sequence[StoredRecord],
        *,
        envelopes: Sequence[Envelope] = (),
        seals: Sequence[InviteSeal] = (),
        create: bool = False,
    ) -> None:
        try:
            async with self.database.pool.acquire() as conn, conn.transaction():
                if create:
                    await conn.execute(
                        "INSERT INTO spaces (space_id, created_at) VALUES ($1, $2)",
                        space_id,
                        int(time.time()),
                    )
                if records:
                    await conn.executemany(
                        "INSERT INTO records (space_id, seq, hash, data) VALUES ($1, $2, $3, $4)",
                        [(space_id, r.seq, r.hash, r.data) for r in records],
                    )
                if envelopes:
                    await conn.executemany(
                        "INSERT INTO envelopes (space_id, scope, epoch, recipient, sender, box)"
                        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        [
                            (space_id, e.scope, e.epoch, e.recipient, e.sender, e.box)
                            for e in envelopes
                        ],
                    )
                await _write_seals(conn, space_id, seals)
                if records:
                    head = max(r.seq for r in records)
                    await self.database.notify(conn, RECORDS, [space_id, head])
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"conflicting write: {exc}") from None

    async def invite_seal(self, invite_id: str) -> tuple[str, InviteSeal] | None:
        row = await self.database.pool.fetchrow(
            "SELECT space_id, epoch, sealed, preview FROM invites WHERE invite_id = $1", invite_id
        )
        if row is None:
            return None
        return str(row[0]), InviteSeal(invite_id, int(row[1]), bytes(row[2]), bytes(row[3]))

    async def invite_epochs(self, space_id: str) -> dict[str, int]:
        rows = await self.database.pool.fetch(
            "SELECT invite_id, epoch FROM invites WHERE space_id = $1 AND epoch >= 0", space_id
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def put_seals(self, space_id: str, seals: Sequence[InviteSeal]) -> None:
        async with self.database.pool.acquire() as conn, conn.transaction():
            await _write_seals(conn, space_id, seals)

    async def wipe_invite_seals(self, invite_ids: Sequence[str]) -> None:
        if not invite_ids:
            return
        await self.database.pool.execute(
            "UPDATE invites SET sealed = ''::bytea, preview = ''::bytea, epoch = -1"
            " WHERE invite_id = ANY($1::text[]) AND epoch >= 0",
            list(invite_ids),
        )

    async def drop_envelope(self, space_id: str, scope: str, epoch: int, recipient: bytes) -> None:
        await self.database.pool.execute(
            "DELETE FROM envelopes WHERE space_id = $1 AND scope = $2 AND epoch = $3"
            " AND recipient = $4",
            space_id,
            scope,
            epoch,
            recipient,
        )

    async def envelope_holders(self, space_id: str, scope: str, epoch: int) -> set[bytes]:
        rows = await self.database.pool.fetch(
            "SELECT recipient FROM envelopes WHERE space_id = $1 AND scope = $2 AND epoch = $3",
            space_id,
            scope,
            epoch,
        )
        return {bytes(row[0]) for row in rows}

    async def envelopes(
        self, space_id: str, scope: str, recipient: bytes, min_epoch: int = 0
    ) -> list[Envelope]:
        rows = await self.database.pool.fetch(
            "SELECT scope, epoch, recipient, sender, box FROM envelopes"
            " WHERE space_id = $1 AND scope = $2 AND recipient = $3 AND epoch >= $4"
            " ORDER BY epoch",
            space_id,
            scope,
            recipient,
            min_epoch,
        )
        return [Envelope(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]


async def _write_seals(
    conn: asyncpg.Connection, space_id: str, seals: Sequence[InviteSeal]
) -> None:
    if seals:
        await conn.executemany(
            _WRITE_SEAL, [(s.invite_id, space_id, s.epoch, s.sealed, s.preview) for s in seals]
        )


def postgres_stores(url: str) -> Stores:
    """The three stores of one PostgreSQL database, sharing one connection pool."""
    from spaces.storage.postgres.chat import PostgresChatStore
    from spaces.storage.postgres.conference import PostgresConferenceStore
    from spaces.storage.postgres.events import PostgresEvents

    database = Database(url)
    return Stores(
        PostgresStore(database),
        PostgresChatStore(database),
        PostgresConferenceStore(database),
        PostgresEvents(database),
        unreachable=UNREACHABLE,
    )
