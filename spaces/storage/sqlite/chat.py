"""Chat and story storage on SQLite (a :class:`~spaces.storage.interfaces.ChatStore`):
group commit, with the fsync off the event loop.

Three connections of our own to the main store's file (WAL mode), apart from the main
store's: a *writer*, a *reader* and a *checkpointer*.

- The writer does the CPU part of a write — idempotency look-ups, sequence assignment,
  inserts, all microseconds — on the event loop thread, and only the statements that wait on
  the disk (``BEGIN IMMEDIATE`` when the lock is taken, and ``COMMIT``, which fsyncs with
  ``synchronous=FULL``) on its own thread. Under load this matters: a thread that needs the
  GIL back after each of dozens of small statements waits up to the interpreter's switch
  interval every time, behind an event loop busy fanning out. An asyncio lock serialises
  every use of the writer, across those hops.
- The reader answers fetches on its own thread; WAL readers see the last commit and never
  wait for the writer.
- The :class:`Checkpointer` copies the WAL back into the database on its own thread, so no
  commit stalls on an automatic checkpoint.

``secure_delete=ON`` zeroes deleted rows and freed pages; after deleting expired data the
WAL is checkpointed and truncated, so the deleted bytes leave the ``-wal`` file too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from protocol.chat_wire import ChatMessage, StoryInfo, StoryPartName
from protocol.errors import Conflict
from spaces.storage.interfaces import Committed, NewMessage, NewStory, StorageError
from spaces.storage.rows import message_from_row, story_from_row
from spaces.storage.sqlite.store import CONNECTION_PRAGMAS

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEMA_VERSION: Final = 2  # the migration that made this module's tables
CHECKPOINT_ATTEMPTS: Final = 20
CHECKPOINT_EVERY: Final = 1.0  # seconds between looks at the WAL's size
CHECKPOINT_WAL_BYTES: Final = 4 * 1024 * 1024
BUSY_TIMEOUT_MS: Final = 5000

_MESSAGE_COLUMNS = "seq, sender, client_id, epoch, ttl, sent_at, expires_at, box"
_STORY_COLUMNS = (
    "story_id, room_id, sender, epoch, ttl, posted_at, expires_at, meta,"
    " length(image), length(thumb)"
)


def _connect(path: Path, *, any_thread: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=not any_thread)
    for pragma in CONNECTION_PRAGMAS:
        db.execute(pragma)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db


class Checkpointer:
    """Copies the WAL back into the database from its own connection and thread, so the
    writer never stalls on a checkpoint. PASSIVE checkpoints run alongside writes; once one
    has copied everything, the next write starts the WAL from its beginning again."""

    def __init__(
        self, path: Path, every: float = CHECKPOINT_EVERY, wal_bytes: int = CHECKPOINT_WAL_BYTES
    ) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        self.every = every
        self.wal_bytes = wal_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salon-checkpoint")
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._db = await self._call(_connect, self.path)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                if self.wal.exists() and self.wal.stat().st_size > self.wal_bytes:
                    assert self._db is not None
                    await self._call(_one, self._db, "PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                log.exception("checkpoint failed")


class SqliteChatStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()  # one user of the writer at a time, across its hops
        self._last_seq: dict[tuple[str, str], int] = {}  # as of the last commit
        self._scrub_pending = False  # deleted rows may still sit in the WAL
        self._checkpointer: Checkpointer | None = None

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StorageError("chat store is not open")
        return self._writer

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StorageError("chat store is not open")
        return self._reader

    async def _on_write_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._write_thread is None:
            raise StorageError("chat store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._read_thread is None:
            raise StorageError("chat store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._read_thread, fn, *args)

    async def open(self) -> None:
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="salon-chat-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="salon-chat-read")
        try:
            self._writer = await self._on_write_thread(self._open_writer)
            self._reader = await self._read(_connect, self.path)
        except BaseException:
            await self.close()
            raise
        self._checkpointer = Checkpointer(self.path)
        await self._checkpointer.start()

    def _open_writer(self) -> sqlite3.Connection:
        db = _connect(self.path, any_thread=True)
        # No checkpoints inside our commits (they would stall a batch for tens of ms);
        # the Checkpointer copies the WAL back on its own connection and thread.
        db.execute("PRAGMA wal_autocheckpoint=0")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version < SCHEMA_VERSION:
            db.close()
            raise StorageError(f"database schema {version} lacks the chat tables")
        return db

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        async with self._lock:
            for connection, thread in (
                (self._writer, self._write_thread),
                (self._reader, self._read_thread),
            ):
                if thread is not None:
                    if connection is not None:
                        await asyncio.get_running_loop().run_in_executor(thread, connection.close)
                    thread.shutdown(wait=True)
            self._writer = self._reader = None
            self._write_thread = self._read_thread = None

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (CPU only, on the loop thread) inside a write transaction; the
        statements that wait on the disk go to the writer's thread. Returns after COMMIT."""
        async with self._lock:
            db = self.db
            try:
                try:
                    self._begin_now(db)
                except sqlite3.OperationalError:  # another connection holds the write lock
                    await self._finish_on_write_thread(db.execute, "BEGIN IMMEDIATE")
                result = work(db)
                await self._finish_on_write_thread(db.execute, "COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

    async def _finish_on_write_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`_on_write_thread`, but a cancelled caller still waits for the thread
        to finish, so nothing touches the connection while it is in use there."""
        job = asyncio.ensure_future(self._on_write_thread(fn, *args))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await job
            raise

    @staticmethod
    def _begin_now(db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE without waiting (raises if the lock is taken)."""
        db.execute("PRAGMA busy_timeout=0")
        try:
            db.execute("BEGIN IMMEDIATE")
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    # -- messages ------------------------------------------------------------------------------

    async def append_messages(self, batch: Sequence[NewMessage], now: float) -> list[Committed]:
        assigned: dict[tuple[str, str], int] = {}

        def work(db: sqlite3.Connection) -> list[Committed]:
            results: list[Committed] = []
            fresh: dict[tuple[str, str, bytes, bytes], ChatMessage] = {}
            rows = []
            for new in batch:
                key = (new.space_id, new.room_id, new.sender, new.client_id)
                prior = fresh.get(key) or _find(db, *key)
                if prior is not None:
                    results.append(Committed(prior, True))
                    continue
                room = (new.space_id, new.room_id)
                seq = assigned.get(room, self._room_last_seq(db, room)) + 1
                assigned[room] = seq
                expires_at = now + new.lifetime if new.lifetime > 0 else None
                message = ChatMessage(
                    seq, new.sender, new.client_id, new.epoch, new.ttl, now, expires_at, new.box
                )
                fresh[key] = message
                rows.append((new.space_id, new.room_id, *msgspec.structs.astuple(message)))
                results.append(Committed(message, False))
            db.executemany(
                "INSERT INTO messages (space_id, room_id, seq, sender, client_id, epoch, ttl,"
                " sent_at, expires_at, box) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "INSERT INTO room_seqs (space_id, room_id, last_seq) VALUES (?, ?, ?)"
                " ON CONFLICT (space_id, room_id) DO UPDATE SET last_seq = excluded.last_seq",
                [(space_id, room_id, seq) for (space_id, room_id), seq in assigned.items()],
            )
            return results

        try:
            results = await self._write(work)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"conflicting message write: {exc}") from None
        # Only a committed transaction moves the cached sequences on.
        self._last_seq.update(assigned)
        return results

    def _room_last_seq(self, db: sqlite3.Connection, room: tuple[str, str]) -> int:
        cached = self._last_seq.get(room)
        if cached is not None:
            return cached
        row = _one(db, "SELECT last_seq FROM room_seqs WHERE space_id = ? AND room_id = ?", room)
        last = int(row[0]) if row else 0
        self._last_seq[room] = last
        return last

    async def find_message(
        self, space_id: str, room_id: str, sender: bytes, client_id: bytes
    ) -> ChatMessage | None:
        return await self._read(_find, self.reader, space_id, room_id, sender, client_id)

    async def messages(
        self, space_id: str, room_id: str, after: int, limit: int, now: float
    ) -> tuple[list[ChatMessage], int]:
        return await self._read(self._messages, space_id, room_id, after, limit, now)

    def _messages(
        self, space_id: str, room_id: str, after: int, limit: int, now: float
    ) -> tuple[list[ChatMessage], int]:
        db = self.reader
        db.execute("BEGIN")  # one snapshot for both queries
        try:
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE space_id = ? AND room_id = ?"
                " AND seq > ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY seq LIMIT ?",
                (space_id, room_id, after, now, limit),
            ).fetchall()
            row = _one(
                db,
                "SELECT last_seq FROM room_seqs WHERE space_id = ? AND room_id = ?",
                (space_id, room_id),
            )
        finally:
            db.execute("COMMIT")
        return [message_from_row(r) for r in rows], int(row[0]) if row else 0

    # -- stories -------------------------------------------------------------------------------

    async def add_story(self, story: NewStory, now: float) -> tuple[StoryInfo, bool]:
        def work(db: sqlite3.Connection) -> tuple[StoryInfo, bool]:
            row = _one(
                db,
                f"SELECT {_STORY_COLUMNS}, space_id FROM stories WHERE story_id = ?",
                (story.story_id,),
            )
            if row is not None:
                if str(row[10]) != story.space_id or bytes(row[2]) != story.sender:
                    raise Conflict("this story id is taken")
                return story_from_row(row), True
            db.execute(
                "INSERT INTO stories (story_id, space_id, room_id, sender, epoch, ttl,"
                " posted_at, expires_at, meta, thumb, image)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
                ),
            )
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

        return await self._write(work)

    async def stories(self, space_id: str, room_id: str, now: float) -> list[StoryInfo]:
        return await self._read(self._stories, space_id, room_id, now)

    def _stories(self, space_id: str, room_id: str, now: float) -> list[StoryInfo]:
        rows = self.reader.execute(
            f"SELECT {_STORY_COLUMNS} FROM stories WHERE space_id = ? AND room_id = ?"
            " AND expires_at > ? ORDER BY posted_at DESC, story_id",
            (space_id, room_id, now),
        ).fetchall()
        return [story_from_row(r) for r in rows]

    async def story(self, space_id: str, story_id: str, now: float) -> StoryInfo | None:
        return await self._read(self._one_story, space_id, story_id, now)

    def _one_story(self, space_id: str, story_id: str, now: float) -> StoryInfo | None:
        row = _one(
            self.reader,
            f"SELECT {_STORY_COLUMNS} FROM stories WHERE space_id = ? AND story_id = ?"
            " AND expires_at > ?",
            (space_id, story_id, now),
        )
        return None if row is None else story_from_row(row)

    async def story_part(
        self, space_id: str, story_id: str, part: StoryPartName, offset: int, length: int
    ) -> bytes:
        return await self._read(self._story_part, space_id, story_id, part, offset, length)

    def _story_part(
        self, space_id: str, story_id: str, part: StoryPartName, offset: int, length: int
    ) -> bytes:
        column = {"image": "image", "thumb": "thumb"}[part]
        db = self.reader
        row = _one(
            db,
            "SELECT rowid FROM stories WHERE space_id = ? AND story_id = ?",
            (space_id, story_id),
        )
        if row is None:
            return b""
        # Incremental blob I/O reads just the chunk, not the whole image.
        with db.blobopen("stories", column, int(row[0]), readonly=True) as blob:
            blob.seek(min(offset, len(blob)))
            return bytes(blob.read(length))

    # -- expiry --------------------------------------------------------------------------------

    async def delete_expired(self, now: float) -> int:
        async with self._lock:  # rare: the whole of it on the writer's thread
            return await self._on_write_thread(self._delete_expired, now)

    def _delete_expired(self, now: float) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            messages = db.execute(
                "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).rowcount
            stories = db.execute("DELETE FROM stories WHERE expires_at <= ?", (now,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        deleted = int(messages) + int(stories)
        if deleted or self._scrub_pending:
            self._scrub_pending = not self._truncate_wal()
        return deleted

    def _truncate_wal(self) -> bool:
        """Copy the WAL (whose older frames still hold the deleted rows) into the database
        file, where secure_delete has zeroed them, and cut the WAL to zero bytes."""
        for _ in range(CHECKPOINT_ATTEMPTS):
            busy = int(_one(self.db, "PRAGMA wal_checkpoint(TRUNCATE)")[0])
            if not busy:
                return True
            time.sleep(0.05)  # a reader or the checkpointer is busy; try again
        log.warning("could not truncate the WAL after deleting expired data; will retry")
        return False


def _one(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first row (or None), with the statement finished: an unfinished statement would
    hold a read snapshot open and keep checkpoints from completing."""
    cursor = db.execute(sql, params)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def _find(
    db: sqlite3.Connection, space_id: str, room_id: str, sender: bytes, client_id: bytes
) -> ChatMessage | None:
    row = _one(
        db,
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"
        " WHERE space_id = ? AND room_id = ? AND client_id = ? AND sender = ?",
        (space_id, room_id, client_id, sender),
    )
    return None if row is None else message_from_row(row)
