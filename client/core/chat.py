"""Chat messages: send, read and follow a room, end-to-end encrypted (DESIGN §5).

Sending: encrypt and sign with the room key of the space's current epoch
(:mod:`client.core.chatcrypto`), send with a random client message id, and on ``stale`` (the epoch
moved on) re-sync and re-encrypt under the new key with the same id.

Reading: every message is decrypted with the key of its epoch, its signature checked against
its sender's member key, and the sender's right to post checked against the roster *at the
chain head the sender signed* (so a channel post stays valid after its author loses the
publisher role, and a server cannot slip in a post by someone who never had it). That head is
signed as (seq, hash) and must be on the reader's own verified chain (:mod:`protocol.forks`):
a server showing the reader another history than the sender's is reported, not obeyed.

Replays: a reader shows each (sender, client message id) once, and refuses a message at a
space-key epoch older than one its sender already posted at (an honest server accepts posts
only at the current epoch, so a sender's epochs never go down along the room's sequence).
Client message ids are 16 random bytes: nothing in them (no clock) links a member's posts
across rooms or memberships.

Nothing is cached on this device: the plaintext of a message exists only in memory while a
command prints it, so when a message expires on the server there is no local copy to delete.

Following: :func:`follow` subscribes to a room, prints the backlog after the last sequence it
has seen, then each pushed message; on a lost connection (a restarted server) it reconnects
with back-off and resumes from its last sequence, fetching any gap, dropping duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import msgspec

from client.core import chatcrypto, crypto
from client.core.backoff import Backoff
from client.core.dates import iso
from client.core.errors import ClientError, ServerError, Unreachable, VerificationError
from client.core.forks import HeadCheck
from client.core.rooms import (
    RoomKeyConflict,
    RoomKeyRefused,
    RoomKeyUnavailable,
    RoomView,
    resolve_room,
    room_key,
    share_room_keys,
)
from client.core.space import ProfileInfo, SpaceSession
from protocol import roomkeys
from protocol.chat_wire import (
    CLIENT_ID_LEN,
    ChatMessage,
    FetchMessages,
    Messages,
    MessagesAdded,
    MessageSent,
)
from protocol.chat_wire import SendMessage as SendRequest
from protocol.errors import ErrorCode
from protocol.forks import FORK_WARNING
from protocol.records import Join, RosterAt, fingerprint
from protocol.wire import RecordAdded, SessionClosed

log = logging.getLogger(__name__)
PAGE = 500
RECONNECT_FIRST = 0.2
RECONNECT_MAX = 5.0
END_OF_SESSION = ("removed", "banned", "left")
CLOCK_SKEW = 300  # seconds we allow between a sender's clock and the server's
# A message the server says it received this long after its signed creation time is a replay
# (a device whose clock is off by more than the server's record skew, 600 s, cannot even
# append records; sending takes seconds).
REPLAY_DELAY = 900
REPLAY_MEMORY = 100_000  # (sender, client id) pairs a reader remembers per room


@dataclass(frozen=True)
class ReadMessage:
    seq: int
    sent_at: float
    expires_at: float | None
    sender: bytes
    sender_name: str
    fingerprint: str
    text: str

    def as_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "sent_at": iso(self.sent_at),
            "sender": self.sender_name,
            "fingerprint": self.fingerprint,
            "text": self.text,
            "expires_at": None if self.expires_at is None else iso(self.expires_at),
        }


@dataclass
class ReadStats:
    unreadable: int = 0  # no key on this device (sent before we joined)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (seq, why)

    @property
    def forked(self) -> bool:
        """True when something was refused because the server may show us a forked chain."""
        return any(FORK_WARNING in why for _, why in self.rejected)


class ReplayGuard:
    """What a reader already accepted in one room: each (sender, client id) with its seq, and
    each sender's newest space-key epoch. Kept across reconnections by :class:`Follower`;
    bounded (the oldest ids are forgotten first; epochs are one entry per sender)."""

    def __init__(self, limit: int = REPLAY_MEMORY) -> None:
        self.limit = limit
        self.seen: OrderedDict[tuple[bytes, bytes], int] = OrderedDict()
        self.epochs: dict[bytes, int] = {}

    def problem(self, message: ChatMessage) -> str | None:
        first = self.seen.get((message.sender, message.client_id))
        if first is not None and first != message.seq:
            return f"it repeats message #{first} (a replay)"
        newest = self.epochs.get(message.sender, -1)
        if message.epoch < newest:
            return (
                f"it is encrypted for key epoch {message.epoch}, older than epoch {newest} "
                "its sender already posted at (a replay, or a post with a retired key)"
            )
        return None

    def accept(self, message: ChatMessage) -> None:
        self.seen[(message.sender, message.client_id)] = message.seq
        if len(self.seen) > self.limit:
            self.seen.popitem(last=False)
        self.epochs[message.sender] = max(message.epoch, self.epochs.get(message.sender, -1))


# -- sending -------------------------------------------------------------------------------------


def new_client_id() -> bytes:
    """16 random bytes. No clock in them: a device clock's offset is stable, so time-based
    ids would link one person's memberships (and rooms) for anyone who sees the ids."""
    return secrets.token_bytes(CLIENT_ID_LEN)


