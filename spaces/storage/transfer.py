"""Moving a deployment from SQLite to PostgreSQL (``salon admin migrate-storage``).

The contract:

- The SQLite file is opened **read-only**, and everything is read in **one read transaction**:
  a WAL snapshot, consistent across tables, that a running ``salon serve`` neither blocks nor
  sees (it keeps writing; its WAL just cannot be checkpointed past the snapshot until we end).
- The target is a PostgreSQL database that the numbered migrations bring to the same schema
  version as the file (:mod:`spaces.storage.migrations`: the same number means the same
  schema). Every table it holds data in must be **empty**: there is no merge and no
  overwrite. The copy is **one PostgreSQL transaction** that first locks those tables, so a
  failed copy leaves the target empty (run again), and no instance writes during it.
- What is copied: every row of every table, as stored (ciphertext, public keys, signed
  records: the server holds nothing else), except messages and stories already expired at the
  snapshot. ``call_inputs`` (PostgreSQL's minute-long log of live calls' inputs) has nothing to
  copy: a call's live state is in the SQLite server's memory and ends at the cut-over.
- **Verification** reads both sides again (the target inside the copy's transaction, before
  it commits: a copy that does not verify is rolled back, leaving the target empty): per
  space and per table, the number of rows alive at the snapshot's time and a digest of their
  contents (an order-free sum of each row's SHA-256), and each space's record chain head
  (seq and hash). Any difference fails.
- Then the file is read once more in a fresh transaction: if the server wrote anything after
  the snapshot (a message, a join, a story…), the copy lacks it and the migration fails,
  telling the operator to stop the server first. Deletions of expired data are not writes
  here: both reads count only rows alive at one later time.

Errors are :class:`TransferError` (one line; URLs with their passwords masked).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import asyncpg

from spaces.storage.interfaces import StorageError
from spaces.storage.postgres.database import Database, masked_url
from spaces.storage.postgres.database import migrations as postgres_migrations
from spaces.storage.sqlite.store import migrations as sqlite_migrations


class TransferError(StorageError):
    """The migration cannot start, or its result does not match the source."""


@dataclass(frozen=True)
class Table:
    name: str
    # SQL condition on the rows still alive at time ``?`` (the snapshot's), or "" for all.
    alive: str = ""
    batch: int = 1000  # rows per COPY: few for stories, whose images are megabytes


# Every table of the SQLite schema, in an order that respects the foreign keys. A migration
# that adds a table must add it here: the copy refuses a schema with a table it does not know.
TABLES: Final = (
    Table("spaces"),
    Table("records"),
    Table("invites"),
    Table("envelopes"),
    Table("room_seqs"),
    Table("messages", "expires_at IS NULL OR expires_at > ?"),
    Table("stories", "expires_at > ?", batch=8),
    Table("conference_bans"),
)
# PostgreSQL-only tables, never copied: the schema version, and the calls' input log.
POSTGRES_ONLY: Final = frozenset({"salon_schema", "call_inputs", "call_rooms", "instances"})

SQLITE_PREFIX: Final = "sqlite:"
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
DIGEST_MODULUS: Final = 1 << 256


# -- what one side holds -----------------------------------------------------------------------


@dataclass
class Tally:
    """Rows of one table in one space: how many, and an order-free digest of their contents."""

    rows: int = 0
    digest: int = 0

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows += 1
        self.digest = (self.digest + row_digest(row)) % DIGEST_MODULUS


@dataclass
class Snapshot:
    """What one database holds, per space: a :class:`Tally` per table and the chain head."""

    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (table, space)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # space → (seq, hash)

    def count(self, table: str) -> int:
        return sum(t.rows for (name, _), t in self.tallies.items() if name == table)

    def spaces(self) -> list[str]:
        return sorted({space for _, space in self.tallies} | set(self.heads))


def row_digest(row: tuple[Any, ...]) -> int:
    """SHA-256 of one row's values, typed, so that SQLite's and PostgreSQL's copies of a row
    (str, int, float, bytes or NULL in both) digest alike and different rows do not."""
    h = hashlib.sha256()
    for value in row:
        if value is None:
            h.update(b"n")
        elif isinstance(value, bool | int):
            h.update(b"i" + str(int(value)).encode() + b";")
        elif isinstance(value, float):
            h.update(b"f" + struct.pack(">d", value))
        elif isinstance(value, str):
            data = value.encode()
            h.update(b"s" + struct.pack(">Q", len(data)) + data)
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            h.update(b"b" + struct.pack(">Q", len(data)) + data)
        else:
            raise TypeError(f"unexpected column value of type {type(value).__name__}")
    return int.from_bytes(h.digest(), "big")


def compare(source: Snapshot, target: Snapshot) -> list[str]:
    """Every difference between the two sides, one line each (none: they match)."""
    problems = []
    for space in sorted(set(source.spaces()) | set(target.spaces())):
        for table in TABLES:
            mine = source.tallies.get((table.name, space), Tally())
            theirs = target.tallies.get((table.name, space), Tally())
            if mine.rows != theirs.rows:
                problems.append(
                    f"space {space}: {table.name}: {mine.rows} rows in SQLite, "
                    f"{theirs.rows} in PostgreSQL"
                )
            elif mine.digest != theirs.digest:
                problems.append(f"space {space}: {table.name}: row contents differ")
        head, other = source.heads.get(space), target.heads.get(space)
        if head != other:
            problems.append(
                f"space {space}: record chain head differs ({describe(head)} in SQLite, "
                f"{describe(other)} in PostgreSQL)"
            )
    return problems


def describe(head: tuple[int, bytes] | None) -> str:
    return "none" if head is None else f"seq {head[0]} hash {head[1].hex()[:16]}…"


# -- the SQLite side ---------------------------------------------------------------------------


def sqlite_file(source: str) -> Path:
    """The file ``sqlite:PATH`` names; :class:`TransferError` if it is no SQLite file."""
    if not source.startswith(SQLITE_PREFIX) or not source[len(SQLITE_PREFIX) :].strip():
        raise TransferError(f"--from must be sqlite:PATH, not {source!r}")
    path = Path(source[len(SQLITE_PREFIX) :]).expanduser()
    if not path.is_file():
        raise TransferError(f"no SQLite database at {path}")
    return path


class SqliteSource:
    """The SQLite file, read-only, inside one read transaction (a consistent snapshot) from
    :meth:`open` until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "not open"
        return self._db

    def open(self) -> None:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("BEGIN")  # deferred: the snapshot starts with the first read
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
            names = {
                str(row[0])
                for row in self.db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            }
        except sqlite3.Error as exc:
            self.close()
            raise TransferError(f"cannot read the SQLite database at {self.path}: {exc}") from None
        known = len(sqlite_migrations())
        if version != known:
            self.close()
            raise TransferError(
                f"the SQLite database is at schema version {version}, this salon writes "
                f"version {known}: start this version's 'salon serve' on it once first"
                if version < known
                else f"the SQLite database (schema {version}) is newer than this salon ({known})"
            )
        expected = {t.name for t in TABLES}
        if names != expected:
            self.close()
            raise TransferError(
                f"the SQLite database's tables {sorted(names)} are not the ones this tool "
                f"copies {sorted(expected)}"
            )

    def columns(self, table: str) -> list[str]:
        return [str(row[1]) for row in self.db.execute(f"PRAGMA table_info({table})")]

    def rows(self, table: Table, columns: list[str], now: float) -> Iterator[tuple[Any, ...]]:
        where = f" WHERE {table.alive}" if table.alive else ""
        params = (now,) if table.alive else ()
        cursor = self.db.execute(f"SELECT {', '.join(columns)} FROM {table.name}{where}", params)
        while batch := cursor.fetchmany(table.batch):
            yield from batch

    def expired(self, table: Table, now: float) -> int:
        if not table.alive:
            return 0
        query = f"SELECT count(*) FROM {table.name} WHERE NOT ({table.alive})"
        return int(self.db.execute(query, (now,)).fetchone()[0])

    def snapshot(self, now: float) -> Snapshot:
        found = Snapshot()
        for table in TABLES:
            columns = self.columns(table.name)
            at = columns.index("space_id")
            for row in self.rows(table, columns, now):
                found.tallies.setdefault((table.name, row[at]), Tally()).add(row)
        for space, seq, digest in self.db.execute(HEADS_SQL):
            found.heads[str(space)] = (int(seq), bytes(digest))
        return found

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()  # ends the read transaction (nothing was written)


