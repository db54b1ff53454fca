"""What one instance tells the others: small events that follow a commit (issue 11).

Several ``salon serve`` instances may share one PostgreSQL database. Each instance delivers
what it commits to its own connections directly (the hub, chat followers, call sessions);
the others learn of it through an :class:`Events` bus and reload what changed from the
store. An event carries ids and sequence numbers only, never content (PostgreSQL's NOTIFY
payloads are at most 8000 bytes, and the bus must not become a second copy of the data):

- ``records`` ``(space_id, head_seq)`` — records were appended up to ``head_seq``: reload the
  roster's tail, announce the records (:class:`~protocol.wire.RecordAdded`) and end the
  sessions of members who were removed or left;
- ``messages`` ``(space_id, room_id, first_seq, last_seq)`` — messages were committed in a
  room: followers here get them from the store.

And one ordered log, for what must happen in the same order everywhere (calls, whose state
each instance keeps a replica of): :meth:`Events.submit` hands an input to every instance's
:meth:`Events.on_ordered` handler, this one's included, all in one order (PostgreSQL's
commit order), and returns this instance's result (or raises its error). The log is kept per
room, numbered, so that an instance can rebuild a call's replica from it
(:mod:`spaces.call_log`); instances write heartbeats, so that the seats held through one
that died can be freed by the others (:meth:`Events.live_instances`).

Engines:

- :class:`LocalEvents` (SQLite, one instance): every event is delivered where it happens, so
  nothing ever arrives from elsewhere; subscribing is the same code path, it is just never
  called.
- :class:`~spaces.storage.postgres.events.PostgresEvents`: the store writes the event with
  ``pg_notify`` inside the transaction that commits the change (no event without its commit,
  no commit without its event); a dedicated connection LISTENs, and events from other
  instances are handled one at a time, in commit order. When that connection is lost it
  reconnects with back-off and calls the :meth:`Events.on_resync` handlers, which reload
  from the store whatever may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

CHANNEL: Final = "salon_events"
RECORDS: Final = "records"
MESSAGES: Final = "messages"
ORDERED: Final = "ordered"  # (input id, token): an input of the ordered log

Handler = Callable[[list[str | int]], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]
# (input, submitted here?, its number in its room's log or 0 if unnumbered) -> result
Ordered = Callable[[bytes, bool, int], Awaitable[Any]]
Room = tuple[str, str]  # (space id, room id)
# A room's log as kept (spaces/call_log.py): (seq, base) of the newest snapshot if any, and
# (seq, input) of each state-changing input after it.
RoomLog = tuple[tuple[int, bytes] | None, list[tuple[int, bytes]]]


def encode_event(instance: str, kind: str, args: Sequence[str | int]) -> str:
    """The NOTIFY payload: ``[instance, kind, *args]`` as compact JSON."""
    return json.dumps([instance, kind, *args], separators=(",", ":"))


def decode_event(payload: str) -> tuple[str, str, list[str | int]] | None:
    try:
        decoded = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(decoded, list) or len(decoded) < 2:
        return None
    instance, kind, *args = decoded
    if not isinstance(instance, str) or not isinstance(kind, str):
        return None
    return instance, kind, args


class Events(Protocol):
    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler(args)`` for each event of ``kind`` committed by another instance."""
        ...

    def on_resync(self, handler: Resync) -> None:
        """Call ``handler()`` after events may have been missed (the bus reconnected)."""
        ...

    def on_ordered(self, handler: Ordered) -> None:
        """The one handler of the ordered log (set once)."""
        ...

    instance: str  # this instance's id (random per process)

    async def submit(self, body: bytes, room: Room, state: bool) -> Any:
        """Apply ``body`` on every instance, in the log's order; this instance's result.
        ``state``: it changes the room's call (kept for replays), else a signal."""
        ...

    async def room_log(self, room: Room, upto: int | None) -> RoomLog:
        """What is kept of a room's log, up to input ``upto`` (None: all committed)."""
        ...

    async def compact(self, room: Room, seq: int, base: bytes) -> None:
        """Input ``seq`` left the call idle, as ``base``: keep that, drop what came before."""
        ...

    async def live_instances(self, silent_for: float) -> set[str] | None:
        """Instances heard from within ``silent_for`` seconds (None: cannot tell now)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Dispatch:
    """Handlers by kind, and the resync handlers: shared by every implementation."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Handler]] = {}
        self.resyncs: list[Resync] = []
        self.ordered: Ordered | None = None

    def on_ordered(self, handler: Ordered) -> None:
        self.ordered = handler

    def subscribe(self, kind: str, handler: Handler) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    def on_resync(self, handler: Resync) -> None:
        self.resyncs.append(handler)

    async def dispatch(self, kind: str, args: list[str | int]) -> None:
        for handler in self.handlers.get(kind, ()):
            try:
                await handler(args)
            except Exception:
                log.exception("handling a %s event failed", kind)

    async def resync(self) -> None:
        for handler in self.resyncs:
            try:
                await handler()
            except Exception:
                log.exception("re-syncing after lost events failed")


class LocalEvents(Dispatch):
    """One instance (SQLite): everything is delivered where it is committed, and the
    ordered log is this process's order (one input at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self._order = asyncio.Lock()
        self.instance = secrets.token_hex(8)

    async def submit(self, body: bytes, room: Room, state: bool) -> Any:
        assert self.ordered is not None, "no handler for the ordered log"
        async with self._order:
            return await self.ordered(body, True, 0)

    async def room_log(self, room: Room, upto: int | None) -> RoomLog:
        return None, []  # replicas here never miss an input: nothing to replay

    async def compact(self, room: Room, seq: int, base: bytes) -> None:
        """Nothing is kept."""

    async def live_instances(self, silent_for: float) -> set[str] | None:
        return {self.instance}

    async def start(self) -> None:
        """Nothing to listen to."""

    async def stop(self) -> None:
        """Nothing to stop."""