async def send_message(
    session: SpaceSession,
    room: RoomView,
    text: str,
    ttl: int = 0,
    client_id: bytes | None = None,
) -> MessageSent:
    """Encrypt, sign and send; returns the server's acknowledgement (after its commit).

    ``ttl`` 0 means the room's default lifetime. A retry with the same ``client_id`` is
    answered with the first message's sequence instead of a second message."""
    client_id = client_id or new_client_id()
    for attempt in range(3):
        roster = session.verified
        generation = roster.room_generation(room.room_id)
        key = await room_key(session, room.room_id, roster.epoch, generation)
        header = chatcrypto.MessageHeader(
            session.space_id, room.room_id, roster.epoch, session.member_key, client_id, ttl
        )
        box = roomkeys.frame(
            generation,
            chatcrypto.seal_message(
                key,
                session.m.signing_seed,
                header,
                text,
                int(time.time()),
                roster.head_seq,
                roster.head_hash,
            ),
        )
        request = SendRequest(
            session.conn.next_id(), room.room_id, client_id, header.epoch, ttl, box
        )
        try:
            return await session.conn.request(request, MessageSent)
        except ServerError as exc:
            if exc.code != ErrorCode.STALE or attempt == 2:
                raise
            await session.sync()  # the epoch moved on: fetch the new keys, encrypt again
    raise AssertionError("unreachable")


# -- reading -------------------------------------------------------------------------------------


class RosterHistory:
    """Answers "could this member post in this room at chain head H?" from the session's
    verified roster, which keeps the history of posting rights and epochs (not the chain)."""

    def __init__(self, session: SpaceSession) -> None:
        self.session = session

    def at(self, head: int) -> RosterAt | None:
        return self.session.verified.at(head)


def display_name(session: SpaceSession, key: bytes) -> str:
    """A member's display name; for a former member, their last profile, marked."""
    roster = session.verified
    if key in roster.members:
        return session.profile(key).display_name
    profile = roster.former_profiles.get(key)
    if profile is not None:
        try:
            box_key = session.space_key(profile.epoch)
            plain = crypto.secretbox_open(box_key, profile.box, "a profile")
            return f"{msgspec.msgpack.decode(plain, type=ProfileInfo).display_name} (left)"
        except (VerificationError, msgspec.DecodeError):
            pass
    return "(former member)"


def visible_until(server_end: float | None, lifetime: int, created_at: int) -> float | None:
    """When a message stops being shown: the server's expiry, but never later than the
    signed creation time plus the lifetime bound into the ciphertext (and some clock skew)."""
    if not lifetime:
        return server_end
    signed_end = float(created_at + lifetime + CLOCK_SKEW)
    return signed_end if server_end is None else min(server_end, signed_end)


