"""Chat rooms, channels and stories on the server: rules, group commit, live delivery, expiry.

The server never sees text, captions or images — only ciphertext with the metadata it needs
(DESIGN §5). What it enforces:

- who may post: members in chat rooms; owners, moderators and granted publishers in channels
  (:meth:`Roster.may_post`); nobody in conference rooms; stories go to channels only;
- that a message is encrypted for the current epoch (so nothing new is readable with the
  keys of a member who left), sizes, lifetimes and a rate per member;
- acknowledged means durable: a send is answered only after the transaction holding it has
  committed. Sends are queued and committed in batches (group commit): while one batch is
  being written, the next one fills up, so 50 concurrent senders share each fsync;
- per-room sequences are gap-free and assigned inside the commit; a retried client message
  id returns the first message's sequence;
- live delivery: a session that fetched a room with ``follow=True`` gets
  :class:`MessagesAdded` events with the messages committed there (each frame encoded once
  and pushed to every follower's bounded queue without waiting on anyone). Like the commit,
  the fan-out batches itself under load (:class:`Outbox`): a quiet room's messages go out at
  once; when followers' writers lag, frames are spaced by an adaptive window of up to 25 ms
  and carry all the messages committed meanwhile;
- expiry: a sweeper deletes expired messages and stories for good (:class:`ChatStore`).

The rule checks (:func:`check_post`, :func:`check_story`, :func:`message_lifetime`) are
pure functions of the roster; :class:`Chat` adds storage, batching and delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from protocol import roomkeys
from protocol.chat_wire import (
    CLIENT_ID_LEN,
    STORY_CHUNK_BYTES,
    ChatMessage,
    FetchMessages,
    FetchStoryPart,
    ListStories,
    Messages,
    MessagesAdded,
    MessageSent,
    PostStory,
    SendMessage,
    Stories,
    StoryChunkStored,
    StoryPart,
    StoryPosted,
    UploadStoryChunk,
)
from protocol.errors import (
    ErrorCode,
    Forbidden,
    InvalidMessage,
    NotFound,
    ProtocolError,
    RateLimited,
    TooLarge,
)
from protocol.ids import is_valid_id
from protocol.records import Room, Roster
from protocol.wire import encoder
from spaces.config import Config, LimitsSection
from spaces.counters import Counters
from spaces.hub import Subscriber
from spaces.limits import KeyedLimiter
from spaces.membership import Membership, Stale
from spaces.storage.interfaces import ChatStore, Committed, NewMessage, NewStory, StoryStaging
from spaces.storage.staging import MemoryStoryStaging

log = logging.getLogger(__name__)

MAX_MESSAGE_TTL: Final = 366 * 86400
MAX_STORY_TTL: Final = 7 * 86400
MAX_FETCH: Final = 1000
MAX_BATCH: Final = 2048
MIN_WINDOW: Final = 0.001  # seconds: the smallest gap between two frames of a busy room
MAX_WINDOW: Final = 0.025
BACKLOG_HIGH: Final = 2.0  # frames queued per follower (including the new one)


class StorageFailed(ProtocolError):
    code = ErrorCode.STORAGE


# -- the rules (pure) ----------------------------------------------------------------------------


def _room(roster: Roster, room_id: str) -> Room:
    room = roster.rooms.get(room_id)
    if room is None:
        raise NotFound("no such room in this space")
    return room


def check_read(roster: Roster, room_id: str, member: bytes) -> Room:
    """The room a member may read messages or stories of."""
    roster.active(member)
    room = _room(roster, room_id)
    if room.spec.kind == "conference":
        raise InvalidMessage("conference rooms have no messages")
    return room


def check_post(
    roster: Roster, room_id: str, member: bytes, epoch: int, framed: bytes | None = None
) -> Room:
    """The room ``member`` may post to now, with a key of ``epoch``; and if ``framed`` (a
    ciphertext with its key generation in front, protocol.roomkeys) is given, of the room's
    current generation, so a since-join room's joiners can read whatever is sent after them."""
    room = check_read(roster, room_id, member)
    if not roster.may_post(room_id, member):
        raise Forbidden(
            "not allowed: only owners, moderators and granted publishers post in this channel"
        )
    if epoch != roster.epoch:
        raise Stale(
            f"the space moved to key epoch {roster.epoch} (a member left or was removed); "
            "encrypt with the current room key"
        )
    if framed is not None and roomkeys.unframe(framed)[0] != roster.room_generation(room_id):
        raise Stale("someone joined this room's space: encrypt with the room key's new generation")
    return room


