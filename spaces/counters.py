"""What ``/metrics`` reports, counted where it happens: plain integers bumped on the hot path
(an attribute add, nothing more) and read only when ``/metrics`` is scraped
(:mod:`spaces.metrics`). Aggregates only: nothing here is keyed by a space, room, member or
address; rate-limit refusals are keyed by the kind of request refused."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds (seconds) of the commit-latency histogram's buckets.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Buckets:
    """A histogram's counts: ``counts[i]`` observations <= ``bounds[i]`` (and above the last
    bound in the final slot), not cumulative; ``total`` their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass
class Counters:
    connections_opened: int = 0  # WebSockets accepted
    connections_open: int = 0
    messages: int = 0  # chat messages committed (a retried duplicate is not counted again)
    deliveries: int = 0  # frames queued to sessions (events, chat batches)
    rate_limited: dict[str, int] = field(default_factory=dict)  # kind of request -> refusals
    commit_seconds: Buckets = field(default_factory=lambda: Buckets(COMMIT_BUCKETS))

    def refused(self, kind: str) -> None:
        self.rate_limited[kind] = self.rate_limited.get(kind, 0) + 1