class RoomReader:
    """Decrypts and verifies the messages of one room for one session."""

    def __init__(
        self, session: SpaceSession, room: RoomView, guard: ReplayGuard | None = None
    ) -> None:
        self.session = session
        self.room = room
        self.stats = ReadStats()
        self.guard = ReplayGuard() if guard is None else guard
        self.heads = HeadCheck(session, self.refresh)
        self._history = RosterHistory(session)
        self._names: dict[bytes, str] = {}

    async def refresh(self) -> None:
        """Re-sync the roster (new members, a new epoch) before reading further."""
        await self.session.sync()
        self._names.clear()

    async def open(self, message: ChatMessage, now: float | None = None) -> ReadMessage | None:
        """The message in clear, or None (counted in :attr:`stats`) if it is expired, not
        readable on this device or fails verification."""
        now = time.time() if now is None else now
        if message.expires_at is not None and message.expires_at <= now:
            return None
        session = self.session
        if message.sender not in session.verified.box_keys:
            await self.refresh()  # someone joined since we synced
        # An epoch beyond ours: the epoch moved since we synced, or the server hides it from us.
        problem = await self.heads.epoch_problem(message.epoch)
        if problem is not None:
            self.stats.rejected.append((message.seq, problem))
            return None
        try:
            generation, box = roomkeys.unframe(message.box)
        except roomkeys.KeyBindingError as exc:
            self.stats.rejected.append((message.seq, exc.message))
            return None
        try:
            key = await room_key(session, self.room.room_id, message.epoch, generation)
        except RoomKeyRefused as exc:
            self.stats.rejected.append((message.seq, str(exc)))
            return None
        except RoomKeyUnavailable:
            self.stats.unreadable += 1
            return None
        except RoomKeyConflict as exc:
            self.stats.rejected.append((message.seq, str(exc)))
            return None
        header = chatcrypto.MessageHeader(
            session.space_id,
            self.room.room_id,
            message.epoch,
            message.sender,
            message.client_id,
            message.ttl,
        )
        try:
            content = chatcrypto.open_message(key, header, box)
        except VerificationError as exc:
            self.stats.rejected.append((message.seq, str(exc)))
            return None
        if message.sent_at - content.created_at > REPLAY_DELAY:
            # A message is signed just before it is sent. One the server says it received
            # long after its signed time is an old message served again under a new seq
            # (the replay guard only knows what this reader saw in this run).
            self.stats.rejected.append(
                (message.seq, "it was signed long before the server says it came (a replay)")
            )
            return None
        problem = await self.heads.head_problem(content.head, content.head_hash)
        if problem is not None:
            self.stats.rejected.append((message.seq, problem))
            return None
        roster = self._history.at(content.head)
        if roster is None or roster.epoch != message.epoch:
            # Signed at a head whose epoch is not the one it is encrypted for: a post with a
            # key its sender's own chain had already retired (or never made).
            self.stats.rejected.append((message.seq, "it claims a roster state that never was"))
            return None
        if roster.room_generation(self.room.room_id) != generation:
            # Sealed under another generation than the sender's roster head implies (e.g. an
            # older one, so members who joined since could not read it).
            self.stats.rejected.append((message.seq, "its key generation does not match"))
            return None
        if not roster.may_post(self.room.room_id, message.sender):
            self.stats.rejected.append((message.seq, "its sender was not allowed to post here"))
            return None
        problem = self.guard.problem(message)
        if problem is not None:
            self.stats.rejected.append((message.seq, problem))
            return None
        self.guard.accept(message)
        # The lifetime is bound into the ciphertext and the creation time is signed: a
        # server that keeps a message past its end still cannot make us show it.
        expires_at = visible_until(
            message.expires_at, message.ttl or self.room.spec.ttl, content.created_at
        )
        if expires_at is not None and expires_at <= now:
            return None
        if message.sender not in self._names:
            self._names[message.sender] = display_name(session, message.sender)
        return ReadMessage(
            message.seq,
            message.sent_at,
            expires_at,
            message.sender,
            self._names[message.sender],
            fingerprint(message.sender),
            content.text,
        )


