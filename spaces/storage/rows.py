"""Stored rows → wire structs, the same for both engines (each selects its columns in this
order: see ``_MESSAGE_COLUMNS`` / ``_STORY_COLUMNS`` in the engines' chat stores)."""

from __future__ import annotations

from typing import Any

from protocol.chat_wire import ChatMessage, StoryInfo


def message_from_row(row: Any) -> ChatMessage:
    """(seq, sender, client_id, epoch, ttl, sent_at, expires_at, box)."""
    return ChatMessage(
        seq=int(row[0]),
        sender=bytes(row[1]),
        client_id=bytes(row[2]),
        epoch=int(row[3]),
        ttl=int(row[4]),
        sent_at=float(row[5]),
        expires_at=None if row[6] is None else float(row[6]),
        box=bytes(row[7]),
    )


def story_from_row(row: Any) -> StoryInfo:
    """(story_id, room_id, sender, epoch, ttl, posted_at, expires_at, meta, image size,
    thumb size)."""
    return StoryInfo(
        story_id=str(row[0]),
        room_id=str(row[1]),
        sender=bytes(row[2]),
        epoch=int(row[3]),
        ttl=int(row[4]),
        posted_at=float(row[5]),
        expires_at=float(row[6]),
        meta=bytes(row[7]),
        image_size=int(row[8]),
        thumb_size=int(row[9]),
    )
