"""Who is connected to which space, and pushing events to them.

Each connection registers a :class:`Subscriber` with a bounded outgoing queue (in frames
and in bytes). Publishing never waits on a client: a subscriber whose queue is full is
disconnected (it resumes from its last sequence when it reconnects), so one slow reader
never delays the others, and a client that asks for large replies without reading them
cannot make the server hold more than ``max_bytes`` for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from protocol.wire import SessionClosed, encoder
from spaces.counters import Counters

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscriber:
    space_id: str
    member: bytes
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(1024))
    max_bytes: int = 8 * 1024 * 1024  # [limits] max_queued_bytes_per_connection
    queued_bytes: int = 0
    closed: bool = False
    # While the connection is serving one of its own requests, a close waits for the reply
    # (a member who leaves still hears "done" before "session closed").
    busy: bool = False
    pending_close: bytes | None = None

    def push(self, frame: bytes) -> bool:
        """Queue a frame; False (and the subscriber is closed) if it cannot keep up."""
        if self.closed:
            return False
        # An empty queue takes any one frame: a reply bigger than the budget still goes out.
        if self.queued_bytes and self.queued_bytes + len(frame) > self.max_bytes:
            self.close()
            return False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close()
            return False
        self.queued_bytes += len(frame)
        return True

    async def pop(self) -> bytes | None:
        """The next frame to write; None once closed and drained."""
        frame = await self.queue.get()
        if frame is not None:
            self.queued_bytes -= len(frame)
        return frame

    def end(self, goodbye: bytes) -> None:
        """Send a last frame and close, after the reply in progress if there is one."""
        if self.busy:
            self.pending_close = goodbye
            return
        self.push(goodbye)
        self.close()

    def finish_request(self) -> None:
        self.busy = False
        if self.pending_close is not None:
            self.end(self.pending_close)

    def close(self) -> None:
        """Ask the connection's writer to stop after what is queued."""
        if not self.closed:
            self.closed = True
            while True:
                try:
                    self.queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self.queue.get_nowait()


class Hub:
    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = Counters() if counters is None else counters
        self._by_space: dict[str, set[Subscriber]] = {}
        self._on_remove: list[Callable[[Subscriber], None]] = []
        self.closing = False  # close_all was called: the server is shutting down
        self._on_departed: list[Callable[[str, bytes], None]] = []

    def on_remove(self, callback: Callable[[Subscriber], None]) -> None:
        """Call ``callback(subscriber)`` whenever a connection goes (e.g. to leave calls)."""
        self._on_remove.append(callback)

    def on_departed(self, callback: Callable[[str, bytes], None]) -> None:
        """Call ``callback(space_id, member)`` whenever a member is no longer one (removed,
        banned or gone), on every instance, whether or not connected here."""
        self._on_departed.append(callback)

    def add(self, subscriber: Subscriber) -> None:
        self._by_space.setdefault(subscriber.space_id, set()).add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        members = self._by_space.get(subscriber.space_id)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._by_space[subscriber.space_id]
        for callback in self._on_remove:
            callback(subscriber)

    def census(self) -> tuple[int, int]:
        """(spaces with a session open, sessions): for /metrics."""
        return len(self._by_space), sum(len(s) for s in self._by_space.values())

    def subscribers(self, space_id: str) -> list[Subscriber]:
        return list(self._by_space.get(space_id, ()))

    def publish(self, space_id: str, event: msgspec.Struct, exclude: bytes | None = None) -> int:
        """Encode once, push to every subscriber of the space; returns deliveries queued."""
        frame = encoder.encode(event)
        delivered = 0
        for subscriber in self.subscribers(space_id):
            if subscriber.member != exclude and subscriber.push(frame):
                delivered += 1
        self.counters.deliveries += delivered
        return delivered

    def close_member(self, space_id: str, member: bytes, event: SessionClosed) -> None:
        frame = encoder.encode(event)
        for subscriber in self.subscribers(space_id):
            if subscriber.member == member:
                subscriber.end(frame)
        for callback in self._on_departed:
            callback(space_id, member)

    def close_all(self, event: SessionClosed) -> None:
        self.closing = True
        frame = encoder.encode(event)
        for members in list(self._by_space.values()):
            for subscriber in list(members):
                subscriber.busy = False
                subscriber.end(frame)