async def fetch_after(
    session: SpaceSession, room_id: str, after: int, follow: bool = False
) -> list[ChatMessage]:
    """Every unexpired message with seq > after, in order (page by page). Only strictly
    increasing seqs are kept: the replay guard lets a message's own seq through again (a
    re-fetch), so a server repeating a message under its seq must not show it twice."""
    found: list[ChatMessage] = []
    while True:
        reply = await session.conn.request(
            FetchMessages(session.conn.next_id(), room_id, after, PAGE, follow), Messages
        )
        follow = False  # once is enough
        start = after
        for message in reply.messages:
            if message.seq > after:
                found.append(message)
                after = message.seq
        if len(reply.messages) < PAGE or after == start:  # the end, or a server going round
            return found


async def read_messages(
    session: SpaceSession, room: RoomView, since: int = 0, last: int | None = None
) -> tuple[list[ReadMessage], ReadStats]:
    """Messages after ``since`` in clear (the last ``last`` of them if given)."""
    reader = RoomReader(session, room)
    shown = []
    for message in await fetch_after(session, room.room_id, since):
        opened = await reader.open(message)
        if opened is not None:
            shown.append(opened)
    if last is not None:
        shown = shown[-last:] if last > 0 else []
    return shown, reader.stats


# -- following -----------------------------------------------------------------------------------


SessionOpener = Callable[[], AbstractAsyncContextManager[SpaceSession]]


class Follower:
    """Follows one room across reconnections. :attr:`last` is the last sequence handled."""

    def __init__(
        self,
        open_session: SessionOpener,
        room_query: str,
        after: int,
        on_message: Callable[[ReadMessage], None],
        on_stats: Callable[[ReadStats], None] | None = None,
        on_reconnect: Callable[[str], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.open_session = open_session
        self.backoff = backoff or Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        self.room_query = room_query
        self.room_id: str | None = None
        self.last = after
        self.on_message = on_message
        self.on_stats = on_stats
        self.on_reconnect = on_reconnect
        self.guard = ReplayGuard()  # replays are caught across reconnections too

    async def run(self) -> None:
        """Print the backlog after :attr:`last`, then new messages as they come, forever.

        Survives the server going away: reconnects (jittered back-off up to 5 s,
        :mod:`client.core.backoff`) and resumes after
        the last sequence handled, so nothing is skipped and nothing is shown twice. Returns
        only by cancellation; raises when the member is removed or the room is unknown."""
        while True:
            try:
                async with self.open_session() as session:
                    self.backoff.reset()
                    reason = await self._session(session)
                if reason in END_OF_SESSION:
                    raise ServerError(reason, f"the server ended the session: {reason}")
            except Unreachable:
                pass
            except ServerError as exc:
                if exc.code not in ("shutdown", "storage"):
                    raise
            delay = self.backoff.next_delay()
            if self.on_reconnect is not None:
                self.on_reconnect(f"connection lost; reconnecting in {delay:.1f}s")
            await self.backoff.wait(delay)

    async def _session(self, session: SpaceSession) -> str:
        """Catch up, then handle pushed events until the session ends; returns why."""
        room = resolve_room(session, self.room_id or self.room_query, ("chat", "channel"))
        self.room_id = room.room_id
        reader = RoomReader(session, room, self.guard)
        await self._deliver(reader, await fetch_after(session, room.room_id, self.last, True))
        while True:
            event = await session.conn.events.get()
            if isinstance(event, MessagesAdded) and event.room_id == room.room_id:
                fresh = [m for m in event.messages if m.seq > self.last]
                if fresh and fresh[0].seq > self.last + 1:
                    # Something in between was missed (or expired): fetch from our last.
                    fresh = await fetch_after(session, room.room_id, self.last)
                await self._deliver(reader, fresh)
            elif isinstance(event, RecordAdded):
                with contextlib.suppress(ClientError):
                    await reader.refresh()
                    if isinstance(event.record.body, Join):
                        await share_room_keys(session)  # seal room keys to the newcomer
            elif isinstance(event, SessionClosed):
                return event.reason

    async def _deliver(self, reader: RoomReader, messages: list[ChatMessage]) -> None:
        for message in messages:
            if message.seq <= self.last:
                continue
            opened = await reader.open(message)
            self.last = message.seq
            if opened is not None:
                self.on_message(opened)
        stats = reader.stats
        if self.on_stats is not None and (stats.unreadable or stats.rejected):
            self.on_stats(stats)
            reader.stats = ReadStats()