HEADS_SQL: Final = (
    "SELECT r.space_id, r.seq, r.hash FROM records r"
    " JOIN (SELECT space_id, max(seq) AS seq FROM records GROUP BY space_id) h"
    " ON r.space_id = h.space_id AND r.seq = h.seq"
)


# -- the PostgreSQL side -----------------------------------------------------------------------


def postgres_url(target: str) -> str:
    if not target.startswith(POSTGRES_SCHEMES):
        raise TransferError(f"--to must be a postgresql:// URL, not {masked_url(target)!r}")
    return target


async def postgres_columns(conn: asyncpg.Connection) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(str(row[0]), []).append(str(row[1]))
    return found


async def postgres_snapshot(conn: asyncpg.Connection, now: float) -> Snapshot:
    """What the target holds (read in one REPEATABLE READ transaction: one snapshot)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _read_target(conn, now)


async def _read_target(conn: asyncpg.Connection, now: float) -> Snapshot:
    """What the target holds, as the transaction ``conn`` is in sees it."""
    found = Snapshot()
    columns = await postgres_columns(conn)
    for table in TABLES:
        names = columns[table.name]
        at = names.index("space_id")
        where = f" WHERE {table.alive.replace('?', '$1')}" if table.alive else ""
        query = f"SELECT {', '.join(names)} FROM {table.name}{where}"
        params = (now,) if table.alive else ()
        async for row in conn.cursor(query, *params, prefetch=table.batch):
            found.tallies.setdefault((table.name, row[at]), Tally()).add(tuple(row))
    for space, seq, digest in await conn.fetch(HEADS_SQL):
        found.heads[str(space)] = (int(seq), bytes(digest))
    return found


# -- the migration -----------------------------------------------------------------------------


@dataclass
class Report:
    """What a migration (or a verification) found; ``problems`` empty when it verified."""

    source: str
    target: str
    schema: int
    copied: bool
    snapshot: Snapshot
    expired: dict[str, int]
    problems: list[str]

    def document(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "source": self.source,
            "target": self.target,
            "schema": self.schema,
            "copied": self.copied,
            "verified": not self.problems,
            "tables": {t.name: self.snapshot.count(t.name) for t in TABLES},
            "expired_not_copied": self.expired,
            "spaces": [
                {
                    "space_id": space,
                    "head_seq": head[0] if head else None,
                    "head_hash": head[1].hex() if head else None,
                    "rows": {
                        t.name: self.snapshot.tallies.get((t.name, space), Tally()).rows
                        for t in TABLES
                    },
                }
                for space in self.snapshot.spaces()
                for head in [self.snapshot.heads.get(space)]
            ],
            "problems": self.problems,
        }


async def migrate(source: str, target: str, *, verify_only: bool = False) -> Report:
    """Copy ``sqlite:PATH`` into the empty PostgreSQL database ``target`` (or, with
    ``verify_only``, only compare the two) and verify; raises :class:`TransferError` when
    it cannot start. The report's ``problems`` list every difference found."""
    path = sqlite_file(source)
    url = postgres_url(target)
    if len(sqlite_migrations()) != len(postgres_migrations()):
        raise TransferError("this salon's SQLite and PostgreSQL schemas are not at one version")
    reader = SqliteSource(path)
    reader.open()
    try:
        now = time.time()
        mine = reader.snapshot(now)  # the first read fixes the snapshot
        expired = {t.name: reader.expired(t, now) for t in TABLES if t.alive}
        database = Database(url)
        await database.open()  # brings an empty database to the schema: one error line if not
        copied = False
        try:
            async with database.pool.acquire() as conn:
                await check_target_schema(conn, reader)
                if verify_only:
                    problems = compare(mine, await postgres_snapshot(conn, now))
                else:
                    problems = await copy(conn, reader, now, mine, path)
                    copied = not problems
            schema = await database.schema_version()
        finally:
            await database.close()
    finally:
        reader.close()
    return Report(
        f"{SQLITE_PREFIX}{path}", masked_url(url), schema, copied, mine, expired, problems
    )