def check_story(
    roster: Roster, room_id: str, member: bytes, epoch: int, framed: bytes | None = None
) -> Room:
    room = check_post(roster, room_id, member, epoch, framed)
    if room.spec.kind != "channel":
        raise InvalidMessage("stories are posted to channels")
    return room


def message_lifetime(room: Room, ttl: int) -> int:
    """Seconds until a message expires (0: kept): the sender's ttl, else the room's."""
    if not 0 <= ttl <= MAX_MESSAGE_TTL:
        raise InvalidMessage(f"a message lifetime is between 0 and {MAX_MESSAGE_TTL} seconds")
    return ttl or room.spec.ttl


# -- group commit --------------------------------------------------------------------------------


class GroupCommitter:
    """Queue messages; write each batch in one transaction; answer each after its commit.

    ``on_commit`` runs on the event loop after every committed batch, in commit order, so
    events for a room go out in sequence order."""

    def __init__(
        self,
        store: ChatStore,
        on_commit: Callable[[list[tuple[NewMessage, Committed]]], None],
        clock: Callable[[], float] = time.time,
        max_batch: int = MAX_BATCH,
        counters: Counters | None = None,
    ) -> None:
        self.counters = Counters() if counters is None else counters
        self.store = store
        self.on_commit = on_commit
        self.clock = clock
        self.max_batch = max_batch
        self._pending: list[tuple[NewMessage, asyncio.Future[Committed]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, new: NewMessage) -> Committed:
        if self._closing:
            raise StorageFailed("the server is shutting down; send again")
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            started = time.perf_counter()
            try:
                results = await self.store.append_messages([new for new, _ in batch], self.clock())
                self.counters.commit_seconds.observe(time.perf_counter() - started)
            except Exception as exc:
                if not isinstance(exc, ProtocolError):
                    log.exception("storing %d messages failed", len(batch))
                    exc = StorageFailed("the server could not store the message; send again")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            try:
                self.on_commit([(new, r) for (new, _), r in zip(batch, results, strict=True)])
            except Exception:
                log.exception("delivering committed messages failed")


# -- live delivery -------------------------------------------------------------------------------


def next_window(window: float, backlog: float) -> float:
    """How long a room's outbox gathers messages before the next frame, given the average
    number of frames still queued per follower just after the last one was pushed (1: all
    caught up). Doubles while writers lag, halves back to 0 (no waiting) once they keep up."""
    if backlog > BACKLOG_HIGH:
        return min(MAX_WINDOW, max(MIN_WINDOW, window * 2))
    return window / 2 if window > MIN_WINDOW else 0.0


class Outbox:
    """Messages committed in one room and not yet pushed to its followers.

    A quiet room sends each message at once. When its followers' writers fall behind (a
    busy server, many followers), frames are spaced by an adaptive window and each carries
    every message committed meanwhile: fewer, fuller frames, instead of queues that grow
    until followers are dropped."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.messages: list[ChatMessage] = []
        self.window = 0.0
        self.last_flush = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def add(
        self,
        messages: list[ChatMessage],
        flush: Callable[[tuple[str, str]], None],
        key: tuple[str, str],
    ) -> None:
        self.messages.extend(messages)
        if self.handle is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self.last_flush + self.window - loop.time())
            self.handle = loop.call_later(delay, flush, key)

    def take(self) -> MessagesAdded | None:
        self.handle = None
        messages, self.messages = self.messages, []
        return MessagesAdded(self.room_id, messages) if messages else None

    def adapt(self, backlog: float) -> None:
        self.window = next_window(self.window, backlog)
        self.last_flush = asyncio.get_running_loop().time()


# -- the service ---------------------------------------------------------------------------------


class Chat:
    def __init__(
        self,
        store: ChatStore,
        membership: Membership,
        config: Config,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        staging: StoryStaging | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.counters = Counters() if counters is None else counters
        self.store = store
        self.staging = MemoryStoryStaging(config.limits) if staging is None else staging
        self.membership = membership
        self.limits: LimitsSection = config.limits
        self.clock = clock
        self.monotonic = monotonic
        self.limiter = KeyedLimiter(
            self.limits.messages_per_second_per_member,
            self.limits.message_burst_per_member,
            monotonic,
        )
        self.committer = GroupCommitter(store, self._deliver, clock, counters=self.counters)
        self.followers: dict[tuple[str, str], set[Subscriber]] = {}
        self.outboxes: dict[tuple[str, str], Outbox] = {}
        # The highest seq pushed per followed room (to re-sync after lost events).
        self.pushed: dict[tuple[str, str], int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start committing and sweeping (the store is already open: the app opens it)."""
        self.committer.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.committer.stop()
        for outbox in self.outboxes.values():
            if outbox.handle is not None:
                outbox.handle.cancel()

    def _take(self, space_id: str, member: bytes) -> None:
        if not self.limiter.allow(f"{space_id}/{member.hex()}"):
            raise RateLimited("you are sending too fast; wait a moment")

    # -- messages ------------------------------------------------------------------------------

    async def send(self, space_id: str, member: bytes, msg: SendMessage) -> MessageSent:
        roster = await self.membership.roster(space_id)
        if len(msg.client_id) != CLIENT_ID_LEN:
            raise InvalidMessage(f"a client message id is {CLIENT_ID_LEN} bytes")
        if len(msg.box) > self.limits.max_chat_message_bytes:
            raise TooLarge(
                f"message too large: at most {self.limits.max_chat_message_bytes} bytes encrypted"
            )
        try:
            room = check_post(roster, msg.room_id, member, msg.epoch, msg.box)
        except Stale:
            # A retry of a message that was committed before the epoch moved on.
            prior = await self.store.find_message(space_id, msg.room_id, member, msg.client_id)
            if prior is None:
                raise
            return _sent(msg, Committed(prior, True))
        lifetime = message_lifetime(room, msg.ttl)
        self._take(space_id, member)
        new = NewMessage(
            space_id, msg.room_id, member, msg.client_id, msg.epoch, msg.ttl, lifetime, msg.box
        )
        return _sent(msg, await self.committer.submit(new))

    def _deliver(self, committed: list[tuple[NewMessage, Committed]]) -> None:
        by_room: dict[tuple[str, str], list[ChatMessage]] = {}
        for new, result in committed:
            if not result.duplicate:
                self.counters.messages += 1
                by_room.setdefault((new.space_id, new.room_id), []).append(result.message)
        for key, messages in by_room.items():
            self._push_later(key, messages)

    def _push_later(self, key: tuple[str, str], messages: list[ChatMessage]) -> None:
        if messages and self.followers.get(key):
            self.pushed[key] = max(self.pushed.get(key, 0), messages[-1].seq)
            outbox = self.outboxes.get(key)
            if outbox is None:
                outbox = self.outboxes[key] = Outbox(key[1])
            outbox.add(messages, self._flush, key)

    # -- other instances (spaces.events) -------------------------------------------------------

    async def remote_messages(self, args: list[str | int]) -> None:
        """Another instance committed ``first_seq..last_seq`` in a room: its followers here
        get them from the store (out of order with this instance's own at worst; clients
        fetch any gap they see, and drop what they have by seq)."""
        space_id, room_id, first, last = str(args[0]), str(args[1]), int(args[2]), int(args[3])
        key = (space_id, room_id)
        if not self.followers.get(key):
            return
        found, _ = await self.store.messages(
            space_id, room_id, first - 1, min(MAX_FETCH, last - first + 1), self.clock()
        )
        self._push_later(key, found)

    async def resync(self) -> None:
        """Events may have been missed: push what every followed room has after the last
        seq pushed here."""
        for key, followers in list(self.followers.items()):
            if followers:
                found, _ = await self.store.messages(
                    *key, self.pushed.get(key, 0), MAX_FETCH, self.clock()
                )
                self._push_later(key, found)

    def _flush(self, key: tuple[str, str]) -> None:
        outbox = self.outboxes[key]
        followers = self.followers.get(key)
        if not followers:
            outbox.take()
            return
        event = outbox.take()
        if event is None:
            return
        frame = encoder.encode(event)
        closed, queued = [], 0
        for subscriber in followers:
            if subscriber.push(frame):
                queued += subscriber.queue.qsize()
                self.counters.deliveries += 1
            else:
                closed.append(subscriber)
        for subscriber in closed:
            followers.discard(subscriber)
        outbox.adapt(queued / max(1, len(followers)))

    def rooms_followed(self) -> int:
        """Rooms some session follows live now (for /metrics)."""
        return sum(1 for followers in self.followers.values() if followers)

    async def fetch(self, space_id: str, subscriber: Subscriber, msg: FetchMessages) -> Messages:
        roster = await self.membership.roster(space_id)
        check_read(roster, msg.room_id, subscriber.member)
        if msg.follow:
            # Before reading: anything committed from now on is either in this reply or
            # pushed as an event (clients drop what they already have by seq).
            self.followers.setdefault((space_id, msg.room_id), set()).add(subscriber)
        limit = max(1, min(msg.limit, MAX_FETCH))
        found, last_seq = await self.store.messages(
            space_id, msg.room_id, max(0, msg.after), limit, self.clock()
        )
        return Messages(msg.id, msg.room_id, found, last_seq)

    # -- stories -------------------------------------------------------------------------------

    async def upload_chunk(
        self, space_id: str, member: bytes, msg: UploadStoryChunk
    ) -> StoryChunkStored:
        roster = await self.membership.roster(space_id)
        roster.active(member)
        if not is_valid_id(msg.story_id):
            raise InvalidMessage("a story id is 8 to 64 URL-safe characters, not starting with -")
        size = await self.staging.add_chunk(
            space_id, member, msg.story_id, msg.offset, msg.data, self.monotonic()
        )
        return StoryChunkStored(msg.id, msg.story_id, size)

    async def post_story(self, space_id: str, member: bytes, msg: PostStory) -> StoryPosted:
        roster = await self.membership.roster(space_id)
        check_story(roster, msg.room_id, member, msg.epoch, msg.meta)
        limits = self.limits
        if not 0 < msg.ttl <= MAX_STORY_TTL:
            raise InvalidMessage(f"a story lasts between 1 and {MAX_STORY_TTL} seconds")
        if len(msg.meta) > limits.max_story_meta_bytes:
            raise TooLarge(f"story caption too large: at most {limits.max_story_meta_bytes} bytes")
        if len(msg.thumb) > limits.max_story_thumb_bytes:
            raise TooLarge(f"story thumbnail too large: at most {limits.max_story_thumb_bytes}")
        image = await self.staging.upload(space_id, member, msg.story_id)
        if image is None:
            raise InvalidMessage("upload the story's image before posting it")
        if len(image) != msg.image_size:
            raise InvalidMessage("the story's image upload is incomplete")
        self._take(space_id, member)
        new = NewStory(
            space_id,
            msg.story_id,
            msg.room_id,
            member,
            msg.epoch,
            msg.ttl,
            msg.meta,
            msg.thumb,
            image,
        )
        info, duplicate = await self.store.add_story(new, self.clock())
        await self.staging.discard(space_id, member, msg.story_id, len(image))
        return StoryPosted(msg.id, info.story_id, info.posted_at, info.expires_at, duplicate)

    async def list_stories(self, space_id: str, member: bytes, msg: ListStories) -> Stories:
        roster = await self.membership.roster(space_id)
        room = check_read(roster, msg.room_id, member)
        if room.spec.kind != "channel":
            raise InvalidMessage("stories are posted to channels")
        found = await self.store.stories(space_id, msg.room_id, self.clock())
        return Stories(msg.id, msg.room_id, found)

    async def story_part(self, space_id: str, member: bytes, msg: FetchStoryPart) -> StoryPart:
        roster = await self.membership.roster(space_id)
        roster.active(member)
        info = await self.store.story(space_id, msg.story_id, self.clock())
        if info is None:
            raise NotFound("no such story (it may have expired)")
        total = info.image_size if msg.part == "image" else info.thumb_size
        if not 0 <= msg.offset <= total:
            raise InvalidMessage("offset beyond the end of the story")
        data = await self.store.story_part(
            space_id, msg.story_id, msg.part, msg.offset, STORY_CHUNK_BYTES
        )
        return StoryPart(msg.id, info, msg.part, msg.offset, total, data)

    # -- expiry --------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete what has expired (for good); forget idle uploads and closed followers."""
        deleted = await self.store.delete_expired(self.clock())
        await self.staging.drop_idle(self.monotonic())
        for key, followers in list(self.followers.items()):
            followers.difference_update([s for s in followers if s.closed])
            if not followers:
                del self.followers[key]
        for key, outbox in list(self.outboxes.items()):
            if key not in self.followers and outbox.handle is None:
                del self.outboxes[key]
                self.pushed.pop(key, None)
        return deleted

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.expiry_sweep_seconds)
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("deleted %d expired messages and stories", deleted)
            except Exception:
                log.exception("expiry sweep failed")


def _sent(msg: SendMessage, result: Committed) -> MessageSent:
    m = result.message
    return MessageSent(msg.id, msg.room_id, m.seq, m.sent_at, m.expires_at, result.duplicate)
