"""Fork detection: is a roster head another member signed consistent with ours? (sans-I/O)

The server orders and stores the record chain but is not trusted for it. It cannot forge
records, yet it could show two members two different histories: keep showing Bob an old
chain (hiding that Carol was removed), or a branch on which other records follow. Each member
detects that on its own because everything a member signs for others — chat messages,
stories, call actions — names the roster head its author had verified, as a *head reference*
``(seq, hash)``: the sequence number of the author's latest verified record and that
record's hash (``protocol.records.record_hash``, BLAKE2b-256 of the encoded record).

A reader holding a verified chain up to ``my_head`` accepts a reference only when the two
views are prefix-consistent:

- ``seq <= my_head``: the reference's hash must equal the hash of *my* record ``seq``;
- ``seq > my_head``: the reader first fetches and verifies the chain again; if the server
  still cannot show a chain reaching ``seq`` (with that hash), the reference is refused.

A refusal is reported with :data:`FORK_WARNING` in its text: the server may be showing this
member (or the author) a forked history. Refusals never abort a command; readers skip what
was refused and say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

HEAD_HASH_LEN: Final = 32
FORK_WARNING: Final = "the server may be showing you a forked history"

HashAt = Callable[[int], bytes | None]  # the hash of my verified record at a seq (None: beyond)


def head_problem(hash_at: HashAt, my_head: int, seq: int, head_hash: bytes) -> str | None:
    """Why the head reference ``(seq, head_hash)`` is not consistent with my verified chain
    (whose head is ``my_head`` and whose record hashes ``hash_at`` returns), or None.

    Call it after syncing when ``seq > my_head``: a reference beyond my head is refused here,
    since only the server's failure to show that record can leave it beyond."""
    if seq < 0 or len(head_hash) != HEAD_HASH_LEN:
        return "it names no roster head"
    if seq > my_head:
        return (
            f"its author had verified roster record #{seq}, but the server shows you the "
            f"chain only up to #{my_head}: {FORK_WARNING}"
        )
    if hash_at(seq) != head_hash:
        return f"its author's roster record #{seq} differs from yours: {FORK_WARNING}"
    return None


def epoch_problem(my_epoch: int, claimed_epoch: int) -> str | None:
    """Why a message at ``claimed_epoch`` (a clear field the server stores) cannot belong to
    my verified chain, whose current space-key epoch is ``my_epoch`` — after a sync. An honest
    server accepts posts only at its chain's current epoch, so a post beyond mine means the
    server shows me fewer key changes than it showed the author."""
    if claimed_epoch > my_epoch:
        return (
            f"it is encrypted for key epoch {claimed_epoch}, but the server shows you a chain "
            f"that only reaches epoch {my_epoch}: {FORK_WARNING}"
        )
    return None
