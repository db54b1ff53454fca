"""SFrame key ids of call media (RFC 9605 §4.3 KID), shared by clients and the SFU.

A participant's media key in a call is named by its per-call sender index (the seat index
the server gives it in the call state; the SFU knows it as the participant's index) and
the key's epoch::

    KID = index << EPOCH_BITS | epoch        (0 <= epoch <= MAX_EPOCH, never wrapped)

Two rules make a key id name exactly one key of exactly one sender:

* **bound to the publisher**: the SFU drops frames whose KID's index is not the index of
  the participant publishing the up-track, and receivers only try the keys of the
  publisher the SFU says a slot carries (``client.call.sfu_topology.MediaKeyRing``);
* **never aliased**: the epoch is not reduced modulo 2**16 — a key id is never reused for
  another key. A sender whose next epoch would pass :data:`MAX_EPOCH` leaves the call
  instead (``client.call.keys.CallKeys.exhausted``); rejoining gives a new index.
"""

from __future__ import annotations

from typing import Final

EPOCH_BITS: Final = 16
MAX_EPOCH: Final = (1 << EPOCH_BITS) - 1
_EPOCH_MASK: Final = MAX_EPOCH


class KeyIdExhausted(ValueError):
    """An epoch past :data:`MAX_EPOCH` (or a negative one) has no key id of its own."""


def media_kid(index: int, epoch: int) -> int:
    """SFrame key id of sender ``index``'s key at ``epoch``; never wraps."""
    if not 0 <= epoch <= MAX_EPOCH:
        raise KeyIdExhausted(f"epoch {epoch} does not fit a media key id")
    if index < 0:
        raise ValueError("a sender index is never negative")
    return (index << EPOCH_BITS) | epoch


def kid_index(kid: int) -> int:
    """The sender index a key id names."""
    return kid >> EPOCH_BITS


def kid_epoch(kid: int) -> int:
    """The epoch a key id names."""
    return kid & _EPOCH_MASK
