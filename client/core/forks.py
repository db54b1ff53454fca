"""Checking what other members signed against this device's verified chain (fork detection).

The rule is :mod:`protocol.forks`; this module adds the one piece of I/O it needs: a reference
ahead of our head is a reason to fetch and verify the chain again first (someone appended a
record since we synced), but only once per new reference — a server that keeps showing us
an old chain then gets a warning, not an endless stream of re-syncs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from client.core.space import SpaceSession
from protocol import forks


class HeadCheck:
    """Checks head references and message epochs for one reader of one session.

    ``refresh`` re-syncs the session (and whatever the reader derived from its chain)."""

    def __init__(self, session: SpaceSession, refresh: Callable[[], Awaitable[object]]) -> None:
        self.session = session
        self.refresh = refresh
        self._tried_head = -1
        self._tried_epoch = -1

    async def head_problem(self, seq: int, head_hash: bytes) -> str | None:
        """Why the signed head reference (seq, hash) is not on our chain, or None."""
        if seq > self.session.verified.head_seq and seq > self._tried_head:
            self._tried_head = seq
            await self.refresh()
        await self.session.load_hash(seq)  # an older head than the roster keeps a hash of
        roster = self.session.verified
        return forks.head_problem(self.session.hash_at, roster.head_seq, seq, head_hash)

    async def epoch_problem(self, epoch: int) -> str | None:
        """Why a post at space-key ``epoch`` cannot come from the chain we see, or None."""
        if epoch > self.session.verified.epoch and epoch > self._tried_epoch:
            self._tried_epoch = epoch
            await self.refresh()
        return forks.epoch_problem(self.session.verified.epoch, epoch)
