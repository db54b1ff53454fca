"""The storage seam: what the server needs from a database, as a Protocol.

The embedded implementation is :mod:`spaces.sqlite_store`. A PostgreSQL implementation for
several server nodes must provide the same methods with the same transactional meaning:
every method that writes commits before it returns (acknowledged means durable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from protocol.wire import Envelope, InviteSeal


class StoredRecord(NamedTuple):
    seq: int
    hash: bytes
    data: bytes


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def space_exists(self, space_id: str) -> bool: ...

    async def load_records(self, space_id: str, after: int = -1, limit: int = -1) -> list[bytes]:
        """Encoded records with seq > after, in order; at most ``limit`` (-1: all)."""
        ...

    async def append(
        self,
        space_id: str,
        records: Sequence[StoredRecord],
        *,
        envelopes: Sequence[Envelope] = (),
        seals: Sequence[InviteSeal] = (),
        create: bool = False,
    ) -> None:
        """Atomically add records (creating the space first if ``create``), envelopes (an
        existing envelope for the same scope, epoch and recipient is kept) and invite seals
        (insert or replace). Raises protocol.errors.Conflict if a seq is taken."""
        ...

    async def invite_seal(self, invite_id: str) -> tuple[str, InviteSeal] | None:
        """(space id, seal) of an invite, or None."""
        ...

    async def invite_epochs(self, space_id: str) -> dict[str, int]:
        """invite id -> epoch of its stored seal, for the invites that still have one."""
        ...

    async def put_seals(self, space_id: str, seals: Sequence[InviteSeal]) -> None: ...

    async def wipe_invite_seals(self, invite_ids: Sequence[str]) -> None:
        """Erase the seals of invites that can no longer be used (expired, used up,
        revoked) so the sealed space key is gone for good; the invite id stays known so a
        late joiner hears why the link no longer works."""
        ...

    async def envelope_holders(self, space_id: str, scope: str, epoch: int) -> set[bytes]:
        """Recipients that have an envelope for (scope, epoch)."""
        ...

    async def envelopes(
        self, space_id: str, scope: str, recipient: bytes, min_epoch: int = 0
    ) -> list[Envelope]: ...

    async def drop_envelope(self, space_id: str, scope: str, epoch: int, recipient: bytes) -> None:
        """Delete the envelope of (scope, epoch) sealed to ``recipient``, if any."""
        ...
