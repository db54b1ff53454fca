"""Story uploads staged in the instance's memory (a
:class:`~spaces.storage.interfaces.StoryStaging`), within the budgets of ``[limits]``.

``now`` is a monotonic clock's reading, given by the caller (tests pass their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from protocol.errors import Conflict, RateLimited, TooLarge
from spaces.config import LimitsSection

STAGED_IDLE_SECONDS: Final = 600.0
STAGED_BUSY_IDLE_SECONDS: Final = 60.0  # when the budget is tight, idle uploads go sooner
# ... and so do uploads started this long ago, however often they are touched: an upload
# kept alive with empty chunks must not hold a budget (another space's stories) forever.
# A 4 MB image in 5 minutes needs 14 kB/s.
STAGED_BUSY_MAX_SECONDS: Final = 300.0
STAGED_MAX_SECONDS: Final = 3600.0


@dataclass
class Staged:
    story_id: str
    data: bytearray = field(default_factory=bytearray)
    touched: float = 0.0
    started: float = 0.0


class MemoryStoryStaging:
    def __init__(self, limits: LimitsSection) -> None:
        self.limits = limits
        self.staged: dict[tuple[str, bytes], Staged] = {}

    async def add_chunk(
        self, space_id: str, member: bytes, story_id: str, offset: int, data: bytes, now: float
    ) -> int:
        key = (space_id, member)
        staged = self.staged.get(key)
        if offset == 0:
            self.staged.pop(key, None)  # a member has one upload in progress: this one
            staged = Staged(story_id, touched=now, started=now)
        elif staged is None or staged.story_id != story_id or len(staged.data) != offset:
            raise Conflict("story upload out of order; start again from offset 0")
        else:
            del self.staged[key]  # put back below once the chunk fits every budget
        if len(staged.data) + len(data) > self.limits.max_story_bytes:
            raise TooLarge(
                f"story image too large: this server accepts at most "
                f"{self.limits.max_story_bytes} bytes"
            )
        self._make_room_for(space_id, len(staged.data) + len(data), now)
        staged.data += data
        staged.touched = now
        self.staged[key] = staged
        return len(staged.data)

    async def upload(self, space_id: str, member: bytes, story_id: str) -> bytes | None:
        staged = self.staged.get((space_id, member))
        if staged is None or staged.story_id != story_id:
            return None
        return bytes(staged.data)

    async def discard(self, space_id: str, member: bytes, story_id: str, size: int) -> None:
        key = (space_id, member)
        staged = self.staged.get(key)
        if staged is not None and staged.story_id == story_id and len(staged.data) == size:
            del self.staged[key]

    async def drop_idle(self, now: float) -> None:
        self._drop_idle_uploads(now)

    def _make_room_for(self, space_id: str, size: int, now: float) -> None:
        """Refuse (RateLimited) an upload of ``size`` bytes in all that does not fit the
        staging budgets of its space and of the server, with every other upload staged.
        Stories are staged in memory, so these bound what uploads can make the server hold;
        one space's uploads cannot take the whole server's budget."""
        if self._fits(space_id, size):  # a reason it does not fit: make room first
            self._drop_idle_uploads(
                now, idle=STAGED_BUSY_IDLE_SECONDS, oldest=STAGED_BUSY_MAX_SECONDS
            )
        problem = self._fits(space_id, size)
        if problem:
            raise RateLimited(f"{problem}; try again in a minute")

    def _fits(self, space_id: str, size: int) -> str:
        """Why one more upload holding ``size`` bytes does not fit ("" if it does)."""
        limits = self.limits
        in_space = [s for (sid, _), s in self.staged.items() if sid == space_id]
        if len(in_space) + 1 > limits.max_staged_stories_per_space:
            return "too many story uploads in progress in this space"
        if sum(len(s.data) for s in in_space) + size > limits.max_staged_story_bytes_per_space:
            return "too many story bytes being uploaded in this space"
        if len(self.staged) + 1 > limits.max_staged_stories:
            return "the server is receiving many stories"
        if sum(len(s.data) for s in self.staged.values()) + size > limits.max_staged_story_bytes:
            return "the server is receiving many stories"
        return ""

    def _drop_idle_uploads(
        self, now: float, idle: float = STAGED_IDLE_SECONDS, oldest: float = STAGED_MAX_SECONDS
    ) -> None:
        for key, staged in list(self.staged.items()):
            if now - staged.touched > idle or now - staged.started > oldest:
                del self.staged[key]
