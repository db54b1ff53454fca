"""Chat and stories' requests (:class:`~spaces.chat.Chat` does the work)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from aiohttp import web

from protocol.chat_wire import (
    FetchMessages,
    FetchStoryPart,
    ListStories,
    PostStory,
    SendMessage,
    UploadStoryChunk,
)
from spaces.chat import Chat
from spaces.events import MESSAGES
from spaces.services import (
    CHAT_STORE,
    CONFIG,
    COUNTERS,
    EVENTS,
    MEMBERSHIP,
    STORY_STAGING,
    Caller,
    add_routes,
)

CHAT = web.AppKey("chat", Chat)


async def _send(caller: Caller, message: SendMessage) -> msgspec.Struct:
    return await caller.app[CHAT].send(caller.space_id, caller.member, message)


async def _fetch(caller: Caller, message: FetchMessages) -> msgspec.Struct:
    return await caller.app[CHAT].fetch(caller.space_id, caller.subscriber, message)


async def _upload(caller: Caller, message: UploadStoryChunk) -> msgspec.Struct:
    return await caller.app[CHAT].upload_chunk(caller.space_id, caller.member, message)


async def _post_story(caller: Caller, message: PostStory) -> msgspec.Struct:
    return await caller.app[CHAT].post_story(caller.space_id, caller.member, message)


async def _list_stories(caller: Caller, message: ListStories) -> msgspec.Struct:
    return await caller.app[CHAT].list_stories(caller.space_id, caller.member, message)


async def _story_part(caller: Caller, message: FetchStoryPart) -> msgspec.Struct:
    return await caller.app[CHAT].story_part(caller.space_id, caller.member, message)


CHAT_ROUTES: Final[dict[type, Any]] = {
    SendMessage: _send,
    FetchMessages: _fetch,
    UploadStoryChunk: _upload,
    PostStory: _post_story,
    ListStories: _list_stories,
    FetchStoryPart: _story_part,
}


def install_chat(app: web.Application) -> Chat:
    """Add chat and stories to a spaces app over its chat store (call after the stores'
    cleanup context, so the store is open before chat starts and closed after it stops)."""
    chat = Chat(
        app[CHAT_STORE],
        app[MEMBERSHIP],
        app[CONFIG],
        staging=app[STORY_STAGING],
        counters=app[COUNTERS],
    )
    app[CHAT] = chat
    add_routes(app, CHAT_ROUTES)
    app[EVENTS].subscribe(MESSAGES, chat.remote_messages)
    app[EVENTS].on_resync(chat.resync)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await chat.start()
        yield
        await chat.stop()

    app.cleanup_ctx.append(lifecycle)
    return chat
