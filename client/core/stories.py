"""Stories: an image and a caption posted to a channel, end-to-end encrypted, expiring.

Before anything is encrypted the image is decoded with OpenCV, scaled so its longest side is
at most 1920 px and re-encoded as JPEG (:mod:`client.core.images`): the output holds only pixels,
so EXIF (GPS position, camera serial, time), XMP, ICC profiles and comments are gone. A
320 px thumbnail is made the same way. Image, thumbnail and a signed caption block are
sealed with the room's story key (:mod:`client.core.chatcrypto`); the image goes up in chunks
below the WebSocket frame limit and is committed by one ``PostStory``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from client.core import chatcrypto
from client.core.chat import RosterHistory, display_name, visible_until
from client.core.dates import iso
from client.core.errors import ServerError, UsageError, VerificationError
from client.core.forks import HeadCheck
from client.core.images import bounded_jpeg, decode_image
from client.core.rooms import RoomView, room_key
from client.core.space import SpaceSession
from protocol import roomkeys
from protocol.chat_wire import (
    STORY_CHUNK_BYTES,
    FetchStoryPart,
    ListStories,
    PostStory,
    Stories,
    StoryChunkStored,
    StoryInfo,
    StoryPart,
    StoryPartName,
    StoryPosted,
    UploadStoryChunk,
)
from protocol.errors import ErrorCode
from protocol.ids import new_id
from protocol.records import fingerprint

MAX_SIDE: Final = 1920
THUMB_SIDE: Final = 320
JPEG_QUALITY: Final = 85
THUMB_QUALITY: Final = 70
MAX_INPUT_BYTES: Final = 50 * 1024 * 1024
DEFAULT_STORY_TTL: Final = 24 * 3600


@dataclass(frozen=True)
class PreparedImage:
    jpeg: bytes
    thumb: bytes
    width: int
    height: int


@dataclass(frozen=True)
class StoryView:
    story_id: str
    room_id: str
    author: str
    fingerprint: str
    caption: str
    posted_at: float
    expires_at: float
    width: int
    height: int
    image_size: int

    def as_json(self) -> dict[str, object]:
        return {
            "story_id": self.story_id,
            "author": self.author,
            "caption": self.caption,
            "posted_at": iso(self.posted_at),
            "expires_at": iso(self.expires_at),
        }


def prepare_image(data: bytes) -> PreparedImage:
    """Decode, bound to 1920 px, re-encode without metadata; and a 320 px thumbnail."""
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"the image file is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    pixels = decode_image(data, "story image")
    image = bounded_jpeg(pixels, MAX_SIDE, JPEG_QUALITY)
    thumb = bounded_jpeg(pixels, THUMB_SIDE, THUMB_QUALITY)
    return PreparedImage(image.jpeg, thumb.jpeg, image.width, image.height)


def _header(session: SpaceSession, info: StoryInfo) -> chatcrypto.StoryHeader:
    return chatcrypto.StoryHeader(
        session.space_id, info.room_id, info.epoch, info.sender, info.story_id, info.ttl
    )


async def post_story(
    session: SpaceSession,
    room: RoomView,
    image_path: Path,
    caption: str = "",
    ttl: int = DEFAULT_STORY_TTL,
) -> tuple[StoryPosted, PreparedImage]:
    try:
        data = image_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {image_path}: {exc.strerror or exc}") from None
    prepared = prepare_image(data)
    story_id = new_id()  # 96 bits, 16 characters
    for attempt in range(3):
        roster = session.verified
        generation = roster.room_generation(room.room_id)
        key = await room_key(session, room.room_id, roster.epoch, generation)
        header = chatcrypto.StoryHeader(
            session.space_id, room.room_id, roster.epoch, session.member_key, story_id, ttl
        )
        sealed = chatcrypto.seal_story(
            key,
            session.m.signing_seed,
            header,
            caption,
            prepared.jpeg,
            prepared.thumb,
            (prepared.width, prepared.height),
            int(time.time()),
            roster.head_seq,
            roster.head_hash,
        )
        try:
            await _upload(session, story_id, sealed.image)
            posted = await session.conn.request(
                PostStory(
                    session.conn.next_id(),
                    room.room_id,
                    story_id,
                    header.epoch,
                    ttl,
                    roomkeys.frame(generation, sealed.meta),
                    sealed.thumb,
                    len(sealed.image),
                ),
                StoryPosted,
            )
            return posted, prepared
        except ServerError as exc:
            if exc.code != ErrorCode.STALE or attempt == 2:
                raise
            await session.sync()
    raise AssertionError("unreachable")


async def _upload(session: SpaceSession, story_id: str, blob: bytes) -> None:
    for offset in range(0, max(len(blob), 1), STORY_CHUNK_BYTES):
        chunk = blob[offset : offset + STORY_CHUNK_BYTES]
        await session.conn.request(
            UploadStoryChunk(session.conn.next_id(), story_id, offset, chunk), StoryChunkStored
        )


class StoryReader:
    def __init__(self, session: SpaceSession) -> None:
        self.session = session
        self.heads = HeadCheck(session, self.refresh)
        self._history = RosterHistory(session)

    async def refresh(self) -> None:
        await self.session.sync()
        self._history = RosterHistory(self.session)

    async def view(self, info: StoryInfo) -> tuple[StoryView, chatcrypto.StoryMeta]:
        """Decrypt and verify a story's caption block (VerificationError if it fails, with
        :data:`protocol.forks.FORK_WARNING` in its text when the server may be forking)."""
        session = self.session
        problem = await self.heads.epoch_problem(info.epoch)
        if problem is not None:
            raise VerificationError(problem)
        try:
            generation, box = roomkeys.unframe(info.meta)
        except roomkeys.KeyBindingError as exc:
            raise VerificationError(exc.message) from None
        key = await room_key(session, info.room_id, info.epoch, generation)
        meta = chatcrypto.open_story_meta(key, _header(session, info), box)
        problem = await self.heads.head_problem(meta.head, meta.head_hash)
        if problem is not None:
            raise VerificationError(problem)
        roster = self._history.at(meta.head)
        if roster is None or roster.epoch != info.epoch:
            raise VerificationError("a story claims a roster state that never was")
        if roster.room_generation(info.room_id) != generation:
            raise VerificationError("a story's key generation does not match its roster state")
        if not roster.may_post(info.room_id, info.sender):
            raise VerificationError("a story's author was not allowed to post in this channel")
        view = StoryView(
            info.story_id,
            info.room_id,
            display_name(session, info.sender),
            fingerprint(info.sender),
            meta.caption,
            info.posted_at,
            visible_until(info.expires_at, info.ttl, meta.created_at) or info.expires_at,
            meta.width,
            meta.height,
            info.image_size,
        )
        return view, meta


async def list_stories(
    session: SpaceSession, room: RoomView
) -> tuple[list[StoryView], list[tuple[str, str]]]:
    """Live stories of a channel, newest first, and (story id, why) for those skipped."""
    reply = await session.conn.request(ListStories(session.conn.next_id(), room.room_id), Stories)
    reader = StoryReader(session)
    views, skipped = [], []
    now = time.time()
    listed: set[str] = set()
    for info in reply.stories:
        if info.story_id in listed:  # the id is bound into the ciphertext: a repeat is a replay
            skipped.append((info.story_id, "it is listed twice (a replay)"))
            continue
        listed.add(info.story_id)
        try:
            view = (await reader.view(info))[0]
        except VerificationError as exc:
            skipped.append((info.story_id, str(exc)))
            continue
        if view.expires_at > now:
            views.append(view)
    views.sort(key=lambda v: v.posted_at, reverse=True)
    return views, skipped


async def get_story(
    session: SpaceSession, story_id: str, thumbnail: bool = False
) -> tuple[StoryView, bytes]:
    """Fetch, decrypt and verify a story's image (or thumbnail)."""
    part: StoryPartName = "thumb" if thumbnail else "image"
    chunks: list[bytes] = []
    offset = 0
    info: StoryInfo | None = None
    while True:
        try:
            reply = await session.conn.request(
                FetchStoryPart(session.conn.next_id(), story_id, part, offset), StoryPart
            )
        except ServerError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise UsageError(
                    f"no story {story_id!r} in this space (it may have expired)"
                ) from None
            raise
        if info is not None and reply.story != info:
            raise VerificationError("the story changed while it was being fetched")
        info = reply.story
        chunks.append(reply.data)
        offset += len(reply.data)
        if offset >= reply.total or not reply.data:
            break
    assert info is not None
    view, meta = await StoryReader(session).view(info)
    if view.expires_at <= time.time():
        raise UsageError(f"no story {story_id!r} in this space (it may have expired)")
    plain = chatcrypto.open_story_part(
        await room_key(session, info.room_id, info.epoch, roomkeys.unframe(info.meta)[0]),
        _header(session, info),
        meta,
        part,
        b"".join(chunks),
    )
    return view, plain
