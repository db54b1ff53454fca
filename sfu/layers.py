"""Which simulcast layer each of a subscriber's video slots gets: a pure allocation.

Inputs per slot: the publisher's layers (lowest first) with the bitrate each is arriving at
(0: not arriving — a browser turns its upper layers off when its own uplink is short) and
the picture height of each (read from its last keyframe; 0: not seen yet), the height the
subscriber shows the slot at (``None``: unknown, as big as there is; 0: hidden), and a rank
(screen shares first, then the active speaker, then by who spoke last).

Rules, in this order:

1. A hidden slot gets nothing. Every other slot gets its lowest arriving layer, whatever the
   budget: a low picture beats a frozen one, and audio is never touched here.
2. In rank order, a slot is raised one layer at a time while the next layer fits in what is
   left of the budget and is not taller than needed: the smallest layer at least as tall as
   the tile (with heights unknown, the tile does not limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Layer", "SlotNeed", "allocate"]


@dataclass(frozen=True, slots=True)
class Layer:
    bps: float  # arriving bitrate (0: not arriving)
    height: int = 0  # from its last keyframe (0: unknown)


@dataclass(frozen=True, slots=True)
class SlotNeed:
    layers: Sequence[Layer]  # the publisher's layers, lowest first
    view_height: int | None = None  # None: unknown; 0: hidden
    rank: int = 0  # lower is served first


def allocate(budget: float, slots: Sequence[SlotNeed]) -> list[int | None]:
    """The layer index for each slot (``None``: nothing), within ``budget`` bit/s where the
    lowest layers allow."""
    choice: list[int | None] = [None] * len(slots)
    caps: list[int] = [-1] * len(slots)
    spent = 0.0
    for i, slot in enumerate(slots):
        arriving = [k for k, layer in enumerate(slot.layers) if layer.bps > 0]
        if slot.view_height == 0 or not arriving:
            continue
        choice[i] = arriving[0]
        spent += slot.layers[arriving[0]].bps
        caps[i] = _tallest_needed(slot, arriving)
    for i in sorted(range(len(slots)), key=lambda i: slots[i].rank):
        current = choice[i]
        if current is None:
            continue
        layers = slots[i].layers
        for k in range(current + 1, caps[i] + 1):
            if layers[k].bps <= 0:
                continue
            extra = layers[k].bps - layers[current].bps
            if spent + extra > budget:
                break
            spent += extra
            current = k
        choice[i] = current
    return choice


def _tallest_needed(slot: SlotNeed, arriving: list[int]) -> int:
    """The highest layer worth sending: the first arriving one at least as tall as the tile."""
    want = slot.view_height
    if want is None:
        return arriving[-1]
    for k in arriving:
        height = slot.layers[k].height
        if height == 0:
            return arriving[-1]  # heights not known yet: the tile cannot limit
        if height >= want:
            return k
    return arriving[-1]
