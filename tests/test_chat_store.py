"""Chat storage on both engines — a real SQLite file (spaces/storage/sqlite/chat.py) and a
real PostgreSQL (spaces/storage/postgres/chat.py) — and group commit (spaces/chat.py):
gap-free sequences, idempotent client ids, batching, and (SQLite) deletion that leaves no
bytes behind in the database or its WAL."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from client.core.chat import new_client_id
from spaces.chat import GroupCommitter
from spaces.storage.interfaces import (
    ChatStore,
    Committed,
    NewMessage,
    NewStory,
    Store,
    StoredRecord,
)
from spaces.storage.sqlite.chat import SqliteChatStore
from spaces.storage.sqlite.store import SqliteStore, sqlite_stores

SPACE = "s" * 24
SENDER = b"\xaa" * 32
OTHER = b"\xbb" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, ChatStore]]:
    if request.param == "sqlite":
        both = sqlite_stores(tmp_path / "salon.db")
    else:
        from spaces.storage.postgres.store import postgres_stores

        both = postgres_stores(request.getfixturevalue("postgres").create_database())
    await both.open()
    await both.spaces.append(SPACE, [StoredRecord(0, bytes(32), b"genesis")], create=True)
    yield both.spaces, both.chat
    await both.close()


@pytest.fixture
async def sqlite_only(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteChatStore]]:
    main = SqliteStore(tmp_path / "salon.db")
    await main.open()
    await main.append(SPACE, [StoredRecord(0, bytes(32), b"genesis")], create=True)
    chat = SqliteChatStore(tmp_path / "salon.db")
    await chat.open()
    yield main, chat
    await chat.close()
    await main.close()


def new(room: str = "room-0001", client_id: bytes | None = None, **kw: object) -> NewMessage:
    fields = {
        "space_id": SPACE,
        "room_id": room,
        "sender": SENDER,
        "client_id": client_id or new_client_id(),
        "epoch": 0,
        "ttl": 0,
        "lifetime": 0,
        "box": secrets.token_bytes(100),
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def test_sequences_are_per_room_and_gap_free(stores: tuple[Store, ChatStore]):
    _, chat = stores
    batch = [new("room-a"), new("room-b"), new("room-a"), new("room-a"), new("room-b")]
    results = await chat.append_messages(batch, 1000.0)
    assert [r.message.seq for r in results] == [1, 1, 2, 3, 2]
    more = await chat.append_messages([new("room-a")], 1001.0)
    assert more[0].message.seq == 4
    found, last = await chat.messages(SPACE, "room-a", 0, 100, 1002.0)
    assert [m.seq for m in found] == [1, 2, 3, 4] and last == 4
    found, _ = await chat.messages(SPACE, "room-a", 2, 100, 1002.0)
    assert [m.seq for m in found] == [3, 4]
    found, _ = await chat.messages(SPACE, "room-a", 0, 2, 1002.0)
    assert [m.seq for m in found] == [1, 2]


async def test_client_id_retries_return_the_first_message(
    stores: tuple[Store, ChatStore],
):
    _, chat = stores
    cid = b"1" * 16
    first = await chat.append_messages([new(client_id=cid, box=b"first")], 1000.0)
    again = await chat.append_messages(
        [new(client_id=cid, box=b"retry"), new(), new(client_id=cid, box=b"third")], 1001.0
    )
    assert first[0].duplicate is False and first[0].message.seq == 1
    assert again[0] == Committed(first[0].message, True)
    assert again[1].message.seq == 2  # no gap where the duplicate was
    assert again[2].duplicate and again[2].message.seq == 1
    # Within one batch too; and the same id from another sender is another message.
    cid2 = b"2" * 16
    batch = await chat.append_messages(
        [new(client_id=cid2), new(client_id=cid2), new(client_id=cid2, sender=OTHER)], 1002.0
    )
    assert [(r.message.seq, r.duplicate) for r in batch] == [(3, False), (3, True), (4, False)]


async def test_sequences_survive_reopen_and_expiry(tmp_path: Path):
    """The last seq is stored apart from the messages: when the newest messages expire and
    the server restarts, the next message still gets a fresh seq."""
    main = SqliteStore(tmp_path / "salon.db")
    await main.open()
    await main.append(SPACE, [StoredRecord(0, bytes(32), b"genesis")], create=True)
    chat = SqliteChatStore(tmp_path / "salon.db")
    await chat.open()
    await chat.append_messages([new(), new(lifetime=5), new(lifetime=5)], 1000.0)
    assert await chat.delete_expired(1010.0) == 2
    await chat.close()
    chat = SqliteChatStore(tmp_path / "salon.db")
    await chat.open()
    result = await chat.append_messages([new()], 1020.0)
    assert result[0].message.seq == 4
    found, last = await chat.messages(SPACE, "room-0001", 0, 10, 1020.0)
    assert [m.seq for m in found] == [1, 4] and last == 4
    await chat.close()
    await main.close()


async def test_expired_messages_are_hidden_before_the_sweep(
    stores: tuple[Store, ChatStore],
):
    _, chat = stores
    results = await chat.append_messages([new(lifetime=10, ttl=10), new()], 1000.0)
    assert results[0].message.expires_at == 1010.0 and results[1].message.expires_at is None
    found, _ = await chat.messages(SPACE, "room-0001", 0, 10, 1009.0)
    assert [m.seq for m in found] == [1, 2]
    found, _ = await chat.messages(SPACE, "room-0001", 0, 10, 1010.0)
    assert [m.seq for m in found] == [2]


def _files(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


async def test_deleted_bytes_leave_the_database_and_the_wal(
    sqlite_only: tuple[SqliteStore, SqliteChatStore], tmp_path: Path
):
    """secure_delete zeroes the rows and the truncating checkpoint empties the WAL: the
    ciphertext of expired messages and stories is in none of the files afterwards."""
    _, chat = sqlite_only
    doomed = [secrets.token_bytes(300) for _ in range(20)]
    kept = secrets.token_bytes(300)
    await chat.append_messages([new(box=b, lifetime=5) for b in doomed], 1000.0)
    await chat.append_messages([new(box=kept)], 1000.0)
    image = os.urandom(200_000)  # big enough for overflow pages
    await chat.add_story(
        NewStory(SPACE, "story-doomed", "chan", SENDER, 0, 5, b"M" * 50, b"T" * 50, image), 1000.0
    )
    db = tmp_path / "salon.db"
    blob = b"".join(p.read_bytes() for p in _files(db))
    assert all(b in blob for b in doomed) and image[1000:1100] in blob
    assert await chat.delete_expired(1006.0) == 21
    for path in _files(db):
        data = path.read_bytes()
        for b in doomed:
            assert b[:64] not in data, f"expired ciphertext still in {path.name}"
        assert image[1000:1100] not in data and image[-100:] not in data, path.name
    assert os.path.getsize(db.with_name("salon.db-wal")) == 0
    found, _ = await chat.messages(SPACE, "room-0001", 0, 100, 1006.0)
    assert [m.box for m in found] == [kept]


async def test_story_parts_and_duplicates(stores: tuple[Store, ChatStore]):
    _, chat = stores
    image = os.urandom(300_000)
    story = NewStory(SPACE, "story-0001", "chan", SENDER, 0, 100, b"meta", b"thumb", image)
    info, duplicate = await chat.add_story(story, 1000.0)
    assert not duplicate and (info.image_size, info.thumb_size) == (300_000, 5)
    again, duplicate = await chat.add_story(story, 1001.0)
    assert duplicate and again == info
    parts = [
        await chat.story_part(SPACE, "story-0001", "image", o, 128 * 1024)
        for o in (0, 131072, 262144)
    ]
    assert b"".join(parts) == image
    assert await chat.story_part(SPACE, "story-0001", "thumb", 0, 10) == b"thumb"
    later = NewStory(SPACE, "story-0002", "chan", SENDER, 0, 100, b"m2", b"t2", b"i2")
    await chat.add_story(later, 1002.0)
    listed = await chat.stories(SPACE, "chan", 1050.0)
    assert [s.story_id for s in listed] == ["story-0002", "story-0001"]  # newest first
    assert await chat.stories(SPACE, "chan", 1100.0) == [info_of(listed, "story-0002")]
    from protocol.errors import Conflict

    with pytest.raises(Conflict):
        await chat.add_story(story._replace(sender=OTHER), 1003.0)


def info_of(listed: Sequence[object], story_id: str) -> object:
    return next(s for s in listed if s.story_id == story_id)  # type: ignore[attr-defined]


async def test_group_commit_batches_concurrent_sends(
    stores: tuple[Store, ChatStore],
):
    """200 concurrent sends share a handful of transactions; each is answered after the
    commit holding it, and events go out once per new message in sequence order."""
    _, chat = stores
    batches: list[int] = []
    delivered: list[int] = []

    class Counting:
        async def append_messages(self, batch: Sequence[NewMessage], now: float):
            batches.append(len(batch))
            return await chat.append_messages(batch, now)

    committer = GroupCommitter(
        Counting(),  # type: ignore[arg-type]
        lambda done: delivered.extend(r.message.seq for _, r in done if not r.duplicate),
    )
    committer.start()
    sends = [new() for _ in range(200)]
    results = await asyncio.gather(*(committer.submit(m) for m in sends))
    retry = await committer.submit(sends[17])
    await committer.stop()
    assert sorted(r.message.seq for r in results) == list(range(1, 201))
    assert retry.duplicate and retry.message == results[17].message
    assert sum(batches) == 201 and len(batches) < 20
    assert delivered == list(range(1, 201))


async def test_fan_out_sends_one_frame_per_room_and_commit():
    """Followers of a room get the batch's new messages for that room in one frame, in
    order; duplicates are not delivered again; a closed follower is forgotten."""
    from protocol.chat_wire import ChatMessage, MessagesAdded
    from protocol.wire import server_decoder
    from spaces.chat import Chat
    from spaces.config import Config
    from spaces.hub import Subscriber

    chat = Chat(None, None, Config())  # type: ignore[arg-type]  # delivery needs neither
    a1, a2, gone = (
        Subscriber(SPACE, b"1" * 32),
        Subscriber(SPACE, b"2" * 32),
        Subscriber(SPACE, b"3" * 32),
    )
    b1 = Subscriber(SPACE, b"4" * 32)
    chat.followers[(SPACE, "room-a")] = {a1, a2, gone}
    chat.followers[(SPACE, "room-b")] = {b1}
    gone.close()

    def committed(room: str, seq: int, duplicate: bool = False) -> tuple[NewMessage, Committed]:
        message = ChatMessage(seq, SENDER, bytes(16), 0, 0, 1.0, None, b"box")
        return new(room), Committed(message, duplicate)

    chat._deliver(
        [
            committed("room-a", 1),
            committed("room-b", 1),
            committed("room-a", 1, True),
            committed("room-a", 2),
        ]
    )
    await asyncio.sleep(0.01)  # the outbox flushes on the next turn of the loop
    for subscriber, room, seqs in (
        (a1, "room-a", [1, 2]),
        (a2, "room-a", [1, 2]),
        (b1, "room-b", [1]),
    ):
        assert subscriber.queue.qsize() == 1
        event = server_decoder.decode(subscriber.queue.get_nowait())
        assert isinstance(event, MessagesAdded) and event.room_id == room
        assert [m.seq for m in event.messages] == seqs
    assert chat.followers[(SPACE, "room-a")] == {a1, a2}


async def test_checkpointer_keeps_the_wal_bounded(tmp_path: Path):
    """Our writer never checkpoints (no stalls inside a commit); the Checkpointer does, on
    its own connection, so the WAL is reused instead of growing without end."""
    from spaces.storage.sqlite.chat import Checkpointer

    main = SqliteStore(tmp_path / "salon.db")
    await main.open()
    await main.append(SPACE, [StoredRecord(0, bytes(32), b"genesis")], create=True)
    chat = SqliteChatStore(tmp_path / "salon.db")
    await chat.open()
    wal = tmp_path / "salon.db-wal"
    checkpointer = Checkpointer(tmp_path / "salon.db", every=0.05, wal_bytes=1_000_000)
    await checkpointer.start()
    sizes = []
    try:
        # Time-ordered client ids here, so each round writes the same number of index pages
        # and the WAL's size shows the checkpointer alone. (Real ids are random: a commit of
        # n messages then dirties up to n pages of the client-id index, bounded by the batch.)
        ids = (n.to_bytes(16, "big") for n in itertools.count())
        for _round in range(4):
            for _ in range(10):
                batch = [new(client_id=next(ids), box=os.urandom(300)) for _ in range(60)]
                await chat.append_messages(batch, 1.0)
            sizes.append(wal.stat().st_size)
            await asyncio.sleep(0.3)
        # Without checkpoints the WAL would hold all four rounds; it holds about one.
        assert sizes[-1] < 2 * sizes[0], sizes
    finally:
        await checkpointer.stop()
        await chat.close()
        await main.close()


def test_fan_out_window_adapts_to_lagging_writers():
    from spaces.chat import MAX_WINDOW, MIN_WINDOW, next_window

    assert next_window(0.0, 1.0) == 0.0  # followers keep up: no waiting at all
    window = 0.0
    for _ in range(20):  # writers lag: the window grows, up to its bound
        window = next_window(window, 5.0)
    assert window == MAX_WINDOW
    steps = 0
    while window:  # they catch up: back to sending at once
        window = next_window(window, 1.0)
        steps += 1
    assert steps <= 6 and next_window(MIN_WINDOW, 1.0) == 0.0


async def test_busy_room_coalesces_messages_into_fewer_frames():
    """While the followers still have frames queued (their writers lag), messages committed
    meanwhile wait for the window and go out together."""
    from protocol.chat_wire import ChatMessage, MessagesAdded
    from protocol.wire import server_decoder
    from spaces.chat import Chat
    from spaces.config import Config
    from spaces.hub import Subscriber

    chat = Chat(None, None, Config())  # type: ignore[arg-type]
    slow = Subscriber(SPACE, b"1" * 32)  # nobody drains its queue: a lagging writer
    chat.followers[(SPACE, "room-a")] = {slow}
    for seq in range(1, 41):
        message = ChatMessage(seq, SENDER, bytes(16), 0, 0, 1.0, None, b"box")
        chat._deliver([(new("room-a"), Committed(message, False))])
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.1)
    frames = []
    while not slow.queue.empty():
        event = server_decoder.decode(slow.queue.get_nowait())
        assert isinstance(event, MessagesAdded)
        frames.append([m.seq for m in event.messages])
    assert [seq for frame in frames for seq in frame] == list(range(1, 41))  # all, in order
    assert len(frames) < 20 and frames[0] == [1]  # the first at once, later ones grouped