class _Unverified(Exception):
    """The copy does not match its source: rolled back (carries the differences)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.problems = problems


async def check_target_schema(conn: asyncpg.Connection, reader: SqliteSource) -> None:
    columns = await postgres_columns(conn)
    unknown = set(columns) - {t.name for t in TABLES} - POSTGRES_ONLY
    if unknown:
        raise TransferError(
            f"the PostgreSQL database has tables this tool does not know: {sorted(unknown)}"
        )
    for table in TABLES:
        if sorted(columns.get(table.name, [])) != sorted(reader.columns(table.name)):
            raise TransferError(
                f"table {table.name} has other columns in PostgreSQL than in SQLite"
            )


async def copy(
    conn: asyncpg.Connection, reader: SqliteSource, now: float, source: Snapshot, path: Path
) -> list[str]:
    """Every row alive at ``now``, in one transaction on the target (which must be empty),
    committed only if it verifies: what the transaction holds then matches ``source`` (and
    the file did not move on meanwhile). Otherwise it is rolled back, leaving the target
    empty, and the differences are returned: a file whose values PostgreSQL stores other
    than SQLite read them (a crafted one, say) never leaves a copy that did not verify."""
    try:
        await _copy(conn, reader, now, source, path)
    except _Unverified as failed:
        return failed.problems
    return []


async def _copy(
    conn: asyncpg.Connection, reader: SqliteSource, now: float, source: Snapshot, path: Path
) -> None:
    names = [t.name for t in TABLES]
    async with conn.transaction():
        # No instance may write while we copy (reads go on); the lock also makes the
        # emptiness check below hold until the commit.
        await conn.execute(f"LOCK TABLE {', '.join(names)} IN EXCLUSIVE MODE")
        for name in names:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):
                raise TransferError(
                    f"the PostgreSQL database is not empty (table {name} has rows): "
                    "migrate into a new database, or compare with --verify-only"
                )
        for table in TABLES:
            columns = reader.columns(table.name)
            batch: list[tuple[Any, ...]] = []
            for row in reader.rows(table, columns, now):
                batch.append(row)
                if len(batch) >= table.batch:
                    await conn.copy_records_to_table(table.name, records=batch, columns=columns)
                    batch = []
            if batch:
                await conn.copy_records_to_table(table.name, records=batch, columns=columns)
        problems = compare(source, await _read_target(conn, now)) or moved_on(reader, path)
        if problems:
            raise _Unverified(problems)  # rolls the copy back


def moved_on(reader: SqliteSource, path: Path) -> list[str]:
    """Whether the file holds writes newer than the snapshot (then the copy lacks them)."""
    later = time.time()
    fresh = SqliteSource(path)
    fresh.open()
    try:
        now_there = fresh.snapshot(later)
    finally:
        fresh.close()
    changed = compare(reader.snapshot(later), now_there)
    if not changed:
        return []
    spaces = {line.split(":", 1)[0] for line in changed}
    return [
        f"the SQLite database changed during the migration ({len(spaces)} spaces have writes "
        "the copy lacks): stop 'salon serve' on it, then migrate again into a new database"
    ]


def summary_lines(report: Report) -> list[str]:
    """The summary for people (stdout), of a report that verified."""
    snap = report.snapshot
    counts = {t.name: snap.count(t.name) for t in TABLES}
    verb = "copied {} into {}" if report.copied else "compared {} with {}"
    lines = [f"{verb.format(report.source, report.target)} (schema {report.schema})"]
    for table in TABLES:
        line = f"  {table.name:<16} {counts[table.name]:>9} rows"
        if report.expired.get(table.name):
            line += f"  ({report.expired[table.name]} expired, not copied)"
        lines.append(line)
    spaces = len(snap.spaces())
    lines.append(
        f"verified: {spaces} space{'' if spaces == 1 else 's'}: row counts, row contents "
        "and record chain heads match"
    )
    return lines
