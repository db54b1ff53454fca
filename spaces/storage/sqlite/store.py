"""Embedded storage on SQLite (aiosqlite), the main :class:`~spaces.storage.interfaces.Store`:
WAL, synchronous=FULL, secure_delete=ON.

Migrations are the numbered ``migrations/NNNN_*.sql`` files, applied in order inside one
transaction each and recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from protocol.errors import Conflict
from protocol.wire import Envelope, InviteSeal
from spaces.storage.interfaces import StorageError, StoredRecord, Stores
from spaces.storage.migrations import numbered_migrations

log = logging.getLogger(__name__)


# Every connection to the database file, whichever store opens it, runs these first:
# WAL for concurrent readers, FULL so an acknowledged write survives power loss, and
# secure_delete so deleted rows (expired messages, wiped invites) are zeroed on disk.
CONNECTION_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA secure_delete=ON",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


def migrations() -> list[tuple[int, str]]:
    """(number, sql) of every SQLite migration shipped with the package, in order."""
    return numbered_migrations("spaces.storage.sqlite.migrations")


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file opened

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit is explicit.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        stat = self.path.stat()
        self._file_id = (stat.st_dev, stat.st_ino)
        for pragma in CONNECTION_PRAGMAS:
            await self.db.execute(pragma)
        await self._migrate()

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        available = migrations()
        if current > len(available):
            raise StorageError(
                f"database schema version {current} is newer than this server ({len(available)})"
            )
        for number, sql in available[current:]:
            log.info("applying migration %04d", number)
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";"):
                    if statement.strip():
                        await self.db.execute(statement)
                await self.db.execute(f"PRAGMA user_version = {number}")
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def healthy(self) -> bool:
        """The connection answers ``SELECT 1`` and the file at the path is still the one it
        has open (a database deleted or replaced under a running server keeps answering from
        the unlinked file, and everything written then is lost at the next start)."""
        if self._db is None:
            return False
        try:
            stat = self.path.stat()
            if (stat.st_dev, stat.st_ino) != self._file_id:
                return False
            async with self._db.execute("SELECT 1") as cursor:
                return await cursor.fetchone() == (1,)
        except Exception:
            return False

    async def space_exists(self, space_id: str) -> bool:
        async with self.db.execute("SELECT 1 FROM spaces WHERE space_id = ?", (space_id,)) as c:
            return await c.fetchone() is not None

    async def load_records(self, space_id: str, after: int = -1, limit: int = -1) -> list[bytes]:
        async with self.db.execute(
            "SELECT data FROM records WHERE space_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (space_id, after, limit),
        ) as cursor:
            return [bytes(row[0]) for row in await cursor.fetchall()]

    async def append(
        self,
        space_id: str,
        records: Sequence[StoredRecord],
        *,
        envelopes: Sequence[Envelope] = (),
        seals: Sequence[InviteSeal] = (),
        create: bool = False,
    ) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if create:
                await db.execute(
                    "INSERT INTO spaces (space_id, created_at) VALUES (?, ?)",
                    (space_id, int(time.time())),
                )
            await db.executemany(
                "INSERT INTO records (space_id, seq, hash, data) VALUES (?, ?, ?, ?)",
                [(space_id, r.seq, r.hash, r.data) for r in records],
            )
            await db.executemany(
                "INSERT OR IGNORE INTO envelopes (space_id, scope, epoch, recipient, sender, box)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(space_id, e.scope, e.epoch, e.recipient, e.sender, e.box) for e in envelopes],
            )
            await self._write_seals(space_id, seals)
            await db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            await db.execute("ROLLBACK")
            raise Conflict(f"conflicting write: {exc}") from None
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _write_seals(self, space_id: str, seals: Sequence[InviteSeal]) -> None:
        await self.db.executemany(
            "INSERT INTO invites (invite_id, space_id, epoch, sealed, preview)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (invite_id) DO UPDATE SET epoch = excluded.epoch,"
            " sealed = excluded.sealed, preview = excluded.preview"
            " WHERE invites.space_id = excluded.space_id",
            [(s.invite_id, space_id, s.epoch, s.sealed, s.preview) for s in seals],
        )

    async def invite_seal(self, invite_id: str) -> tuple[str, InviteSeal] | None:
        async with self.db.execute(
            "SELECT space_id, epoch, sealed, preview FROM invites WHERE invite_id = ?",
            (invite_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return str(row[0]), InviteSeal(invite_id, int(row[1]), bytes(row[2]), bytes(row[3]))

    async def invite_epochs(self, space_id: str) -> dict[str, int]:
        async with self.db.execute(
            "SELECT invite_id, epoch FROM invites WHERE space_id = ? AND epoch >= 0",
            (space_id,),
        ) as cursor:
            return {str(row[0]): int(row[1]) for row in await cursor.fetchall()}

    async def put_seals(self, space_id: str, seals: Sequence[InviteSeal]) -> None:
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self._write_seals(space_id, seals)
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise

    async def wipe_invite_seals(self, invite_ids: Sequence[str]) -> None:
        if not invite_ids:
            return
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.executemany(
                "UPDATE invites SET sealed = x'', preview = x'', epoch = -1"
                " WHERE invite_id = ? AND epoch >= 0",
                [(i,) for i in invite_ids],
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise

    async def drop_envelope(self, space_id: str, scope: str, epoch: int, recipient: bytes) -> None:
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.execute(
                "DELETE FROM envelopes WHERE space_id = ? AND scope = ? AND epoch = ?"
                " AND recipient = ?",
                (space_id, scope, epoch, recipient),
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise

    async def envelope_holders(self, space_id: str, scope: str, epoch: int) -> set[bytes]:
        async with self.db.execute(
            "SELECT recipient FROM envelopes WHERE space_id = ? AND scope = ? AND epoch = ?",
            (space_id, scope, epoch),
        ) as cursor:
            return {bytes(row[0]) for row in await cursor.fetchall()}

    async def envelopes(
        self, space_id: str, scope: str, recipient: bytes, min_epoch: int = 0
    ) -> list[Envelope]:
        async with self.db.execute(
            "SELECT scope, epoch, recipient, sender, box FROM envelopes"
            " WHERE space_id = ? AND scope = ? AND recipient = ? AND epoch >= ? ORDER BY epoch",
            (space_id, scope, recipient, min_epoch),
        ) as cursor:
            rows = await cursor.fetchall()
        return [Envelope(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]


def sqlite_stores(path: str | Path) -> Stores:
    """The three stores of one SQLite file (each with connections of its own)."""
    from spaces.storage.sqlite.chat import SqliteChatStore
    from spaces.storage.sqlite.conference import SqliteConferenceStore

    return Stores(SqliteStore(path), SqliteChatStore(path), SqliteConferenceStore(path))
