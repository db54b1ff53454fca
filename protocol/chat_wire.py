"""Wire messages of chat rooms, channels and stories (DESIGN §3, §5).

They join the protocol's unions in :mod:`protocol.wire`, which lists every message. The server
sees only what it needs to order, route and expire: room ids, sender keys, epochs, client
message ids, lifetimes, timestamps and sizes. Text, captions and images travel as
ciphertext (``box``, ``meta``, ``thumb``, image chunks) that only room members can open.

Messages::

    SendMessage       -> MessageSent        post one encrypted message (idempotent by client_id)
    FetchMessages     -> Messages           messages after a sequence; follow=True also
                                            subscribes the session to MessagesAdded events
    UploadStoryChunk  -> StoryChunkStored   stage a story's encrypted image, chunk by chunk
    PostStory         -> StoryPosted        commit a staged story (idempotent by story_id)
    ListStories       -> Stories            live stories of a channel, newest first
    FetchStoryPart    -> StoryPart          a chunk of a story's encrypted image or thumbnail
    (event)              MessagesAdded      messages were committed in a followed room
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

CLIENT_ID_LEN: Final = 16
STORY_CHUNK_BYTES: Final = 128 * 1024  # below the default 256 KiB frame limit
StoryPartName = Literal["image", "thumb"]


class ChatMessage(msgspec.Struct, frozen=True):
    """A committed message as stored and relayed: ciphertext plus routing metadata."""

    seq: int  # per room, gap-free at assignment (expired messages leave holes)
    sender: bytes  # the member key of the session that sent it
    client_id: bytes
    epoch: int
    ttl: int  # as the sender asked (0 = the room's default); bound into the ciphertext
    sent_at: float  # server clock, when committed
    expires_at: float | None  # server clock; None = kept
    box: bytes


class StoryInfo(msgspec.Struct, frozen=True):
    story_id: str
    room_id: str
    sender: bytes
    epoch: int
    ttl: int
    posted_at: float
    expires_at: float
    meta: bytes  # ciphertext: caption, sizes, hashes and the author's signature
    image_size: int
    thumb_size: int


# -- client to server ------------------------------------------------------------------------


class SendMessage(msgspec.Struct, tag="send_message", frozen=True):
    id: int
    room_id: str
    client_id: bytes  # random, 16 bytes: a retry with the same id returns the first result
    epoch: int  # the space epoch whose room key encrypted ``box``
    ttl: int  # seconds; 0 = the room's default lifetime (which may be "keep")
    box: bytes


class FetchMessages(msgspec.Struct, tag="fetch_messages", frozen=True):
    id: int
    room_id: str
    after: int = 0  # messages with seq > after
    limit: int = 500
    follow: bool = False  # also push MessagesAdded for this room to this session from now on


class UploadStoryChunk(msgspec.Struct, tag="upload_story_chunk", frozen=True):
    id: int
    story_id: str
    offset: int  # must equal the bytes staged so far for this story
    data: bytes


class PostStory(msgspec.Struct, tag="post_story", frozen=True):
    id: int
    room_id: str
    story_id: str  # chosen by the client (random); a retry returns the first result
    epoch: int
    ttl: int  # seconds (> 0)
    meta: bytes
    thumb: bytes
    image_size: int  # the staged image must be exactly this long


class ListStories(msgspec.Struct, tag="list_stories", frozen=True):
    id: int
    room_id: str


class FetchStoryPart(msgspec.Struct, tag="fetch_story_part", frozen=True):
    id: int
    story_id: str
    part: StoryPartName = "image"
    offset: int = 0


# -- server to client ------------------------------------------------------------------------


class MessageSent(msgspec.Struct, tag="message_sent", frozen=True):
    id: int
    room_id: str
    seq: int
    sent_at: float
    expires_at: float | None
    duplicate: bool = False  # True when client_id had been committed before


class Messages(msgspec.Struct, tag="messages", frozen=True):
    id: int
    room_id: str
    messages: list[ChatMessage]
    last_seq: int  # the room's latest assigned seq (more to fetch if beyond the last given)


class StoryChunkStored(msgspec.Struct, tag="story_chunk_stored", frozen=True):
    id: int
    story_id: str
    size: int  # bytes staged so far


class StoryPosted(msgspec.Struct, tag="story_posted", frozen=True):
    id: int
    story_id: str
    posted_at: float
    expires_at: float
    duplicate: bool = False


class Stories(msgspec.Struct, tag="stories", frozen=True):
    id: int
    room_id: str
    stories: list[StoryInfo]


class StoryPart(msgspec.Struct, tag="story_part", frozen=True):
    id: int
    story: StoryInfo
    part: StoryPartName
    offset: int
    total: int
    data: bytes


class MessagesAdded(msgspec.Struct, tag="messages_added", frozen=True):
    """Event: messages were committed in a room this session follows — those of one group
    commit, in sequence order (one frame for many messages when the server is busy)."""

    room_id: str
    messages: list[ChatMessage]


CHAT_CLIENT_MESSAGES: Final = (
    SendMessage,
    FetchMessages,
    UploadStoryChunk,
    PostStory,
    ListStories,
    FetchStoryPart,
)
