"""The events bus on PostgreSQL: LISTEN on a dedicated connection (:mod:`spaces.events`).

The stores write events with :meth:`Database.notify` inside their committing transactions;
PostgreSQL delivers a transaction's notifications only once it commits, to every listener,
in commit order. Here one connection (outside the pool) LISTENs on
:data:`~spaces.events.CHANNEL`; events from other instances (this instance's own are
skipped: it has delivered them already) are queued and handled one at a time, in order.

If the connection is lost, it reconnects with back-off (0.1 s doubling to 5 s) and then
runs the resync handlers: notifications sent while nobody listened are gone, so the
handlers reload from the store (rosters' tails, followed rooms' messages; calls compare
their replicas with the rooms' logs).

The ordered log (migration 0005): each input takes its room's next number from
``call_rooms`` under that row's lock, held until the input commits, so a room's inputs
commit, and are notified, in number order. Signals are deleted after :data:`INPUTS_KEPT`;
state-changing inputs stay until a snapshot supersedes them (:meth:`compact`, then the
same minute; ``spaces/call_log.py`` says why).

Heartbeats: every :data:`HEARTBEAT_SECONDS` this instance writes its id and the database's
time to ``instances``; :meth:`live_instances` names those heard from lately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import asyncpg

from spaces.events import CHANNEL, ORDERED, Dispatch, Room, RoomLog, decode_event
from spaces.storage.interfaces import StorageError, StorageUnavailable
from spaces.storage.postgres.database import CONNECT_TIMEOUT, Database, masked_url

log = logging.getLogger(__name__)

BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
SUBMIT_TIMEOUT: Final = 10.0  # an input not heard back by then: the listener is down
INPUTS_KEPT: Final = "60 seconds"  # then the ordered log's signals are deleted
PRUNE_SECONDS: Final = 30.0
HEARTBEAT_SECONDS: Final = 2.0
INSTANCES_KEPT: Final = "1 day"  # then a silent instance's heartbeat row goes


class PostgresEvents(Dispatch):
    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database
        self._queue: asyncio.Queue[tuple[str, list[str | int]] | None] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self._waiting: dict[int, asyncio.Future[Any]] = {}  # token -> this instance's input
        self._tokens = 0
        self.instance = database.instance

    async def start(self) -> None:
        await self._connect()
        await self._heartbeat()  # before any session here holds a seat
        self._tasks = [
            asyncio.create_task(self._handle_forever()),
            asyncio.create_task(self._keep_listening()),
            asyncio.create_task(self._prune_forever()),
            asyncio.create_task(self._heartbeat_forever()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._disconnect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.database.url, timeout=CONNECT_TIMEOUT)
        conn.add_termination_listener(self._terminated)
        await conn.add_listener(CHANNEL, self._notified)
        self._conn = conn
        self._lost.clear()
        self.listening.set()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self.listening.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _terminated(self, conn: Any) -> None:
        self.listening.clear()
        self._lost.set()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        event = decode_event(payload)
        if event is None:
            log.warning("ignoring a malformed event")
            return
        instance, kind, args = event
        if kind == ORDERED:  # every instance applies the ordered log, this one included
            mine = instance == self.database.instance
            self._queue.put_nowait((kind, [*args, 1 if mine else 0]))
        elif instance != self.database.instance:
            self._queue.put_nowait((kind, args))

    async def submit(self, body: bytes, room: Room, state: bool) -> Any:
        if not self.listening.is_set():
            raise StorageUnavailable("the server is reconnecting to the database; try again")
        self._tokens += 1
        token = self._tokens
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            async with self.database.pool.acquire() as conn, conn.transaction():
                # The room's row stays locked until this commits: numbers commit in order.
                seq = await conn.fetchval(
                    "INSERT INTO call_rooms (space_id, room_id, seq) VALUES ($1, $2, 1) "
                    "ON CONFLICT (space_id, room_id) DO UPDATE SET seq = call_rooms.seq + 1 "
                    "RETURNING seq",
                    *room,
                )
                input_id = await conn.fetchval(
                    "INSERT INTO call_inputs (body, space_id, room_id, seq, state) "
                    "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    body,
                    *room,
                    seq,
                    state,
                )
                await self.database.notify(conn, ORDERED, [int(input_id), token])
            return await asyncio.wait_for(future, SUBMIT_TIMEOUT)
        except TimeoutError:
            raise StorageUnavailable("the server lost its database events; try again") from None
        finally:
            self._waiting.pop(token, None)

    async def _apply(self, args: list[str | int]) -> None:
        input_id, token, mine = int(args[0]), int(args[1]), bool(args[2])
        future = self._waiting.get(token) if mine else None
        try:
            row = await self.database.pool.fetchrow(
                "SELECT body, seq FROM call_inputs WHERE id = $1", input_id
            )
            if row is None:
                raise StorageError("an input of the ordered log is gone")
            assert self.ordered is not None, "no handler for the ordered log"
            result = await self.ordered(bytes(row["body"]), mine, int(row["seq"]))
        except Exception as exc:
            if future is None:
                if not mine:
                    log.debug("an input failed here as where it was submitted: %s", exc)
            elif not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)

    async def room_log(self, room: Room, upto: int | None) -> RoomLog:
        limit = upto if upto is not None else 2**62
        async with (
            self.database.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            newest = await conn.fetchrow(
                "SELECT seq, base FROM call_inputs WHERE space_id = $1 AND room_id = $2 "
                "AND base IS NOT NULL AND seq <= $3 ORDER BY seq DESC LIMIT 1",
                *room,
                limit,
            )
            after = int(newest["seq"]) if newest is not None else 0
            rows = await conn.fetch(
                "SELECT seq, body FROM call_inputs WHERE space_id = $1 AND room_id = $2 "
                "AND state AND seq > $3 AND seq <= $4 ORDER BY seq",
                *room,
                after,
                limit,
            )
        base = (after, bytes(newest["base"])) if newest is not None else None
        return base, [(int(r["seq"]), bytes(r["body"])) for r in rows]

    async def compact(self, room: Room, seq: int, base: bytes) -> None:
        """Write the snapshot now; what it supersedes goes with the next prune once a
        minute old (an instance still working through those inputs can read them)."""
        await self.database.pool.execute(
            "UPDATE call_inputs SET base = $4 WHERE space_id = $1 AND room_id = $2 AND seq = $3",
            *room,
            seq,
            base,
        )

    async def live_instances(self, silent_for: float) -> set[str] | None:
        try:
            rows = await self.database.pool.fetch(
                "SELECT instance FROM instances WHERE seen_at > now() - make_interval(secs => $1)",
                silent_for,
            )
        except Exception as exc:  # the database is away: nobody can be judged dead now
            log.warning("cannot read the instances' heartbeats: %s", type(exc).__name__)
            return None
        return {row["instance"] for row in rows}

    async def _heartbeat(self) -> None:
        await self.database.pool.execute(
            "INSERT INTO instances (instance, seen_at) VALUES ($1, now()) "
            "ON CONFLICT (instance) DO UPDATE SET seen_at = now()",
            self.instance,
        )

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._heartbeat()
            except Exception as exc:  # the database is away: the next beat will say
                log.warning("heartbeat failed: %s", type(exc).__name__)

    async def prune(self, kept: str = INPUTS_KEPT) -> None:
        """Delete the log's signals, and the inputs a newer snapshot of their room
        supersedes, once older than ``kept``; and long-silent instances' heartbeats."""
        await self.database.pool.execute(
            "DELETE FROM call_inputs AS old "
            f"WHERE created_at < now() - interval '{kept}' AND base IS NULL "
            "AND (NOT state OR EXISTS (SELECT 1 FROM call_inputs AS snap "
            "WHERE snap.space_id = old.space_id AND snap.room_id = old.room_id "
            "AND snap.base IS NOT NULL AND snap.seq > old.seq))"
        )
        await self.database.pool.execute(
            f"DELETE FROM instances WHERE seen_at < now() - interval '{INSTANCES_KEPT}'"
        )

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            try:
                await self.prune()
            except Exception:
                log.exception("pruning the ordered log failed")

    async def _handle_forever(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:  # events were lost: reload from the store
                await self.resync()
            elif item[0] == ORDERED:
                await self._apply(item[1])
            else:
                await self.dispatch(*item)

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            await self._disconnect()
            delay = BACKOFF_FIRST
            while True:
                log.warning("event listener lost; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                    break
                except Exception as exc:  # any failure to connect: try again later
                    log.warning(
                        "event listener cannot reach %s: %s",
                        masked_url(self.database.url),
                        type(exc).__name__,
                    )
                    delay = min(BACKOFF_MAX, delay * 2)
            log.warning("event listener back; re-syncing from the store")
            self._queue.put_nowait(None)
