"""The one percentile definition Salon reports with (the SFU node's stats, every bench).

**Linear interpolation between closest ranks** (Hyndman & Fan type 7; numpy's default,
``statistics.quantiles(method="inclusive")``, a spreadsheet's PERCENTILE.INC): the value at rank
``(n - 1) * q`` of the sorted sample, interpolated between its two neighbours, so p50 is the
median and p0/p100 the minimum/maximum. (Taking the element at index ``int(q * n)`` instead is
biased up: p50 of an even sample is the upper middle, p99 of 100 values the maximum.)

Here, not in ``bench/``, so that the SFU (which may import only ``protocol`` and ``rtc``) and
the benches (``bench/_harness.py`` re-exports it) compute the same figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0 ≤ q ≤ 1) of ``values`` by linear interpolation (type 7, see the
    module's docstring); NaN for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], not {q}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


__all__ = ["percentile"]
